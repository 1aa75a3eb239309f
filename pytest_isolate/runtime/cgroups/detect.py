"""Which cgroup version drives each controller on this host: probed once.

Three shapes exist in the wild:

- **v2** (unified): one ``cgroup2`` mount whose ``cgroup.controllers`` lists the
  controllers (every systemd distribution since ~2021, GitHub Actions runners).
- **v1**: one ``cgroup`` mount per controller (or per group of co-mounted
  controllers such as ``cpu,cpuacct``).
- **hybrid**: v1 mounts for the controllers plus a ``cgroup2`` mount (usually
  ``/sys/fs/cgroup/unified``) that holds only the controllers no v1 hierarchy
  claimed -- often none. A controller lives in exactly one hierarchy, so v1 drives
  every controller mounted there and v2 only those listed in the unified root.

For every hierarchy the layout records the mount point and the calling process's
own cgroup (``/proc/self/cgroup``): managers create their parent cgroup *under*
that cgroup, which is what a delegated v2 subtree (``user@1000.service/...``)
requires and what keeps v1 cgroups inside whatever the host put us in.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from .fs import read_opt

__all__ = [
    "MANAGED_CONTROLLERS",
    "SUPERVISOR_LEAF",
    "CgroupLayout",
    "Hierarchy",
    "detect",
]

# The controllers the managers use. cpuacct and freezer are v1 only: on v2 CPU time
# is in every cgroup's cpu.stat and freezing is a core feature (cgroup.freeze).
MANAGED_CONTROLLERS: tuple[str, ...] = ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer")

# The leaf a v2 manager moves the supervisor's processes into so that their cgroup
# may enable controllers for children ("no internal processes" rule). A process
# found in a cgroup of this name is anchored at the cgroup above it.
SUPERVISOR_LEAF = "supervisor"

Mode = Literal["v1", "v2", "hybrid", "none"]


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and where the calling process sits in it.

    ``root`` is the mount's root inside the hierarchy (mountinfo field 4; ``/``
    unless a subtree is bind-mounted), ``path`` the calling process's cgroup as
    ``/proc/self/cgroup`` spells it. ``controllers``: for v1 the controllers bound to
    this mount, for v2 those the root's ``cgroup.controllers`` lists.
    """

    version: int
    mountpoint: str
    root: str
    path: str
    controllers: frozenset[str] = frozenset()

    @property
    def own_dir(self) -> str:
        """The directory of the calling process's cgroup (the mount point when the
        cgroup lies outside the mount, as in a foreign cgroup namespace)."""
        return self.dir_of(self.path)

    @property
    def anchor_dir(self) -> str:
        """Where a manager creates its parent by default: the process's own cgroup,
        or for v2 the cgroup above it when this process was already moved into the
        supervisor leaf by an earlier manager."""
        own = self.own_dir
        if (self.version == 2 and os.path.basename(own) == SUPERVISOR_LEAF
                and own != self.mountpoint):
            return os.path.dirname(own)
        return own

    def dir_of(self, cgroup_path: str) -> str:
        """Directory of ``cgroup_path`` (a path inside the hierarchy) on this mount."""
        root = self.root.rstrip("/")
        path = os.path.normpath("/" + cgroup_path.lstrip("/"))
        if root and path != root and not path.startswith(root + "/"):
            return self.mountpoint
        rel = path[len(root):].lstrip("/")
        return os.path.join(self.mountpoint, rel) if rel else self.mountpoint


@dataclass(frozen=True)
class CgroupLayout:
    """What :func:`detect` found.

    ``drivers`` maps each controller to the hierarchy that drives it; ``usable``
    holds the controllers a manager can use below this process (for v2: listed in the
    own cgroup's ``cgroup.controllers``, or enable-able from an ancestor whose
    ``cgroup.subtree_control`` this process may write); ``writable`` those whose
    hierarchy lets this process create cgroups under its own.
    """

    mode: Mode
    hierarchies: tuple[Hierarchy, ...] = ()
    unified: Hierarchy | None = None
    drivers: Mapping[str, Hierarchy] = field(default_factory=lambda: MappingProxyType({}))
    usable: frozenset[str] = frozenset()
    writable: frozenset[str] = frozenset()
    unified_writable: bool = False

    def version(self, controller: str) -> int | None:
        """1 or 2 for the hierarchy driving ``controller``; ``None`` if none does."""
        h = self.drivers.get(controller)
        return None if h is None else h.version

    def hierarchy(self, controller: str) -> Hierarchy | None:
        return self.drivers.get(controller)

    def can_use(self, controller: str) -> bool:
        return controller in self.usable and controller in self.writable

    def describe(self) -> list[str]:
        """One line per managed controller, for ``pytest-isolate doctor``."""
        lines = [f"cgroup mode: {self.mode}"]
        for c in MANAGED_CONTROLLERS:
            h = self.drivers.get(c)
            if h is None:
                core = self.mode == "v2" and c in ("cpuacct", "freezer")
                lines.append(f"{c}: " + ("core feature of cgroup v2" if core else "not available"))
                continue
            state = ("usable" if c in self.usable else "not enabled below this process")
            state += ", writable" if c in self.writable else ", not writable"
            lines.append(f"{c}: v{h.version} at {h.anchor_dir} ({state})")
        return lines


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class _Mount:
    fstype: str
    root: str
    mountpoint: str
    options: frozenset[str]


