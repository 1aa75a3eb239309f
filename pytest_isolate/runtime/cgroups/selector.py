"""Pick the manager for this host's layout; the hybrid case composes both versions.

Which controllers a container gets:

- *required*: the ones its limits need (memory, pids, cpu, cpuset). If one is not
  usable here, :class:`CgroupUnavailableError` names the setting.
- *wanted*: memory and pids (usage figures), and on v1 cpuacct (CPU time) and freezer
  (freeze, and a race-free kill). Used when usable, skipped silently otherwise.

v1 cpuset is joined only when ``cpuset`` is set: a new v1 cpuset cgroup needs its
CPUs and memory nodes copied in before anything can join it, which is work for no
benefit when nothing is restricted.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Resources
from .base import DEFAULT_PARENT, DEFAULT_TIMEOUT, CgroupStats, Manager
from .detect import MANAGED_CONTROLLERS, CgroupLayout, Hierarchy, detect
from .errors import CgroupError, CgroupUnavailableError
from .fs import DirOps, show
from .v1 import V1Manager
from .v2 import V2Manager

__all__ = ["HybridManager", "load_manager", "needed_controllers", "new_manager"]

_WANTED = ("memory", "pids", "cpuacct", "freezer")


def needed_controllers(r: Resources) -> tuple[dict[str, str], tuple[str, ...]]:
    """-> ({required controller: the setting that needs it}, wanted controllers)."""
    required: dict[str, str] = {}
    if r.memory is not None:
        required["memory"] = "memory"
    elif r.memory_swap not in (None, 0):
        required["memory"] = "memory_swap"
    if r.pids is not None:
        required["pids"] = "pids"
    if r.cpu is not None:
        required["cpu"] = "cpu"
    elif r.cpu_weight is not None:
        required["cpu"] = "cpu_weight"
    if r.cpuset is not None:
        required["cpuset"] = "cpuset"
    return required, _WANTED


def _why_not(layout: CgroupLayout, c: str) -> str:
    h = layout.hierarchy(c)
    if h is None:
        return (f"this host does not offer (cgroup mode {layout.mode}: no v1 mount and "
                "not in the unified hierarchy's cgroup.controllers)")
    if c not in layout.usable:
        return (f"is not enabled for this process's cgroup {h.anchor_dir} and cannot be "
                "enabled from here (ask for it to be delegated: systemd Delegate=yes)")
    return (f"this process may not use: it cannot write {h.anchor_dir} (run as root, or "
            "start pytest in a delegated cgroup v2 subtree)")


def _choose(resources: Resources, layout: CgroupLayout) -> dict[str, Hierarchy]:
    required, wanted = needed_controllers(resources)
    chosen: dict[str, Hierarchy] = {}
    for c in MANAGED_CONTROLLERS:
        if c not in required and c not in wanted:
            continue
        h = layout.hierarchy(c)
        if h is not None and layout.can_use(c):
            chosen[c] = h
        elif c in required:
            setting = required[c]
            raise CgroupUnavailableError(
                f"{show(setting, getattr(resources, setting))} needs the {c} cgroup "
                f"controller, which {_why_not(layout, c)}", setting=setting,
                value=getattr(resources, setting))
    return chosen


def new_manager(container_id: str, resources: Resources, parent: str = DEFAULT_PARENT,
                layout: CgroupLayout | None = None, *, ops: DirOps | None = None) -> Manager:
    """The manager for one container on this host (``layout``: :func:`detect` by default).

    ``parent`` is relative to the calling process's own cgroup (``"pytest-isolate"``,
    ``"pytest-isolate/gw0"``) or, with a leading ``/``, to the hierarchy's root.
    ``ops`` replaces mkdir/rmdir (a fake cgroup tree in tests). Nothing is created
    until ``create()``.
    """
    layout = layout if layout is not None else detect()
    chosen = _choose(resources, layout)
    v1 = {c: h for c, h in chosen.items() if h.version == 1}
    v2 = tuple(c for c, h in chosen.items() if h.version == 2)
    unified = layout.unified
    if layout.mode == "v2":
        if unified is None or not layout.unified_writable:
            raise CgroupUnavailableError(
                "this process cannot create cgroups: the unified hierarchy at "
                f"{unified.anchor_dir if unified else '?'} is not writable (run as root, or "
                "start pytest in a delegated subtree: systemd-run --user --scope -p "
                "Delegate=yes pytest ...)")
        return V2Manager(container_id, resources, parent, unified, v2, ops=ops)
    if layout.mode == "none" or (not v1 and not v2):
        raise CgroupUnavailableError(
            f"no cgroup hierarchy is usable by this process (cgroup mode {layout.mode}): "
            "run as root, or on cgroup v2 from a delegated subtree")
    if not v2:
        return V1Manager(container_id, resources, parent, v1, ops=ops)
    second = V2Manager(container_id, resources, parent, unified, v2, ops=ops)
    if not v1:
        return second
    return HybridManager(V1Manager(container_id, resources, parent, v1, ops=ops), second)


def load_manager(container_id: str, paths: Mapping[str, str], *,
                 ops: DirOps | None = None) -> Manager:
    """A manager over an existing container's cgroups, from ``Manager.paths()`` as
    saved in the container's State (another process may have created them)."""
    unified = paths.get("unified")
    # v2 lists its controllers too, all pointing at the unified directory.
    v1_paths = {c: p for c, p in paths.items() if c != "unified" and p != unified}
    first = V1Manager.attach(container_id, v1_paths, ops=ops) if v1_paths else None
    second = V2Manager.attach(unified, ops=ops) if unified else None
    if first is not None and second is not None:
        hybrid = HybridManager(first, second)
        hybrid._claimed = True
        return hybrid
    if first is not None:
        return first
    if second is not None:
        return second
    raise CgroupError(f"container {container_id!r} has no cgroup paths to load",
                      value=dict(paths))


class HybridManager(Manager):
    """v1 for the controllers mounted there, v2 for those only the unified hierarchy
    offers. Freezing and killing go through v1's freezer when there is one."""

    version = 1

    def __init__(self, first: V1Manager, second: V2Manager) -> None:
        super().__init__(first.container_id, first.resources, first.parent, ops=first.ops)
        self.first = first
        self.second = second

    def _control(self) -> Manager:
        return self.first if "freezer" in self.first.paths() else self.second

    def create(self) -> None:
        self._destroyed = False
        self.first.create()
        try:
            self.second.create()
        except BaseException:
            try:
                self.first.destroy()
            except CgroupError:
                pass
            raise
        self._claimed = True

    def add(self, pid: int) -> None:
        self.first.add(pid)
        self.second.add(pid)

    def pids(self) -> list[int]:
        return sorted(set(self.first.pids()) | set(self.second.pids()))

    def stats(self) -> CgroupStats:
        return self.first.stats().merged(self.second.stats())

    def oom_kills(self) -> int:
        if "memory" in self.first.paths():
            return self.first.oom_kills()
        return self.second.oom_kills()

    def freeze(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._control().freeze(timeout)

    def thaw(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._control().thaw(timeout)

    def kill(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._control().kill(timeout)
        self.first.kill(timeout)
        self.second.kill(timeout)

    def paths(self) -> dict[str, str]:
        return {**self.first.paths(), **self.second.paths()}

    def _remove(self, timeout: float) -> None:
        self.first._remove(timeout)
        self.second._remove(timeout)
