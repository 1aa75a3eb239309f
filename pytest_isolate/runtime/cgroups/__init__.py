"""Cgroups behind one :class:`Manager` interface, after opencontainers/cgroups.

    layout = detect()                       # probed once: v1, v2 or hybrid
    m = new_manager("c1", Resources(memory="64M", pids=16), layout=layout)
    m.create(); m.add(pid); ...; m.destroy()

``v1`` drives per-controller hierarchies, ``v2`` the unified one; on a hybrid host
v1 drives what is mounted there and v2 only what the unified hierarchy offers.
"""

from __future__ import annotations

from .base import DEFAULT_PARENT, CgroupStats, Manager
from .detect import MANAGED_CONTROLLERS, SUPERVISOR_LEAF, CgroupLayout, Hierarchy, detect
from .errors import CgroupError, CgroupUnavailableError
from .fs import DirOps
from .selector import HybridManager, load_manager, needed_controllers, new_manager
from .v1 import V1Manager, cpu_shares
from .v2 import V2Manager

__all__ = [
    "DEFAULT_PARENT",
    "MANAGED_CONTROLLERS",
    "SUPERVISOR_LEAF",
    "CgroupError",
    "CgroupLayout",
    "CgroupStats",
    "CgroupUnavailableError",
    "DirOps",
    "Hierarchy",
    "HybridManager",
    "Manager",
    "V1Manager",
    "V2Manager",
    "cpu_shares",
    "detect",
    "load_manager",
    "needed_controllers",
    "new_manager",
]
