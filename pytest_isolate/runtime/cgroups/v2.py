"""cgroup v2: one unified hierarchy (Documentation/admin-guide/cgroup-v2.rst).

The rules this manager follows:

- A controller's files appear in a cgroup only when the *parent* lists the
  controller in ``cgroup.subtree_control``, and a cgroup may list there only what its
  own ``cgroup.controllers`` shows -- so controllers are enabled top-down, from the
  nearest ancestor that has them, down to the container's parent, before the
  container's cgroup is made.
- "No internal processes": a non-root cgroup that holds processes cannot enable
  controllers for its children (``EBUSY``). The supervisor (the pytest process) and
  whatever shares its cgroup therefore move into a leaf, ``<own cgroup>/supervisor``,
  before the own cgroup's ``subtree_control`` is written -- the same thing systemd's
  ``init.scope`` and container runtimes' "init" leaves do. The leaf stays: moving the
  supervisor back would be refused while the subtree has controllers enabled.
  The true root (no ``cgroup.type`` file) is exempt from the rule and never emptied.
- Freezing is ``cgroup.freeze`` and completes when ``cgroup.events`` reads
  ``frozen 1``; ``cgroup.kill`` (Linux 5.14+) kills a whole subtree at once, older
  kernels get freeze -> SIGKILL every member -> thaw.
- ``memory.peak`` (5.19+) and ``pids.peak`` (6.x) may be missing: reported as None.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ..config import Resources
from .base import (
    CPU_PERIOD_US,
    DEFAULT_PARENT,
    DEFAULT_TIMEOUT,
    CgroupStats,
    Manager,
    make_chain,
    make_container_dir,
    permission_hint,
    pids_below,
    release_chain,
    remove_cgroup,
    sigkill,
    wait_until,
)
from .detect import SUPERVISOR_LEAF, Hierarchy
from .errors import CgroupError
from .fs import (
    DirOps,
    PidsFiles,
    read_int,
    read_keyed,
    read_limit,
    read_opt,
    read_pids,
    show,
    write,
    write_pid,
    write_setting,
)

__all__ = ["CONTROLLERS", "SETTING_OF", "V2Manager", "parse_cpu_max"]

# Which resource setting needs which controller (for error messages).
SETTING_OF: Mapping[str, str] = {"memory": "memory", "pids": "pids", "cpu": "cpu",
                                 "cpuset": "cpuset"}


def parse_cpu_max(text: str | None) -> tuple[int | None, int | None]:
    """``"50000 100000"`` -> (50000, 100000); ``"max 100000"`` -> (None, 100000)."""
    parts = (text or "").split()
    if not parts:
        return None, None
    quota = None if parts[0] == "max" else int(parts[0])
    period = int(parts[1]) if len(parts) > 1 else None
    return quota, period


class Controller:
    name: ClassVar[str]

    def apply(self, d: str, r: Resources) -> None:
        """Write the limits of ``r`` this controller enforces."""

    def stats(self, d: str, out: dict[str, Any]) -> None:
        """Add what this controller reports to ``out`` (CgroupStats field names)."""


class Memory(Controller):
    name = "memory"

    def apply(self, d: str, r: Resources) -> None:
        if r.memory is not None:
            write_setting(d, "memory.max", str(int(r.memory)), "memory", r.memory)
        if r.memory_swap is not None:
            swap = int(r.memory_swap)
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                write_setting(d, "memory.swap.max", str(swap), "memory_swap", swap)
            elif swap > 0:
                # No swap accounting (CONFIG_MEMCG_SWAP off / swapaccount=0): "0" and
                # "max" can be ignored like runc does, a real amount cannot.
                raise CgroupError(f"{show('memory_swap', swap)} needs swap accounting, which this "
                                  "kernel has off (no memory.swap.max)",
                                  setting="memory_swap", value=swap,
                                  path=os.path.join(d, "memory.swap.max"))

    def stats(self, d: str, out: dict[str, Any]) -> None:
        out["memory_current"] = read_int(os.path.join(d, "memory.current"))
        out["memory_peak"] = read_int(os.path.join(d, "memory.peak"))
        out["memory_limit"] = read_limit(os.path.join(d, "memory.max"))
        events = read_keyed(os.path.join(d, "memory.events"))
        out["oom_kills"] = None if events is None else events.get("oom_kill", 0)


class Pids(PidsFiles, Controller):
    name: ClassVar[str] = "pids"


class Cpu(Controller):
    name = "cpu"

    def apply(self, d: str, r: Resources) -> None:
        if r.cpu is not None:
            quota = round(float(r.cpu) * CPU_PERIOD_US)
            write_setting(d, "cpu.max", f"{quota} {CPU_PERIOD_US}", "cpu", r.cpu)
        if r.cpu_weight is not None:
            write_setting(d, "cpu.weight", str(r.cpu_weight), "cpu_weight", r.cpu_weight)

    def stats(self, d: str, out: dict[str, Any]) -> None:
        text = read_opt(os.path.join(d, "cpu.max"))
        if text is not None:
            out["cpu_quota"], out["cpu_period"] = parse_cpu_max(text)


class Cpuset(Controller):
    """An empty v2 ``cpuset.cpus``/``cpuset.mems`` means "the parent's": only the
    requested CPUs are written."""

    name = "cpuset"

    def apply(self, d: str, r: Resources) -> None:
        if r.cpuset is not None:
            allowed = (read_opt(os.path.join(os.path.dirname(d), "cpuset.cpus.effective"))
                       or "").strip()
            write_setting(d, "cpuset.cpus", r.cpuset, "cpuset", r.cpuset,
                          context=f"allowed here: {allowed or 'see cpuset.cpus.effective'}")


CONTROLLERS: Mapping[str, Controller] = {c.name: c for c in (Memory(), Pids(), Cpu(), Cpuset())}


def _core_stats(d: str, out: dict[str, Any]) -> None:
    # cpu.stat's usage lines are there in every non-root cgroup, cpu controller or not.
    stat = read_keyed(os.path.join(d, "cpu.stat"))
    if stat is None:
        return
    for key, field in (("usage_usec", "cpu_usage"), ("user_usec", "cpu_user"),
                       ("system_usec", "cpu_system")):
        if key in stat:
            out[field] = stat[key] / 1e6


def _enabled(d: str) -> set[str]:
    """Controllers in ``cgroup.subtree_control`` (a fake tree may keep the ``+``)."""
    return {w.lstrip("+") for w in (read_opt(os.path.join(d, "cgroup.subtree_control"))
                                    or "").split()}


def _available(d: str) -> set[str]:
    return set((read_opt(os.path.join(d, "cgroup.controllers")) or "").split())


class V2Manager(Manager):
    """The container's cgroup in the unified hierarchy, with ``controllers`` (a
    subset of memory, pids, cpu, cpuset) enabled for it."""

    version = 2

    def __init__(self, container_id: str, resources: Resources, parent: str = DEFAULT_PARENT,
                 hierarchy: Hierarchy | None = None, controllers: Iterable[str] = (), *,
                 ops: DirOps | None = None) -> None:
        super().__init__(container_id, resources, parent, ops=ops)
        if hierarchy is None or hierarchy.version != 2:
            raise CgroupError("a cgroup v2 manager needs the unified hierarchy; this host "
                              "has none")
        self.hierarchy = hierarchy
        wanted = set(controllers)
        self.controllers = tuple(c for c in CONTROLLERS if c in wanted)
        self._anchor = hierarchy.mountpoint if self.absolute else hierarchy.anchor_dir
        self._chain = [os.path.join(self._anchor, *self.parent_parts[:i + 1])
                       for i in range(len(self.parent_parts))]
        self._dir = os.path.join(self._anchor, *self.parent_parts, self.container_id)
        #: pids this manager moved into the supervisor leaf (see the module docstring)
        self.moved: list[int] = []

    @classmethod
    def attach(cls, path: str, *, ops: DirOps | None = None) -> V2Manager:
        """A manager for an existing container cgroup ``path`` (another process made
        it), good for stats, freeze, kill and destroy. No parent is removed."""
        h = Hierarchy(2, os.path.dirname(path), "/", "/")
        m = cls(os.path.basename(path), Resources(), "", h, ops=ops)
        m._claimed = True
        return m

    @property
    def path(self) -> str:
        return self._dir

    # -- enabling controllers -------------------------------------------------

    def _make_available(self, anchor: str) -> None:
        """Enable, in the ancestors above ``anchor``, what ``anchor`` lacks."""
        missing = [c for c in self.controllers if c not in _available(anchor)]
        if not missing:
            return
        chain: list[str] = []
        d = anchor
        while True:
            if d == self.hierarchy.mountpoint or not d.startswith(self.hierarchy.mountpoint):
                c = missing[0]
                raise CgroupError(
                    f"{SETTING_OF[c]} needs the {c} cgroup controller, which no cgroup "
                    f"above {anchor} offers (cgroup.controllers): the host does not have it "
                    "or does not delegate it to this user", setting=SETTING_OF[c],
                    path=anchor)
            d = os.path.dirname(d)
            chain.append(d)
            if all(c in _available(d) for c in missing):
                break
        for up in reversed(chain):
            self._enable(up, missing, evacuate=False)

    def _enable(self, d: str, controllers: Iterable[str], *, evacuate: bool) -> None:
        """Add ``controllers`` to ``d``'s subtree_control; ``evacuate`` first moves the
        processes of ``d`` (ours) into the supervisor leaf."""
        todo = [c for c in controllers if c not in _enabled(d)]
        if not todo:
            return
        path = os.path.join(d, "cgroup.subtree_control")
        line = " ".join("+" + c for c in todo)
        for attempt in range(20):
            if evacuate:
                self._evacuate(d)
            try:
                write(path, line)
                return
            except OSError as e:
                if e.errno == errno.EBUSY and evacuate and attempt < 19:
                    time.sleep(0.001 * (attempt + 1))  # a process forked meanwhile
                    continue
                raise self._enable_error(d, todo, e) from None

    def _enable_error(self, d: str, todo: list[str], e: OSError) -> CgroupError:
        path = os.path.join(d, "cgroup.subtree_control")
        if e.errno == errno.EBUSY:
            return CgroupError(
                f"cannot enable {' '.join(todo)} for the children of {d}: it holds processes, "
                "and cgroup v2 lets only leaf cgroups hold processes when controllers are "
                "enabled below them. Move those processes into a leaf cgroup, or run "
                "pytest in a cgroup of its own (systemd-run --user --scope -p Delegate=yes "
                "pytest ...)", setting=SETTING_OF[todo[0]], path=path, errno=e.errno)
        # One at a time to name the controller the kernel refuses.
        for c in todo:
            try:
                write(path, "+" + c)
            except OSError as e1:
                return CgroupError(
                    f"{SETTING_OF[c]} needs the {c} cgroup controller, which cannot be "
                    f"enabled in {d} ({os.strerror(e1.errno or 0)})" + permission_hint(e1),
                    setting=SETTING_OF[c], path=path, errno=e1.errno)
        return CgroupError(f"cannot write {path}: {os.strerror(e.errno or 0)}",
                           path=path, errno=e.errno)

    def _evacuate(self, d: str) -> None:
        if not os.path.exists(os.path.join(d, "cgroup.type")):
            return  # the true root may keep its processes
        pids = read_pids(os.path.join(d, "cgroup.procs"))
        if not pids:
            return
        leaf = os.path.join(d, SUPERVISOR_LEAF)
        try:
            self.ops.mkdir(leaf)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"cannot create the supervisor leaf cgroup {leaf}: "
                              f"{os.strerror(e.errno or 0)}" + permission_hint(e),
                              path=leaf, errno=e.errno) from None
        procs = os.path.join(leaf, "cgroup.procs")
        for pid in pids:
            try:
                write_pid(procs, pid)
            except OSError as e:
                if e.errno == errno.ESRCH:
                    continue
                raise CgroupError(f"cannot move process {pid} from {d} into the supervisor "
                                  f"leaf {leaf}: {os.strerror(e.errno or 0)}",
                                  path=procs, errno=e.errno) from None
            self.moved.append(pid)

    # -- the interface -------------------------------------------------------

    def create(self) -> None:
        self._destroyed = False
        made = False
        try:
            if self.controllers:
                self._make_available(self._anchor)
                self._enable(self._anchor, self.controllers, evacuate=True)

            def prepare(d: str, up: str) -> None:
                if self.controllers:
                    self._enable(d, self.controllers, evacuate=False)

            make_chain(self._anchor, self.parent_parts, self.ops, prepare)
            make_container_dir(self._dir, self.ops)
            made = True
            for c in self.controllers:
                CONTROLLERS[c].apply(self._dir, self.resources)
        except BaseException:
            try:
                self._remove(DEFAULT_TIMEOUT, made)
            except CgroupError:
                pass  # the original error is the one worth reporting
            raise
        self._claimed = True

    def add(self, pid: int) -> None:
        try:
            write_pid(os.path.join(self._dir, "cgroup.procs"), pid)
        except OSError as e:
            why = ("it does not exist (it exited)" if e.errno == errno.ESRCH
                   else os.strerror(e.errno or 0))
            raise CgroupError(f"cannot move process {pid} into cgroup {self._dir}: {why}",
                              path=self._dir, errno=e.errno) from None

    def pids(self) -> list[int]:
        return sorted(pids_below(self._dir))

    def stats(self) -> CgroupStats:
        out: dict[str, Any] = {}
        _core_stats(self._dir, out)
        for unit in CONTROLLERS.values():
            unit.stats(self._dir, out)
        return CgroupStats(version=2, **out)

    def oom_kills(self) -> int:
        events = read_keyed(os.path.join(self._dir, "memory.events"))
        return 0 if events is None else events.get("oom_kill", 0)

    def _events(self) -> dict[str, int]:
        return read_keyed(os.path.join(self._dir, "cgroup.events")) or {}

    def _set_freeze(self, value: str, timeout: float) -> None:
        path = os.path.join(self._dir, "cgroup.freeze")
        verb = "freeze" if value == "1" else "thaw"
        try:
            write(path, value)
        except OSError as e:
            raise CgroupError(f"cannot {verb} container {self.container_id!r}: "
                              f"{os.strerror(e.errno or 0)}", path=path, errno=e.errno) from None

        def undo() -> None:
            if value == "1":
                try:
                    write(path, "0")
                except OSError:
                    pass

        wait_until(lambda: self._events().get("frozen") == int(value), timeout,
                   f"container {self.container_id!r} to {verb} (cgroup.events frozen "
                   f"{value})", on_timeout=undo)

    def freeze(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._set_freeze("1", timeout)

    def thaw(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._set_freeze("0", timeout)

    def _occupied(self) -> bool:
        return bool(self.pids()) or self._events().get("populated", 0) == 1

    def kill(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not self._occupied():
            return
        what = f"the processes of container {self.container_id!r} to exit"
        kill_file = os.path.join(self._dir, "cgroup.kill")
        if os.path.exists(kill_file):
            try:
                write(kill_file, "1")
            except OSError as e:
                raise CgroupError(f"cannot kill container {self.container_id!r}: "
                                  f"{os.strerror(e.errno or 0)}", path=kill_file,
                                  errno=e.errno) from None
            wait_until(lambda: not self._occupied(), timeout, what)
            return
        # Before 5.14: freeze so nothing forks or exits (pid reuse) while we list and
        # signal; v2 delivers SIGKILL to frozen tasks, the thaw is for tidiness.
        frozen = False
        try:
            self.freeze(timeout)
            frozen = True
        except CgroupError:
            pass
        sigkill(self.pids())
        if frozen:
            self.thaw(timeout)
        wait_until(lambda: not self._occupied(), timeout, what,
                   each=lambda: sigkill(self.pids()))

    def paths(self) -> dict[str, str]:
        """``{"unified": dir}`` plus every enabled controller -> the same dir."""
        return {"unified": self._dir, **{c: self._dir for c in self.controllers}}

    def _remove(self, timeout: float, container: bool = True) -> None:
        if container:
            remove_cgroup(self._dir, self.ops, timeout)
        release_chain(self._chain, self.ops)
