"""What runs inside a container, and how it ended."""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from .config import Rlimit, parse_user
from .errors import ConfigError

if TYPE_CHECKING:
    from .container import Container

__all__ = ["DEVNULL", "PIPE", "ExitStatus", "Process", "RemoteException"]

PIPE = -1
"""Capture the stream on the host; it appears in ``ExitStatus.stdout``/``stderr``."""
DEVNULL = -3
"""Connect the stream to ``/dev/null``."""
MAX_EXTRA_FILES = 16

Stdio = int | str | IO[Any] | None


def signal_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


@dataclass(frozen=True)
class RemoteException:
    """An exception raised inside the container, as data: never an unpickled object."""

    type: str
    message: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended.

    Exactly one of ``exit_code`` and ``signal`` is set. ``timed_out`` means the host
    killed it at its deadline; ``oom_killed`` that it died of the memory limit, and
    ``oom_kills`` how many processes of the container the OOM killer ended (a
    grandchild's counts even when the payload survives). ``stats`` is the container's
    final cgroup usage (memory peak, CPU time, pids) when cgroups were used. For a
    callable, ``value`` holds its return value (JSON data, or any object with
    ``trusted=True``) and ``exception`` what it raised; ``result_error`` says why no
    result could be read (malformed or oversized frames, channel closed early).
    """

    exit_code: int | None = None
    signal: int | None = None
    core_dumped: bool = False
    timed_out: bool = False
    timeout: float | None = None
    oom_killed: bool = False
    oom_kills: int = 0
    memory_limit: int | None = None
    stats: dict[str, Any] | None = None
    value: Any = None
    exception: RemoteException | None = None
    result_error: str | None = None
    has_result: bool = False
    stdout: bytes | None = None
    stderr: bytes | None = None
    pid: int | None = None

    @property
    def signal_name(self) -> str | None:
        return None if self.signal is None else signal_name(self.signal)

    @property
    def ok(self) -> bool:
        return (self.exit_code == 0 and not self.timed_out and self.exception is None
                and self.result_error is None)

    def describe(self) -> str:
        """A one-line human description: 'exited with status 3', 'killed by signal 11 (SIGSEGV)'."""
        if self.timed_out:
            return f"timed out after {round(self.timeout, 2):g} s" if self.timeout else "timed out"
        if self.oom_killed:
            from .units import format_size

            peak = (self.stats or {}).get("memory_peak")
            text = f"memory limit {format_size(self.memory_limit)} exceeded (OOM kill)"
            return text + (f", peak {format_size(peak)}" if peak else "")
        if self.signal is not None:
            if self.signal == _signal.SIGSYS:
                return f"killed by signal {self.signal} (SIGSYS: seccomp)"
            return f"killed by signal {self.signal} ({self.signal_name})"
        if self.exception is not None:
            return f"raised {self.exception}"
        return f"exited with status {self.exit_code}"

    @classmethod
    def from_wait_status(cls, status: int, **kw: Any) -> ExitStatus:
        import os

        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status), core_dumped=os.WCOREDUMP(status), **kw)
        return cls(exit_code=os.waitstatus_to_exitcode(status), **kw)


class Process:
    """A process to run in a container: an argv to exec, or a Python callable.

    ``Process(["sh", "-c", "echo hi"])`` or ``Process(target=fn, args=(1, 2))``.
    The callable and its arguments are shipped into the container with cloudpickle.
    Its return value comes back as JSON-compatible data; ``trusted=True`` lets any
    picklable value come back (the host then unpickles what the container sent: only
    for code you trust).

    ``stdin``/``stdout``/``stderr``: ``None`` inherits the host's, :data:`PIPE`
    captures on the host, :data:`DEVNULL`, a file descriptor, an open file, or a path
    (opened by the host, so output survives a crash). ``env`` is added to the
    container's environment. ``timeout`` kills the whole container at the deadline.
    ``on_message`` is called on the host, while it waits, with each piece of data the
    payload sends with :func:`pytest_isolate.runtime.emit` (JSON data, never unpickled).
    ``max_result_size`` caps each frame and the whole result channel (default 256 MiB);
    ``max_frame_size`` caps each frame lower, and ``max_json_items`` the items
    (strings, numbers, lists, objects) one JSON frame may hold, estimated from its
    bytes before it is parsed: parsing multiplies the size of item-dense JSON by up to
    ~30 in the host's memory.
    ``extra_files``: open file descriptors (or files) of the host that the payload gets
    as fds 3, 4, ... in order, like runc's ExtraFiles (the caller keeps its own).
    ``fresh=True`` calls the target in a new interpreter (the host's ``sys.executable``
    and ``sys.path``) exec'd in the container, instead of in a fork of the calling
    process: the callable cannot read what the caller holds in memory. Modules the
    pickled callable and its arguments refer to by name are imported there.
    """

    def __init__(
        self,
        argv: Sequence[str] | None = None,
        *,
        target: Callable[..., Any] | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        rlimits: Sequence[Rlimit] = (),
        timeout: float | None = None,
        trusted: bool = False,
        max_result_size: int | None = None,
        max_frame_size: int | None = None,
        max_json_items: int | None = None,
        max_output: int = 64 * 2**20,
        on_message: Callable[[Any], None] | None = None,
        extra_files: Sequence[int | IO[Any]] = (),
        fresh: bool = False,
    ) -> None:
        if (argv is None) == (target is None):
            raise ConfigError("process", argv, "give either an argv list or target=callable")
        if argv is not None:
            if isinstance(argv, (str, bytes)) or not argv or not all(
                    isinstance(a, str) for a in argv):
                raise ConfigError("process.argv", argv, "a non-empty list of strings")
            argv = list(argv)
        if on_message is not None and not callable(on_message):
            raise ConfigError("process.on_message", on_message, "a callable taking one argument")
        if target is not None and not callable(target):
            raise ConfigError("process.target", target, "a callable")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigError("process.timeout", timeout, "a positive number of seconds")
        if cwd is not None and not cwd.startswith("/"):
            raise ConfigError("process.cwd", cwd, "an absolute path")
        if user is not None:
            parse_user(user, "process.user")
        for r in rlimits:
            if not isinstance(r, Rlimit):
                raise ConfigError("process.rlimits", r, "a sequence of Rlimit objects")
        extra = []
        for f in extra_files:
            fd = f if isinstance(f, int) and not isinstance(f, bool) else getattr(
                f, "fileno", lambda: None)()
            if not isinstance(fd, int) or fd < 0:
                raise ConfigError("process.extra_files", f, "open file descriptors or files")
            extra.append(fd)
        if len(extra) > MAX_EXTRA_FILES:
            raise ConfigError("process.extra_files", extra_files,
                              f"at most {MAX_EXTRA_FILES} descriptors")
        self.extra_files = tuple(extra)
        if fresh and target is None:
            raise ConfigError("process.fresh", fresh, "fresh=True is for a target callable")
        self.fresh = bool(fresh)
        self.argv = argv
        self.target = target
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.env = dict(env or {})
        self.cwd = cwd
        self.user = user
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.rlimits = tuple(rlimits)
        self.timeout = timeout
        self.trusted = trusted
        self.max_result_size = max_result_size
        self.max_frame_size = max_frame_size
        self.max_json_items = max_json_items
        self.max_output = max_output
        self.on_message = on_message
        self._container: Container | None = None
        self._key: int | None = None

    def __repr__(self) -> str:
        what = self.argv if self.argv is not None else getattr(self.target, "__qualname__", "?")
        return f"<Process {what!r}>"

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Wait for this process to end; raises ``WaitTimeout`` if ``timeout`` expires."""
        if self._container is None or self._key is None:
            from .errors import ProcessError

            raise ProcessError("process was never started")
        return self._container._wait_process(self._key, timeout)
