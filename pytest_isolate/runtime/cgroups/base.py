"""The ``Manager`` interface, the stats value object and what both versions share.

A manager owns one container's cgroup(s): ``<anchor>/<parent>/<container id>`` in
every hierarchy it uses, where the anchor is the calling process's own cgroup (or,
for an absolute ``parent`` such as ``"/pytest-isolate"``, the hierarchy's root).

Life of a manager::

    m = new_manager("c1", Resources(memory="64M", pids=16))
    m.create()          # mkdir, limits written while the cgroup is still empty
    m.add(pid)          # the container's first process; its children follow it
                        # (or: the process writes "0" to each of m.join_files())
    m.stats()           # usage, peaks, OOM kills and the limits in force
    m.freeze(); m.thaw()
    m.kill()            # every member, then wait until the cgroup is empty
    m.destroy()         # kill what is left, rmdir; idempotent

Parents: a manager records the parent directories *this process* created
(a process-wide registry, so that two containers of one process sharing a parent
cannot leave it behind whatever order they end in) and removes them in
``destroy()`` once empty. A parent that existed before is never removed.
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import Resources
from .errors import CgroupError
from .fs import DirOps, read_pids

__all__ = ["DEFAULT_PARENT", "CgroupStats", "Manager"]

DEFAULT_PARENT = "pytest-isolate"
DEFAULT_TIMEOUT = 5.0
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupStats:
    """Usage and limits of one container's cgroup; ``None`` where this host's
    kernel or enabled controllers do not tell.

    Memory in bytes, CPU times in seconds, ``cpu_quota``/``cpu_period`` in
    microseconds (``cpu_quota`` ``None``: no CPU limit), limits ``None`` when unlimited.
    """

    version: int
    memory_current: int | None = None
    memory_peak: int | None = None
    memory_limit: int | None = None
    oom_kills: int | None = None
    cpu_usage: float | None = None
    cpu_user: float | None = None
    cpu_system: float | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    pids_current: int | None = None
    pids_peak: int | None = None
    pids_limit: int | None = None

    @property
    def cpu_limit(self) -> float | None:
        """The CPU limit in cores (quota / period)."""
        if self.cpu_quota is None or not self.cpu_period:
            return None
        return self.cpu_quota / self.cpu_period

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cpu_limit"] = self.cpu_limit
        return d

    def merged(self, other: CgroupStats) -> CgroupStats:
        """These stats with every ``None`` filled in from ``other``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, v in values.items():
            if v is None:
                values[name] = getattr(other, name)
        return CgroupStats(**values)


# Parent directories this process created, by path (see the module docstring).
_owned_lock = threading.Lock()
_owned: set[str] = set()


def check_name(container_id: str) -> str:
    if (not isinstance(container_id, str) or not container_id or "/" in container_id
            or container_id in (".", "..") or any(c in container_id for c in "\x00\n")):
        raise CgroupError(f"container id {container_id!r} cannot name a cgroup: use a "
                          "non-empty name without '/', NUL or newline",
                          setting="container_id", value=container_id)
    return container_id


def split_parent(parent: str) -> tuple[bool, tuple[str, ...]]:
    """``"pytest-isolate/gw0"`` -> (False, parts); a leading ``/`` anchors the parent
    at the hierarchy's root instead of the calling process's cgroup."""
    if not isinstance(parent, str) or "\x00" in parent or "\n" in parent:
        raise CgroupError(f"cgroup parent {parent!r} is not a path",
                          setting="parent", value=parent)
    parts = tuple(p for p in parent.split("/") if p)
    if any(p in (".", "..") for p in parts):
        raise CgroupError(f"cgroup parent {parent!r} may not contain '.' or '..'",
                          setting="parent", value=parent)
    return parent.startswith("/"), parts


def make_chain(anchor: str, parts: Iterable[str], ops: DirOps,
               prepare: Callable[[str, str], None] | None = None) -> list[str]:
    """Create ``anchor/p1``, ``anchor/p1/p2`` ... where missing; return them in order.

    ``prepare(dir, parent_dir)`` runs on every one of them, new or old (v1 cpuset
    copies its parent's CPUs and memory nodes into empty ones).
    """
    chain = []
    up = anchor
    for part in parts:
        d = os.path.join(up, part)
        try:
            ops.mkdir(d)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {d}: {os.strerror(e.errno or 0)}"
                              + permission_hint(e), path=d, errno=e.errno) from None
        else:
            with _owned_lock:
                _owned.add(d)
        if prepare is not None:
            prepare(d, up)
        chain.append(d)
        up = d
    return chain


def release_chain(chain: list[str], ops: DirOps) -> None:
    """Remove the parents of ``chain`` this process created, deepest first, while
    they are empty; a parent still used by another container stays."""
    for d in reversed(chain):
        with _owned_lock:
            if d not in _owned:
                return
        try:
            ops.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return  # another container of ours still lives there
            raise CgroupError(f"cannot remove cgroup {d}: {os.strerror(e.errno or 0)}",
                              path=d, errno=e.errno) from None
        with _owned_lock:
            _owned.discard(d)


