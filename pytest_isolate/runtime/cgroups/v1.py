"""cgroup v1: one hierarchy per controller (or per co-mounted group like ``cpu,cpuacct``).

Each controller is a small unit that knows its files: ``prepare`` a new directory,
``apply`` the limits, read its ``stats``. The manager makes
``<anchor>/<parent>/<id>`` in every hierarchy it uses and puts a process into all of
them. Freezing uses the freezer hierarchy; killing freezes first so that no member
can fork or exit (and have its pid reused) between listing and signalling.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Mapping
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
    pids_below,
    release_chain,
    remove_cgroup,
    sigkill,
    wait_until,
)
from .detect import Hierarchy
from .errors import CgroupError
from .fs import (
    DirOps,
    PidsFiles,
    read,
    read_int,
    read_keyed,
    read_limit,
    read_opt,
    show,
    write,
    write_pid,
    write_setting,
)

__all__ = ["CONTROLLERS", "V1Manager", "cpu_shares"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
# What v1 reads back for "no limit": PAGE_COUNTER_MAX pages, i.e. LONG_MAX rounded
# down to a page (9223372036854771712 with 4 KiB pages).
UNLIMITED = (2**63 - 1) // _PAGE * _PAGE
_USER_HZ = os.sysconf("SC_CLK_TCK")


def cpu_shares(weight: int) -> int:
    """cgroup v2 ``cpu.weight`` (1..10000) -> v1 ``cpu.shares`` (2..262144), as runc
    converts: shares = 2 + ((weight - 1) * 262142) / 9999."""
    return 2 + ((weight - 1) * 262142) // 9999


class Controller:
    name: ClassVar[str]

    def prepare(self, d: str, parent_dir: str) -> None:
        """Make a directory of this hierarchy usable (runs on every parent and on the
        container's own directory, new or existing)."""

    def apply(self, d: str, r: Resources) -> None:
        """Write the limits of ``r`` this controller enforces."""

    def stats(self, d: str, out: dict[str, Any]) -> None:
        """Add what this controller reports to ``out`` (CgroupStats field names)."""


class Memory(Controller):
    name = "memory"

    def apply(self, d: str, r: Resources) -> None:
        mem = None if r.memory is None else int(r.memory)
        swap = None if r.memory_swap is None else int(r.memory_swap)
        if mem is not None:
            write_setting(d, "memory.limit_in_bytes", str(mem), "memory", mem)
        if swap is not None:
            # memsw limits memory + swap together; it needs a memory limit to mean
            # anything and swap accounting (the file) to exist.
            has_memsw = os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
            if mem is not None and has_memsw:
                write_setting(d, "memory.memsw.limit_in_bytes", str(mem + swap),
                              "memory_swap", swap)
            elif swap > 0 and mem is None:
                raise CgroupError(f"{show('memory_swap', swap)} needs a memory limit on cgroup v1 "
                                  "(v1 limits memory+swap together): set memory too",
                                  setting="memory_swap", value=swap)
            elif swap > 0:
                raise CgroupError(f"{show('memory_swap', swap)} needs swap accounting, which this "
                                  "kernel has off (no memory.memsw.limit_in_bytes): boot "
                                  "with swapaccount=1 or leave memory_swap at 0",
                                  setting="memory_swap", value=swap,
                                  path=os.path.join(d, "memory.memsw.limit_in_bytes"))
            if swap == 0:
                try:  # best effort: not writable on some kernels and in the root
                    write(os.path.join(d, "memory.swappiness"), "0")
                except OSError:
                    pass

    def stats(self, d: str, out: dict[str, Any]) -> None:
        out["memory_current"] = read_int(os.path.join(d, "memory.usage_in_bytes"))
        out["memory_peak"] = read_int(os.path.join(d, "memory.max_usage_in_bytes"))
        out["memory_limit"] = read_limit(os.path.join(d, "memory.limit_in_bytes"), UNLIMITED)
        oom = read_keyed(os.path.join(d, "memory.oom_control"))
        out["oom_kills"] = None if oom is None else oom.get("oom_kill", 0)


class Pids(PidsFiles, Controller):
    name: ClassVar[str] = "pids"


class Cpu(Controller):
    name = "cpu"

    def apply(self, d: str, r: Resources) -> None:
        if r.cpu is not None:
            quota = round(float(r.cpu) * CPU_PERIOD_US)
            write_setting(d, "cpu.cfs_period_us", str(CPU_PERIOD_US), "cpu", r.cpu)
            write_setting(d, "cpu.cfs_quota_us", str(quota), "cpu", r.cpu)
        if r.cpu_weight is not None:
            write_setting(d, "cpu.shares", str(cpu_shares(r.cpu_weight)), "cpu_weight",
                          r.cpu_weight)

    def stats(self, d: str, out: dict[str, Any]) -> None:
        out["cpu_quota"] = read_limit(os.path.join(d, "cpu.cfs_quota_us"))
        out["cpu_period"] = read_int(os.path.join(d, "cpu.cfs_period_us"))


class Cpuacct(Controller):
    name = "cpuacct"

    def stats(self, d: str, out: dict[str, Any]) -> None:
        usage = read_int(os.path.join(d, "cpuacct.usage"))
        out["cpu_usage"] = None if usage is None else usage / 1e9
        user = read_int(os.path.join(d, "cpuacct.usage_user"))
        system = read_int(os.path.join(d, "cpuacct.usage_sys"))
        if user is not None and system is not None:
            out["cpu_user"], out["cpu_system"] = user / 1e9, system / 1e9
            return
        ticks = read_keyed(os.path.join(d, "cpuacct.stat"))  # USER_HZ ticks
        if ticks is not None:
            out["cpu_user"] = ticks.get("user", 0) / _USER_HZ
            out["cpu_system"] = ticks.get("system", 0) / _USER_HZ


class Cpuset(Controller):
    """A new v1 cpuset cgroup starts with *empty* CPUs and memory nodes, and a cgroup
    with empty ones cannot take a process: copy the parent's into every directory
    that has none (as runc does), then narrow the container's CPUs."""

    name = "cpuset"

    def prepare(self, d: str, parent_dir: str) -> None:
        for f in ("cpuset.cpus", "cpuset.mems"):
            path = os.path.join(d, f)
            if (read_opt(path) or "").strip():
                continue
            value = (read_opt(os.path.join(parent_dir, f)) or "").strip()
            try:
                write(path, value)
            except OSError as e:
                raise CgroupError(f"cannot copy {f}={value!r} from {parent_dir} into {d}: "
                                  f"{os.strerror(e.errno or 0)}", setting="cpuset",
                                  path=path, errno=e.errno) from None

    def apply(self, d: str, r: Resources) -> None:
        if r.cpuset is not None:
            allowed = (read_opt(os.path.join(os.path.dirname(d), "cpuset.cpus")) or "").strip()
            write_setting(d, "cpuset.cpus", r.cpuset, "cpuset", r.cpuset,
                          context=f"allowed here: {allowed or 'none'}")


class Freezer(Controller):
    name = "freezer"


CONTROLLERS: Mapping[str, Controller] = {
    c.name: c for c in (Memory(), Pids(), Cpu(), Cpuacct(), Cpuset(), Freezer())
}


class V1Manager(Manager):
    """The container's cgroup in each v1 hierarchy of ``hierarchies``
    (controller -> :class:`Hierarchy`; co-mounted controllers share a directory)."""

    version = 1

    def __init__(self, container_id: str, resources: Resources, parent: str = DEFAULT_PARENT,
                 hierarchies: Mapping[str, Hierarchy] | None = None, *,
                 ops: DirOps | None = None) -> None:
        super().__init__(container_id, resources, parent, ops=ops)
        self._dirs: dict[str, str] = {}
        self._anchors: dict[str, str] = {}  # container dir -> anchor
        for c, h in (hierarchies or {}).items():
            if c not in CONTROLLERS or h.version != 1:
                continue
            anchor = h.mountpoint if self.absolute else h.anchor_dir
            d = os.path.join(anchor, *self.parent_parts, self.container_id)
            self._dirs[c] = d
            self._anchors[d] = anchor

    @classmethod
    def attach(cls, container_id: str, paths: Mapping[str, str], *,
               ops: DirOps | None = None) -> V1Manager:
        """A manager for an existing container cgroup (another process made it), good
        for stats, freeze, kill and destroy. Its parents are never removed."""
        m = cls(container_id, Resources(), ops=ops)
        m._dirs = {c: d for c, d in paths.items() if c in CONTROLLERS}
        m._anchors = {}
        m._claimed = True
        return m

    # -- helpers -------------------------------------------------------------

    def _unique_dirs(self) -> list[str]:
        return list(dict.fromkeys(self._dirs.values()))

    def _controllers_in(self, d: str) -> list[Controller]:
        return [CONTROLLERS[c] for c, cd in self._dirs.items() if cd == d]

    def _chain(self, d: str) -> list[str]:
        anchor = self._anchors.get(d)
        if anchor is None:
            return []
        chain, up = [], anchor
        for part in self.parent_parts:
            up = os.path.join(up, part)
            chain.append(up)
        return chain

    # -- the interface -------------------------------------------------------

    def create(self) -> None:
        self._destroyed = False
        made: list[str] = []
        try:
            for d in self._unique_dirs():
                units = self._controllers_in(d)

                def prepare(path: str, up: str, units: list[Controller] = units) -> None:
                    for u in units:
                        u.prepare(path, up)

                chain = make_chain(self._anchors[d], self.parent_parts, self.ops, prepare)
                make_container_dir(d, self.ops)
                made.append(d)
                prepare(d, chain[-1] if chain else self._anchors[d])
            for c, d in self._dirs.items():
                CONTROLLERS[c].apply(d, self.resources)
        except BaseException:
            try:
                self._remove(DEFAULT_TIMEOUT, made)
            except CgroupError:
                pass  # the original error is the one worth reporting
            raise
        self._claimed = True

    def add(self, pid: int) -> None:
        for d in self._unique_dirs():
            try:
                write_pid(os.path.join(d, "cgroup.procs"), pid)
            except OSError as e:
                why = ("it does not exist (it exited)" if e.errno == errno.ESRCH
                       else os.strerror(e.errno or 0))
                raise CgroupError(f"cannot move process {pid} into cgroup {d}: {why}",
                                  path=d, errno=e.errno) from None

    def join_files(self) -> list[str] | None:
        return [os.path.join(d, "tasks") for d in self._unique_dirs()]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self._unique_dirs():
            found |= pids_below(d)
        return sorted(found)

    def stats(self) -> CgroupStats:
        out: dict[str, Any] = {}
        for c, d in self._dirs.items():
            CONTROLLERS[c].stats(d, out)
        return CgroupStats(version=1, **out)

    def oom_kills(self) -> int:
        d = self._dirs.get("memory")
        oom = None if d is None else read_keyed(os.path.join(d, "memory.oom_control"))
        return 0 if oom is None else oom.get("oom_kill", 0)

    def _freezer_state(self) -> str:
        d = self._dirs.get("freezer")
        if d is None:
            raise CgroupError(f"cannot freeze container {self.container_id!r}: the freezer "
                              "cgroup controller is not available on this host",
                              setting="freezer")
        return os.path.join(d, "freezer.state")

    def freeze(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        path = self._freezer_state()
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            # Writing FROZEN again while the state says FREEZING retries the tasks
            # that were busy (or newly forked); an occasional thaw un-sticks it, as
            # runc does.
            try:
                write(path, "FROZEN")
                state = read(path).strip()
            except OSError as e:
                raise CgroupError(f"cannot freeze container {self.container_id!r}: "
                                  f"{os.strerror(e.errno or 0)}", path=path,
                                  errno=e.errno) from None
            if state == "FROZEN":
                return
            if state != "FREEZING":
                raise CgroupError(f"freezer of {self.container_id!r} reads {state!r} "
                                  "after writing FROZEN", path=path)
            if time.monotonic() > deadline:
                try:
                    write(path, "THAWED")
                except OSError:
                    pass
                raise CgroupError(f"timed out after {timeout:g} s freezing container "
                                  f"{self.container_id!r} (stuck in FREEZING: a member "
                                  "is in an uninterruptible sleep)", path=path)
            i += 1
            if i % 50 == 0:
                try:
                    write(path, "THAWED")
                except OSError:
                    pass
                time.sleep(0.01)
            else:
                time.sleep(0.0005 if i < 10 else 0.002)

    def thaw(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        path = self._freezer_state()
        try:
            write(path, "THAWED")
        except OSError as e:
            raise CgroupError(f"cannot thaw container {self.container_id!r}: "
                              f"{os.strerror(e.errno or 0)}", path=path, errno=e.errno) from None
        wait_until(lambda: (read_opt(path) or "THAWED").strip() == "THAWED", timeout,
                   f"container {self.container_id!r} to thaw")

    def kill(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not self.pids():
            return
        frozen = False
        if "freezer" in self._dirs:
            try:
                self.freeze(timeout)
                frozen = True
            except CgroupError:
                pass  # kill unfrozen; the loop below catches late forks
        sigkill(self.pids())
        if frozen:
            self.thaw(timeout)
        # Frozen v1 tasks die only once thawed; re-signal whatever is still listed
        # (a fork that raced an unfrozen kill).
        wait_until(lambda: not self.pids(), timeout,
                   f"the processes of container {self.container_id!r} to exit",
                   each=lambda: sigkill(self.pids()))

    def paths(self) -> dict[str, str]:
        return dict(self._dirs)

    def destroy(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if self._destroyed or not self._claimed:
            return
        if self._remove_if_empty():
            self._destroyed = True
            return
        super().destroy(timeout)

    def _remove_if_empty(self) -> bool:
        """The usual end, in one rmdir per hierarchy: the container's processes are
        gone (its init was reaped). The first rmdir tells: it fails while the cgroup
        has members or cgroups below it, and then nothing was removed and the careful
        way (kill, wait, remove) follows. Every hierarchy holds the same processes."""
        dirs = self._unique_dirs()
        if not dirs:
            return False
        try:
            self.ops.rmdir(dirs[0])
        except FileNotFoundError:
            pass
        except OSError:
            return False
        for d in dirs[1:]:
            remove_cgroup(d, self.ops, DEFAULT_TIMEOUT)
        for d in dirs:
            release_chain(self._chain(d), self.ops)
        return True

    def _remove(self, timeout: float, dirs: list[str] | None = None) -> None:
        for d in self._unique_dirs() if dirs is None else dirs:
            remove_cgroup(d, self.ops, timeout)
        for d in self._unique_dirs():
            release_chain(self._chain(d), self.ops)

