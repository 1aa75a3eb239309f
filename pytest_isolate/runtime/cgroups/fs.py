"""Reading and writing cgroup files, and the two directory operations of cgroupfs.

Writes never create files (no ``O_CREAT``): on cgroupfs every file is made by the
kernel, and a missing one means a controller is not enabled. A write error becomes
a :class:`CgroupError` that names the setting, the value and what to do.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ..units import format_size
from .errors import CgroupError

__all__ = [
    "DirOps",
    "parse_keyed",
    "parse_limit",
    "read",
    "read_int",
    "read_keyed",
    "read_limit",
    "read_opt",
    "read_pids",
    "show",
    "write",
    "write_pid",
    "write_setting",
]


class DirOps:
    """``mkdir``/``rmdir`` of cgroup directories.

    On cgroupfs the kernel fills a new directory with its control files and lets
    ``rmdir`` remove a directory that still shows them. A fake tree (tests) replaces
    these two with versions that do the same to plain files.
    """

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def read_opt(path: str) -> str | None:
    """The file's text, or ``None`` when it does not exist (an older kernel, a
    controller that is not enabled)."""
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_int(path: str) -> int | None:
    text = read_opt(path)
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def parse_limit(text: str | None, unlimited_from: int | None = None) -> int | None:
    """``"max"``, ``-1`` and values at or above ``unlimited_from`` mean no limit."""
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        n = int(text)
    except ValueError:
        return None
    if n < 0 or (unlimited_from is not None and n >= unlimited_from):
        return None
    return n


def read_limit(path: str, unlimited_from: int | None = None) -> int | None:
    return parse_limit(read_opt(path), unlimited_from)


def parse_keyed(text: str | None) -> dict[str, int]:
    """``"key value"`` lines (memory.events, cpu.stat, cgroup.events ...) -> dict."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def read_keyed(path: str) -> dict[str, int] | None:
    text = read_opt(path)
    return None if text is None else parse_keyed(text)


def read_pids(path: str) -> list[int]:
    """The pids listed in a ``cgroup.procs`` file; none when the cgroup is gone."""
    text = read_opt(path)
    if text is None:
        return []
    return [int(x) for x in text.split() if x.isdigit()]


def write(path: str, text: str, *, append: bool = False) -> None:
    """Write ``text`` in one ``write(2)``; raises ``OSError`` as the kernel answers."""
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_pid(path: str, pid: int) -> None:
    """Move ``pid`` (its whole thread group) into the cgroup of this ``cgroup.procs``.

    ``O_APPEND``: the kernel ignores the offset, a plain file (fake tree) keeps every
    pid written to it.
    """
    write(path, f"{pid}\n", append=True)


_HINTS: dict[tuple[str, int], str] = {
    ("memory", errno.EBUSY): "{shown} is below what the container already uses; "
                             "raise the limit",
    ("memory_swap", errno.EBUSY): "{shown} is below what the container already uses; "
                                  "raise the limit",
    ("memory", errno.EINVAL): "the kernel does not accept this size; use a larger "
                              "limit such as '64M'",
    ("cpu", errno.EINVAL): "the kernel needs a CPU quota of at least 1 ms per 100 ms "
                           "period (cpu >= 0.01) and no more than its parent allows",
    ("cpuset", errno.EINVAL): "the CPUs must exist on this machine and be allowed in "
                              "the parent cgroup ({context})",
    ("cpu_weight", errno.EINVAL): "cpu_weight must be an integer from 1 to 10000",
    ("pids", errno.EINVAL): "pids must be a positive number of processes",
}


def _hint(setting: str, err: int, shown: str, context: str) -> str:
    hint = _HINTS.get((setting, err))
    if hint is not None:
        return hint.format(shown=shown, context=context)
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ("this process may not write this cgroup: run as root, or start pytest "
                "in a delegated cgroup v2 subtree")
    if err == errno.ENOENT:
        return "the control file does not exist: the controller is not enabled here"
    if err == errno.EBUSY:
        return "the cgroup is busy (it holds processes or child cgroups)"
    return "the kernel refused the value"


def show(setting: str, value: object) -> str:
    """``memory=64M`` style text for messages."""
    if setting in ("memory", "memory_swap") and isinstance(value, int):
        return f"{setting}={format_size(value)}"
    return f"{setting}={value}"


def write_setting(directory: str, filename: str, text: str, setting: str, value: object,
                  *, context: str = "") -> None:
    """Write a resource limit; any failure is a :class:`CgroupError` naming the setting."""
    path = os.path.join(directory, filename)
    try:
        write(path, text)
    except OSError as e:
        shown = show(setting, value)
        err = e.errno or 0
        raise CgroupError(
            f"cgroup limit {shown} was refused ({filename}={text.strip()!r}: "
            f"{os.strerror(err)}): {_hint(setting, err, shown, context)}",
            setting=setting, value=value, path=path, errno=err) from None


class PidsFiles:
    """The pids controller's files, named the same in cgroup v1 and v2."""

    def apply(self, d: str, r: Any) -> None:
        if r.pids is not None:
            write_setting(d, "pids.max", str(r.pids), "pids", r.pids)

    def stats(self, d: str, out: dict[str, Any]) -> None:
        out["pids_current"] = read_int(os.path.join(d, "pids.current"))
        out["pids_peak"] = read_int(os.path.join(d, "pids.peak"))  # kernels >= 6.1
        out["pids_limit"] = read_limit(os.path.join(d, "pids.max"))