def permission_hint(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (" (run as root, or start pytest in a delegated cgroup v2 subtree, e.g. "
                "systemd-run --user --scope -p Delegate=yes pytest ...)")
    return ""


def make_container_dir(d: str, ops: DirOps) -> None:
    """mkdir the container's own cgroup; a stale empty one (a crashed earlier run with
    the same id) is reused, one that holds processes is an error."""
    try:
        ops.mkdir(d)
    except FileExistsError:
        if read_pids(os.path.join(d, "cgroup.procs")):
            raise CgroupError(f"cgroup {d} already exists and holds processes: is a "
                              "container with this id still running?", path=d,
                              errno=errno.EEXIST) from None
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {d}: {os.strerror(e.errno or 0)}"
                          + permission_hint(e), path=d, errno=e.errno) from None


def remove_cgroup(d: str, ops: DirOps, timeout: float) -> None:
    """rmdir ``d`` and any cgroups a container made below it, retrying on EBUSY while
    the last members finish exiting."""
    try:  # the usual case, without listing the directory: nothing below, no members
        ops.rmdir(d)
        return
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise CgroupError(f"cannot remove cgroup {d}: {os.strerror(e.errno or 0)}",
                              path=d, errno=e.errno) from None
    deadline = time.monotonic() + timeout
    subdirs: list[str] = []
    for dirpath, _dirnames, _files in os.walk(d, topdown=False):
        if dirpath != d:
            subdirs.append(dirpath)
    for target in (*subdirs, d):
        delay = 0.001
        while True:
            try:
                ops.rmdir(target)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                raise CgroupError(f"cannot remove cgroup {target}: {os.strerror(e.errno or 0)}"
                                  + (" (processes are still in it)"
                                     if e.errno in (errno.EBUSY, errno.ENOTEMPTY) else ""),
                                  path=target, errno=e.errno) from None


def pids_below(d: str) -> set[int]:
    """Members of ``d`` and of any cgroup below it."""
    found = set(read_pids(os.path.join(d, "cgroup.procs")))
    try:
        entries = os.scandir(d)
    except OSError:
        return found
    with entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                found |= pids_below(entry.path)
    return found


def sigkill(pids: Iterable[int]) -> None:
    for pid in pids:
        if pid <= 1 or pid == os.getpid():
            continue  # never: a fake or confused procs file must not kill init or us
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               on_timeout: Callable[[], None] | None = None,
               each: Callable[[], None] | None = None) -> None:
    """Poll ``predicate`` with a short, growing sleep (0.5 ms .. 10 ms)."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not predicate():
        if time.monotonic() > deadline:
            if on_timeout is not None:
                on_timeout()
            raise CgroupError(f"timed out after {timeout:g} s waiting for {what}")
        if each is not None:
            each()
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


class Manager(abc.ABC):
    """One container's cgroup(s); see the module docstring for the life cycle."""

    version: ClassVar[int]

    def __init__(self, container_id: str, resources: Resources, parent: str = DEFAULT_PARENT,
                 *, ops: DirOps | None = None) -> None:
        self.container_id = check_name(container_id)
        self.resources = resources
        self.parent = parent
        self.absolute, self.parent_parts = split_parent(parent)
        self.ops = ops or DirOps()
        self._destroyed = False
        # True once create() succeeded (or attach() adopted an existing cgroup): only
        # then may destroy() kill and remove -- a failed create must never touch a
        # live cgroup of the same name.
        self._claimed = False

    @abc.abstractmethod
    def create(self) -> None:
        """Make the container's cgroup(s) and write the limits, before any process
        joins. On failure nothing is left behind and :class:`CgroupError` says why."""

    @abc.abstractmethod
    def add(self, pid: int) -> None:
        """Move process ``pid`` into the container's cgroup in every hierarchy."""

    def join_files(self) -> list[str] | None:
        """Files a single-threaded process joins the container's cgroups through by
        writing ``0`` to each (itself, by the kernel's "current task" shorthand), or
        ``None`` when the process must be moved with :meth:`add` instead.

        Why both: moving a whole process (``cgroup.procs``) takes the kernel's global
        thread-group lock for writing, which waits out an RCU grace period (~10 ms
        unless another move happened just before). Since Linux 6.0 a thread that
        moves only itself skips that lock: ~0.04 ms. Only v1's ``tasks`` files allow
        that across cgroups; v2 moves single threads only within a threaded subtree.
        """
        return None

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Every process in the container (sorted)."""

    @abc.abstractmethod
    def stats(self) -> CgroupStats:
        """Current usage, peaks, OOM kills and the limits in force."""

    @abc.abstractmethod
    def freeze(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop every member; returns once the kernel reports the cgroup frozen."""

    @abc.abstractmethod
    def thaw(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Let the members run again."""

    @abc.abstractmethod
    def kill(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """SIGKILL every member and wait until the cgroup is empty."""

    @abc.abstractmethod
    def paths(self) -> dict[str, str]:
        """Controller -> the container's cgroup directory, for the persisted State;
        v2 adds ``"unified"`` (its controllers all map to that one directory)."""

    @abc.abstractmethod
    def _remove(self, timeout: float) -> None:
        """rmdir the container cgroup(s) and the parents this process created."""

    def destroy(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Kill what is left, remove the cgroup(s) and the parents this process made
        (when empty). Safe to call again, and after a failed ``create()``."""
        if self._destroyed or not self._claimed:
            return
        if self.pids():
            self.kill(timeout)
        self._remove(timeout)
        self._destroyed = True

    def oom_kills(self) -> int:
        """How many processes of the container the OOM killer killed."""
        return self.stats().oom_kills or 0

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.paths().values())

    def __enter__(self) -> Manager:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.container_id!r} {self.paths()}>"