def _parse_mountinfo(text: str) -> list[_Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(_Mount(fstype=rf[0], root=_unescape(lf[3]), mountpoint=_unescape(lf[4]),
                             options=frozenset(rf[2].split(","))))
    return mounts


def _parse_proc_cgroup(text: str) -> tuple[dict[frozenset[str], str], str | None]:
    """-> ({controller set of a v1 hierarchy: path}, the v2 path or None)."""
    v1: dict[frozenset[str], str] = {}
    v2: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
        elif ctrls:
            v1[frozenset(ctrls.split(","))] = path
    return v1, v2


def _contains(root: str, path: str) -> bool:
    root = root.rstrip("/")
    return not root or path == root or path.startswith(root + "/")


def _words(path: str) -> set[str]:
    return set((read_opt(path) or "").split())


def _v2_usable(h: Hierarchy) -> set[str]:
    """Controllers available in the anchor cgroup, or enable-able down to it from an
    ancestor whose subtree_control we may write."""
    d = h.anchor_dir
    avail = _words(os.path.join(d, "cgroup.controllers"))
    while d != h.mountpoint and d.startswith(h.mountpoint):
        up = os.path.dirname(d)
        if not os.access(os.path.join(up, "cgroup.subtree_control"), os.W_OK):
            break
        avail |= _words(os.path.join(up, "cgroup.controllers"))
        d = up
    return avail


def _probe(mountinfo_path: str, cgroup_path: str) -> CgroupLayout:
    mounts = _parse_mountinfo(read_opt(mountinfo_path) or "")
    v1_paths, v2_path = _parse_proc_cgroup(read_opt(cgroup_path) or "")

    v1: list[Hierarchy] = []
    for ctrls, path in v1_paths.items():
        candidates = [m for m in mounts if m.fstype == "cgroup" and ctrls <= m.options]
        if not candidates:
            continue
        # A hierarchy mounted twice (bind mounts in containers): prefer the mount whose
        # root contains our cgroup, then /sys/fs/cgroup.
        candidates.sort(key=lambda m: (not _contains(m.root, path),
                                       not m.mountpoint.startswith("/sys/fs/cgroup")))
        m = candidates[0]
        v1.append(Hierarchy(1, m.mountpoint, m.root, path, ctrls))
    v1.sort(key=lambda h: h.mountpoint)

    unified: Hierarchy | None = None
    if v2_path is not None:
        candidates = [m for m in mounts if m.fstype == "cgroup2"]
        # Prefer the mount whose root contains our cgroup, then /sys/fs/cgroup.
        candidates.sort(key=lambda m: (not _contains(m.root, v2_path),
                                       not m.mountpoint.startswith("/sys/fs/cgroup")))
        if candidates:
            m = candidates[0]
            ctrls = frozenset(_words(os.path.join(m.mountpoint, "cgroup.controllers")))
            unified = Hierarchy(2, m.mountpoint, m.root, v2_path, ctrls)

    drivers: dict[str, Hierarchy] = {}
    usable: set[str] = set()
    writable: set[str] = set()
    for h in v1:
        ok = os.access(h.anchor_dir, os.W_OK)
        for c in h.controllers:
            if c.startswith("name="):
                continue
            drivers[c] = h
            usable.add(c)
            if ok:
                writable.add(c)
    unified_writable = False
    if unified is not None:
        d = unified.anchor_dir
        unified_writable = os.access(d, os.W_OK)
        v2_ok = unified_writable and os.access(os.path.join(d, "cgroup.subtree_control"),
                                               os.W_OK)
        v2_usable = _v2_usable(unified)
        for c in unified.controllers:
            if c in drivers:  # cannot happen on a sane kernel: v1 wins, as documented
                continue
            drivers[c] = unified
            if c in v2_usable:
                usable.add(c)
            if v2_ok:
                writable.add(c)

    has_v1 = any(not c.startswith("name=") for h in v1 for c in h.controllers)
    mode: Mode
    if has_v1 and unified is not None:
        mode = "hybrid"
    elif has_v1:
        mode = "v1"
    elif unified is not None:
        mode = "v2"
    else:
        mode = "none"
    hierarchies = (*v1, unified) if unified is not None else tuple(v1)
    return CgroupLayout(mode=mode, hierarchies=hierarchies, unified=unified,
                        drivers=MappingProxyType(drivers), usable=frozenset(usable),
                        writable=frozenset(writable), unified_writable=unified_writable)


@functools.lru_cache(maxsize=16)
def detect(mountinfo_path: str = "/proc/self/mountinfo",
           cgroup_path: str = "/proc/self/cgroup") -> CgroupLayout:
    """Probe the host's cgroup layout once (cached per pair of paths).

    The paths are injectable so tests can describe other hosts. Call
    ``detect.cache_clear()`` to probe again (after moving this process, say), or
    ``detect.__wrapped__()`` for a fresh look that leaves the cache alone.
    """
    return _probe(str(mountinfo_path), str(cgroup_path))
