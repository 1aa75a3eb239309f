"""Timing of a container's start-up and teardown, phase by phase, for the benchmarks.

Off unless ``PYTEST_ISOLATE_TRACE`` names a file when this module is first imported:
then every process involved (the host, the bootstrap, the init, the payload) appends
``<pid> <phase> <start> <end>`` lines to it, times from ``CLOCK_MONOTONIC`` (one
clock for all processes on the machine). ``benchmarks/breakdown.py`` reads them.
Tracing costs a small ``write`` per phase; when off, a ``None`` check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "PYTEST_ISOLATE_TRACE"

_fd: int | None = None
_path = os.environ.get(ENV)
if _path:
    try:
        import fcntl

        _low = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # far above the numbers a payload's stdio and extra files are moved to
        _fd = fcntl.fcntl(_low, fcntl.F_DUPFD_CLOEXEC, 900)
        os.close(_low)
    except OSError:
        _fd = None


def fd() -> int | None:
    """The trace file's descriptor (kept open across the bootstrap's fd scrubbing)."""
    return _fd


def mark(name: str, start: float, end: float | None = None) -> None:
    if _fd is None:
        return
    try:
        os.write(_fd, f"{os.getpid()} {name} {start:.6f} "
                      f"{time.monotonic() if end is None else end:.6f}\n".encode())
    except OSError:
        pass


@contextmanager
def span(name: str) -> Iterator[None]:
    if _fd is None:
        yield
        return
    start = time.monotonic()
    try:
        yield
    finally:
        mark(name, start)
