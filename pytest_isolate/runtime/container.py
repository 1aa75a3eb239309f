"""The host side of a container: lifecycle, waiting, signalling, state."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import selectors
import shutil
import signal as _signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from . import capabilities, linux, trace
from .bootstrap import (
    MAX_MESSAGE,
    MAX_TRACEBACK,
    MAX_TYPE,
    NS_FILES,
    _cut,
    bootstrap_main,
    exec_main,
    init_direct_main,
)
from .capabilities import CapabilitySets, current
from .channel import (
    DEFAULT_MAX_FRAME,
    KIND_PICKLE,
    ChannelError,
    FrameReader,
    recv_msg,
    send_msg,
    write_all,
)
from .config import Config, Rlimit, parse_user
from .errors import (
    ContainerError,
    HookError,
    ProcessError,
    SetupError,
    WaitTimeout,
)
from .hooks import run_hook, run_hooks
from .process import DEVNULL, PIPE, ExitStatus, Process, RemoteException
from .state import State, Status, check_transition, write_atomic

if TYPE_CHECKING:
    from .factory import Factory

__all__ = ["Container"]

SETUP_TIMEOUT = 30.0
_F_SETPIPE_SZ = 1031


@dataclass
class _Capture:
    name: str
    limit: int
    data: bytearray = field(default_factory=bytearray)
    truncated: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.truncated += max(0, len(chunk) - max(room, 0))

    def value(self) -> bytes:
        if self.truncated:
            return bytes(self.data) + f"\n[... {self.truncated} more bytes of {self.name} " \
                f"dropped: over the {self.limit}-byte capture limit]\n".encode()
        return bytes(self.data)


@dataclass
class _Running:
    """Host-side bookkeeping for one process being run in the container."""

    process: Process
    initial: bool
    sock: socket.socket
    monitor_pid: int
    result_fd: int | None
    reader: FrameReader
    captures: dict[int, _Capture] = field(default_factory=dict)
    payload_pid: int | None = None
    deadline: float | None = None
    payload_status: int | None = None
    init_status: int | None = None
    monitor_done: bool = False
    timed_out: bool = False
    value: Any = None
    exception: RemoteException | None = None
    result_error: str | None = None
    has_result: bool = False
    confirmed: bool = False
    callback_error: BaseException | None = None
    exit: ExitStatus | None = None
    direct: bool = False  # monitor_pid is the init itself (no bootstrap in between)


@dataclass
class _Start:
    """A start under way (``Container.start(wait=False)``), finished by ``ready()``."""

    spec: bytes
    init_w: int  # the spec goes to the init through it; -1 once written
    joins: bool  # the init joins its cgroups itself
    eager: bool  # the process was handed over at once: no host step in between
    deadline: float
    init: dict[str, Any] | None = None  # the init's "init" message, when the host forked it


class Container:
    """A container created by a :class:`Factory`.

    In the process that created it, a container is *attached*: it can be started,
    waited for, exec'd into. A container loaded with ``Factory.load`` in another
    process is *detached*: it can report its state, be signalled and destroyed.
    """

    def __init__(self, factory: Factory, state: State, config: Config, attached: bool) -> None:
        self.factory = factory
        self.id = state.id
        self.config = config
        self._state = state
        self._attached = attached
        self._dir = os.path.join(factory.root, state.id)
        self._pidfd: int | None = None
        self._procs: dict[int, _Running] = {}
        self._next_key = 0
        self._initial: _Running | None = None
        self._pending: _Start | None = None
        self._destroyed = False
        self._cgroups: Any = None  # a cgroups.Manager, when this container has cgroups
        self.hook_errors: list[HookError] = []

    def __repr__(self) -> str:
        return f"<Container {self.id!r} {self._state.status.value}>"

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ------------------------------------------------------------------ state

    @property
    def status(self) -> Status:
        return self.state().status

    def state(self) -> State:
        """The current state; for a detached container, re-read and checked against /proc."""
        if not self._attached and not self._destroyed:
            try:
                with open(os.path.join(self._dir, "state.json")) as f:
                    self._state = State.from_json(f.read())
            except FileNotFoundError:
                pass
            st = self._state
            if st.status in (Status.RUNNING, Status.PAUSED) and not self._init_alive():
                st.status = Status.STOPPED
        return self._state

    def _save(self) -> None:
        if not self._destroyed:
            write_atomic(os.path.join(self._dir, "state.json"), self._state.to_json())

    def _init_alive(self) -> bool:
        st = self._state
        return (st.init_pid is not None
                and linux.proc_start_time(st.init_pid) == st.init_start_time)

    # ------------------------------------------------------------------ start

    def run(self, process: Process, timeout: float | None = None) -> ExitStatus:
        """Start ``process`` as the container's payload and wait for it to end."""
        self.start(process)
        return self.wait(timeout)

    def start(self, process: Process, *, wait: bool = True) -> None:
        """Create the namespaces, set the container up and start ``process`` in it.

        Returns once the payload runs (for an argv: once it was exec'd). A set-up step
        that fails raises :class:`SetupError` naming the step; a pre-start hook that
        fails raises :class:`HookError`. Either way nothing is left behind.

        ``wait=False`` returns as soon as the set-up is under way, so the caller can
        do other work while the container's processes set themselves up; then
        :meth:`ready` (called by :meth:`wait` and :meth:`exec` too) finishes the start
        and raises what :meth:`start` would have. Where the host has a step of its own
        in the middle (a user namespace's id maps, moving the init into its cgroups,
        prestart or create-runtime hooks), ``wait=False`` waits like ``wait=True``.
        The payload's timeout counts from the end of :meth:`ready`.
        """
        self._require_attached("start")
        check_transition(self.id, self._state.status, "start")
        cfg = self.config
        with trace.span("host:pickle spec"):
            spec_bytes = self._pickle_spec(process)
        with trace.span("host:create cgroups"):
            self._cgroups = self._make_cgroups()
        if self._cgroups is not None:  # recorded now, so gc() finds them if we die
            self._state.cgroup_paths = self._cgroups.paths()
            self._save()
        join_fds = self._open_join_files()
        host_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        init_r, init_w = os.pipe()
        _flush_std()
        host_pid = os.getpid()
        # Without a user namespace the init is forked straight from here into a new PID
        # namespace; with one, a bootstrap process creates the namespaces first (the
        # host writes its id maps) and forks the init.
        direct = not cfg.namespaces.user
        new_pid_ns = direct and cfg.namespaces.pid
        host_start = _own_start_time() if direct else None
        t_fork = time.monotonic()
        if new_pid_ns:
            linux.unshare(linux.CLONE_NEWPID)  # for the next child only: undone below
        pid = -1
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                try:
                    trace.mark("host:fork (child side)", t_fork)
                    host_sock.close()
                    os.close(init_w)
                    if direct:
                        init_direct_main(cfg, child_sock, init_r, host_pid, host_start,
                                         join_fds)
                    bootstrap_main(cfg, child_sock, init_r, host_pid, join_fds)
                finally:
                    os._exit(1)
        finally:
            if new_pid_ns and pid != 0:
                linux.setns(_own_pid_namespace(), linux.CLONE_NEWPID)
        trace.mark("host:fork", t_fork)
        child_sock.close()
        os.close(init_r)
        run = _Running(process, True, host_sock, pid, None, FrameReader(), direct=direct)
        self._initial = run
        # Nothing for the host to do between the fork and the payload: the process
        # is handed over now and the container's processes go on without a round trip.
        eager = bool(join_fds) and not cfg.namespaces.user and not cfg.hooks.prestart \
            and not cfg.hooks.create_runtime
        # the host's own child needs no word from a bootstrap: its pid is known, and
        # it is not reaped (nor its pid recycled) before the host waits for it
        known = {"t": "init", "pid": pid, "start": linux.proc_start_time(pid)} \
            if direct else None
        self._pending = _Start(spec_bytes, init_w, bool(join_fds), eager,
                               time.monotonic() + SETUP_TIMEOUT, known)
        _close_all(join_fds)
        if eager:
            try:
                self._hand_over(run, self._pending)
            except OSError:
                # the container's set-up failed already (it closed the socket before
                # the host wrote): ready() reads why from what it sent
                pending = self._pending
                if pending.init_w >= 0:
                    os.close(pending.init_w)
                    pending.init_w = -1
            except BaseException as e:
                pending, self._pending = self._pending, None
                if pending.init_w >= 0:
                    os.close(pending.init_w)
                self._start_failed(e)
        if wait or not eager:
            self.ready()

    def ready(self) -> None:
        """Finish a :meth:`start` made with ``wait=False``: returns once the payload
        runs, or raises what :meth:`start` would have. Harmless otherwise."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        run = self._initial
        assert run is not None
        cfg = self.config
        # a start made ahead may be finished long after it began: its set-up has had
        # its time, and may still have the whole of it from now on
        deadline = max(pending.deadline, time.monotonic() + SETUP_TIMEOUT)
        try:
            if pending.eager:
                with trace.span("host:wait for the container's set-up"):
                    msgs = self._collect(run, ("ready", "started") if pending.init
                                         else ("init", "ready", "started"), deadline)
                init_msg = pending.init or msgs["init"]
            elif pending.init is not None:  # the init is the host's own child
                init_msg, ready_early = pending.init, False
            else:
                ready = ("ready",) if pending.joins else ()
                with trace.span("host:wait for unshare and init"):
                    msg = self._expect(run, ("idmap", "init", *ready), deadline)
                if msg["t"] == "idmap":
                    with _step("write uid/gid maps"):
                        self._write_id_maps(int(msg["pid"]))
                    send_msg(run.sock, {"t": "go"})
                    msg = self._expect(run, ("init", *ready), deadline)
                # An init that joins its cgroups itself goes on without the host and
                # may be ready before the bootstrap has said which pid it got.
                ready_early = msg["t"] == "ready"
                init_msg = self._expect(run, ("init",), deadline) if ready_early else msg
            init_pid = int(init_msg["pid"])
            start = init_msg.get("start")
            st = self._state
            st.init_pid = init_pid
            st.init_start_time = start if isinstance(start, int) else \
                linux.proc_start_time(init_pid)
            self._pidfd = self._open_init(init_pid, st.init_start_time)
            if self._cgroups is not None:
                if not pending.joins:  # else the init joins them itself
                    with _step("cgroups"), trace.span("host:cgroups add init"):
                        self._cgroups.add(init_pid)
                st.cgroup_paths = self._cgroups.paths()
            st.namespace_paths = {name: f"/proc/{init_pid}/ns/{name}" for name, _ in NS_FILES}
            st.cwd = self._cwd(run.process)
            st.owner_pid = os.getpid()
            st.owner_start_time = _own_start_time()  # read once per process
            if not pending.eager:
                if not pending.joins:
                    send_msg(run.sock, {"t": "go"})
                if not ready_early:
                    with trace.span("host:wait for filesystem, hostname, loopback"):
                        self._expect(run, ("ready",), deadline)
                with trace.span("host:save state"):
                    self._save()
                run_hooks("prestart", cfg.hooks.prestart, st)
                run_hooks("create_runtime", cfg.hooks.create_runtime, st)
                self._hand_over(run, pending)
                with trace.span("host:wait for payload fork"):
                    msg = self._expect(run, ("started",), deadline)
            else:
                msg = msgs["started"]
            run.payload_pid = int(msg["pid"])
            self._register(run)
            with trace.span("host:wait for payload set-up (running)"):
                self._confirm(run, deadline)
            st.status = Status.RUNNING
            st.started = time.time()
            self._save()
        except BaseException as e:
            if pending.init_w >= 0:
                os.close(pending.init_w)
                pending.init_w = -1
            self._start_failed(e)
        for index, hook in enumerate(cfg.hooks.poststart):
            try:
                run_hook("poststart", index, hook, self._state)
            except HookError as e:
                self._hook_failed(e)

    @staticmethod
    def _open_init(pid: int, start_time: int | None) -> int | None:
        """A pidfd of the init, or None if it has already ended (a quick payload, when
        the start was finished late): checked after opening, so a recycled pid is
        never taken for it."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        if linux.proc_start_time(pid) != start_time:
            os.close(fd)
            return None
        return fd

    def _hand_over(self, run: _Running, pending: _Start) -> None:
        """The payload's descriptors and spec, to the init."""
        fds, child_fds = self._payload_fds(run)
        try:
            socket.send_fds(run.sock, [json.dumps({"t": "process",
                                                   "size": len(pending.spec)}).encode()], fds)
        finally:
            _close_all(child_fds)
        write_all(pending.init_w, pending.spec)
        os.close(pending.init_w)
        pending.init_w = -1

    def _start_failed(self, e: BaseException) -> NoReturn:
        """Undo a start that failed and raise why, in the user's terms."""
        cfg = self.config
        oom = self._oom_kills()
        self._abort()
        pids = cfg.resources.pids
        if pids is not None and isinstance(e, SetupError) and (
                e.errno == errno.EAGAIN or "Resource temporarily unavailable" in str(e)):
            raise SetupError("pids limit", f"pids={pids} is below what the container needs "
                             "to start (its init and the payload are two processes): "
                             "raise the limit") from None
        if oom and isinstance(e, (SetupError, OSError)):
            from .units import format_size

            limit = cfg.resources.memory
            raise SetupError("memory limit", f"memory={format_size(limit)} "  # type: ignore[arg-type]
                             "is below what the container needs to start (the OOM killer "
                             "ended it during set-up): raise the limit") from None
        raise e

    def _collect(self, run: _Running, types: tuple[str, ...],
                 deadline: float) -> dict[str, dict[str, Any]]:
        """Each of the sync messages ``types``, in whatever order they come."""
        got: dict[str, dict[str, Any]] = {}
        while len(got) < len(types):
            msg = self._expect(run, tuple(t for t in types if t not in got), deadline)
            got[msg["t"]] = msg
        return got

    def exec(self, process: Process) -> Process:
        """Start another process inside the running container (joined with setns).

        Returns ``process``; call ``process.wait()`` for its exit status.
        """
        self._require_attached("exec")
        self.ready()
        check_transition(self.id, self.state().status, "exec")
        st = self._state
        assert st.init_pid is not None
        spec_bytes = self._pickle_spec(process)
        procs = sorted({os.path.join(d, "cgroup.procs") for d in st.cgroup_paths.values()})
        host_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        run = _Running(process, False, host_sock, 0, None, FrameReader())
        fds, child_fds = self._payload_fds(run)
        _flush_std()
        host_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            try:
                host_sock.close()
                exec_main(self.config, child_sock, st.init_pid, host_pid, spec_bytes, fds,
                          procs)
            finally:
                os._exit(1)
        child_sock.close()
        _close_all(child_fds)
        run.monitor_pid = pid
        try:
            deadline = time.monotonic() + SETUP_TIMEOUT
            msg = self._expect(run, ("started",), deadline)
            run.payload_pid = int(msg["pid"])
            self._register(run)
            self._confirm(run, deadline)
        except BaseException:
            self._kill_pid(run.payload_pid)
            self._kill_pid(run.monitor_pid)
            self._reap(run)
            raise
        return process

    # -------------------------------------------------------- start helpers

    def _open_join_files(self) -> list[int]:
        """The cgroup files the init joins its cgroups through (see
        ``Manager.join_files``), opened here, where the permission is checked; empty
        when the host must move the init itself."""
        paths = self._cgroups.join_files() if self._cgroups is not None else None
        fds: list[int] = []
        try:
            for path in paths or ():
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except OSError as e:
            _close_all(fds)
            self._destroy_cgroups()
            raise SetupError("cgroups", f"cannot open {path}: {e.strerror}", e.errno) from None
        return fds

    def _make_cgroups(self) -> Any:
        """The container's cgroups, created with their limits before anything joins;
        None when cgroups are off, or unavailable here and no limit asks for them."""
        cfg = self.config
        if cfg.cgroups == "off":
            return None
        from .cgroups import CgroupError, CgroupUnavailableError, new_manager

        try:
            mgr = new_manager(self._cgroup_name(), cfg.resources, parent=cfg.cgroup_parent)
            mgr.create()
        except CgroupUnavailableError as e:
            if cfg.cgroups == "auto" and not cfg.resources.any():
                return None
            raise SetupError("cgroups", str(e), e.errno) from None
        except CgroupError as e:
            raise SetupError("cgroups", str(e), e.errno) from None
        return mgr

    def _cgroup_name(self) -> str:
        """The container's cgroup: its id, plus a tag of the factory root, so that two
        factories may use the same id at once."""
        import hashlib

        tag = hashlib.sha256(self.factory.root.encode()).hexdigest()[:8]
        return f"{self.id}-{tag}"

    def _seccomp_bpf(self, caps: frozenset[str]) -> bytes | None:
        spec = self.config.seccomp
        if spec is None or spec == "unconfined":
            return None
        from .seccomp import load_profile

        key = (spec, caps, _mtime(spec))
        bpf = _BPF_CACHE.get(key)
        if bpf is None:
            profile = load_profile(spec, capabilities=caps)
            bpf = profile.compile() if profile is not None else b""
            _BPF_CACHE[key] = bpf
        return bpf or None

    def _oom_kills(self) -> int:
        if self._cgroups is None:
            return 0
        try:
            return int(self._cgroups.oom_kills())
        except Exception:
            return 0

    def _require_attached(self, op: str) -> None:
        if not self._attached:
            raise ContainerError(f"container {self.id!r} was loaded from state: {op}() is only "
                                 "possible in the process that created it")
        if self._destroyed:
            raise ContainerError(f"container {self.id!r} was destroyed")

    def _cwd(self, process: Process) -> str:
        return process.cwd or self.config.cwd or os.getcwd()

    def _pickle_spec(self, process: Process) -> bytes:
        import cloudpickle

        if not isinstance(process, Process):
            raise ProcessError(f"expected a Process, got {type(process).__name__}")
        if process._container is not None:
            raise ProcessError(f"{process!r} was already started")
        target = None
        if process.target is not None:
            try:
                target = cloudpickle.dumps((process.target, process.args, process.kwargs))
            except Exception as e:
                raise ProcessError(f"cannot ship {process!r} into the container: "
                                   f"{type(e).__name__}: {e}") from e
        cfg = self.config
        env = dict(os.environ if cfg.env is None else cfg.env)
        env.update(process.env)
        rlimits: dict[str, Rlimit] = {r.name: r for r in cfg.rlimits}
        rlimits.update({r.name: r for r in process.rlimits})
        user = process.user if process.user is not None else cfg.user
        uid = parse_user(user)[0] if user is not None else 0
        caps = CapabilitySets.uniform(cfg.capability_names(), uid=uid)
        _warn_missing_caps(caps.bounding)
        # the payload applies them with the default backend: import it here, once, so
        # that every fork has it (importing python-prctl in each payload costs ms)
        capabilities.get_backend()
        spec = {
            "caps": caps,
            "seccomp": self._seccomp_bpf(caps.bounding),
            "argv": process.argv,
            "target": target,
            "env": env,
            "cwd": self._cwd(process),
            "cwd_explicit": bool(process.cwd or cfg.cwd),
            "rlimits": list(rlimits.values()),
            "user": user,
            "trusted": process.trusted,
            "fresh": [sys.executable, list(sys.path)] if process.fresh else None,
        }
        data: bytes = cloudpickle.dumps(spec)
        return data

    def _payload_fds(self, run: _Running) -> tuple[list[int], list[int]]:
        """Descriptors for the payload's [stdin, stdout, stderr, result] and the ones the
        host opened for it (closed once they were handed over)."""
        process = run.process
        fds: list[int] = []
        opened: list[int] = []
        try:
            for target, spec in enumerate((process.stdin, process.stdout, process.stderr)):
                if spec is None:
                    fd = os.dup(target)
                    opened.append(fd)
                elif spec == DEVNULL:
                    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                    opened.append(fd)
                elif spec == PIPE:
                    if target == 0:
                        raise ProcessError("stdin=PIPE is not supported: use a path, "
                                           "a file or DEVNULL")
                    r, fd = os.pipe()
                    opened.append(fd)
                    os.set_blocking(r, False)
                    run.captures[r] = _Capture(("stdin", "stdout", "stderr")[target],
                                               process.max_output)
                elif isinstance(spec, int):
                    try:
                        os.fstat(spec)
                    except OSError as e:
                        raise ProcessError(f"process.{('stdin', 'stdout', 'stderr')[target]}="
                                           f"{spec}: not an open file descriptor "
                                           f"({e.strerror})") from None
                    fd = spec
                elif isinstance(spec, str):
                    flags = os.O_RDONLY if target == 0 else \
                        os.O_WRONLY | os.O_CREAT | os.O_APPEND
                    fd = os.open(spec, flags | os.O_CLOEXEC, 0o644)
                    opened.append(fd)
                elif hasattr(spec, "fileno"):
                    fd = spec.fileno()
                else:
                    raise ProcessError(f"process.{('stdin', 'stdout', 'stderr')[target]}="
                                       f"{spec!r}: use None, PIPE, DEVNULL, a fd, a file or a path")
                fds.append(fd)
            r, w = os.pipe()
            try:
                fcntl.fcntl(w, _F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
            os.set_blocking(r, False)
            run.result_fd = r
            total = process.max_result_size or DEFAULT_MAX_FRAME
            run.reader = FrameReader(min(total, process.max_frame_size or total), total)
            fds.append(w)
            opened.append(w)
            for fd in process.extra_files:
                try:
                    os.fstat(fd)
                except OSError as e:
                    raise ProcessError(f"process.extra_files: {fd} is not an open file "
                                       f"descriptor ({e.strerror})") from None
                fds.append(fd)
        except BaseException:
            _close_all(opened)
            _close_all(list(run.captures))
            raise
        return fds, opened

    def _write_id_maps(self, pid: int) -> None:
        cfg = self.config
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write("".join(m.line() for m in cfg.effective_uid_mappings()))
        if os.geteuid() != 0:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write("".join(m.line() for m in cfg.effective_gid_mappings()))

    def _expect(self, run: _Running, types: tuple[str, ...], deadline: float) -> dict[str, Any]:
        """The next sync message, which must be one of ``types``; errors become SetupError."""
        while True:
            left = deadline - time.monotonic()
            if not _readable(run.sock, max(left, 0.0)):  # what has come is read anyway
                raise SetupError("bootstrap", f"no answer within {SETUP_TIMEOUT:g} s "
                                 f"(waiting for {'/'.join(types)})")
            try:
                msg = recv_msg(run.sock)
            except (ChannelError, OSError) as e:
                raise SetupError("bootstrap", str(e)) from None
            if msg is None:
                _, status = os.waitpid(run.monitor_pid, 0)
                run.monitor_done = True
                raise SetupError("bootstrap", "the container's set-up process ended early: "
                                 + ExitStatus.from_wait_status(status).describe())
            if msg["t"] == "error":
                err = SetupError(str(msg.get("step")), str(msg.get("message")),
                                 msg.get("errno") if isinstance(msg.get("errno"), int) else None)
                err.remote_traceback = msg.get("traceback")  # type: ignore[attr-defined]
                raise err
            if msg["t"] in types:
                return msg
            if msg["t"] == "init-exit":
                run.init_status = int(msg["status"])
                continue
            if msg["t"] == "exit" and "started" not in types:  # a payload that was quick
                run.payload_status = int(msg["status"])
                continue
            raise SetupError("bootstrap", f"unexpected message {msg['t']!r}")

    def _register(self, run: _Running) -> None:
        key = self._next_key
        self._next_key += 1
        run.process._container = self
        run.process._key = key
        self._procs[key] = run
        if run.process.timeout is not None:
            run.deadline = time.monotonic() + run.process.timeout

    def _confirm(self, run: _Running, deadline: float) -> None:
        """Block until the payload was exec'd (result pipe closed on exec) or its
        callable is about to be called (a ``running`` frame); raise if set-up failed."""
        assert run.result_fd is not None
        while not run.confirmed and run.result_fd is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SetupError("payload", "the payload did not start in time")
            _readable(run.result_fd, left)
            self._read_result(run)
        if run.result_error and not run.confirmed:
            raise SetupError("payload", run.result_error)
        if not run.confirmed:
            run.confirmed = True  # argv: the pipe closed on exec

    def _abort(self) -> None:
        """Undo a failed start: every process gone, nothing left on disk."""
        run = self._initial
        if self._pidfd is not None:
            _pidfd_kill(self._pidfd)
        if run is not None:
            self._kill_pid(run.monitor_pid)
            self._reap(run)
        self._destroy_cgroups()
        self._remove()

    # ---------------------------------------------------------------- waiting

    def wait(self, timeout: float | None = None, *, reap: bool = True) -> ExitStatus:
        """Wait for the payload to end; the container is then stopped.

        ``timeout`` raises :class:`WaitTimeout` and leaves the container running;
        ``Process(timeout=...)`` is the one that kills.

        ``reap=False`` returns as soon as the payload has ended and its results are
        in. Every other process of the container has been sent SIGKILL by then (the
        init does that before it reports the payload's end), but the kernel may still
        be tearing the namespaces down: :meth:`destroy` waits for the rest, so a
        caller can do other work meanwhile.
        """
        self._require_attached("wait")
        self.ready()
        check_transition(self.id, self._state.status, "wait")
        if self._initial is None or self._initial.process._key is None:
            raise ContainerError(f"container {self.id!r} has no payload to wait for")
        with trace.span("host:wait (payload runs, container ends)"):
            return self._wait_process(self._initial.process._key, timeout, reap=reap)

    def _wait_process(self, key: int, timeout: float | None, reap: bool = True) -> ExitStatus:
        run = self._procs[key]
        if run.exit is not None:
            return run.exit
        if not run.initial:
            reap = True

        def ended() -> bool:
            return run.monitor_done or (not reap and run.payload_status is not None
                                        and run.result_fd is None)

        end = None if timeout is None else time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        try:
            if not run.monitor_done:
                sel.register(run.sock, selectors.EVENT_READ, "sync")
            if run.result_fd is not None:
                sel.register(run.result_fd, selectors.EVENT_READ, "result")
            for fd in run.captures:
                sel.register(fd, selectors.EVENT_READ, "capture")
            while not ended():
                now = time.monotonic()
                if run.deadline is not None and now >= run.deadline and not run.timed_out:
                    run.timed_out = True
                    self._kill_run(run)
                    run.deadline = None
                limits = [t - now for t in (end, run.deadline) if t is not None]
                if end is not None and end - now <= 0:
                    raise WaitTimeout(f"container {self.id!r}: still running after "
                                      f"{timeout:g} s")
                for skey, _ in sel.select(max(0.0, min(limits)) if limits else None):
                    what = skey.data
                    if what == "sync":
                        self._read_sync(run)
                        if run.monitor_done:
                            sel.unregister(run.sock)
                    elif what == "result":
                        self._read_result(run)
                        if run.result_fd is None:
                            sel.unregister(skey.fd)
                    else:
                        if not self._read_capture(run, skey.fd):
                            sel.unregister(skey.fd)
        finally:
            sel.close()
        return self._finish(run, reap)

    def _read_sync(self, run: _Running) -> None:
        try:
            msg = recv_msg(run.sock)
        except (ChannelError, OSError):
            msg = None
        if msg is None:
            run.monitor_done = True
        elif msg["t"] == "exit":
            run.payload_status = int(msg["status"])
        elif msg["t"] == "init-exit":
            run.init_status = int(msg["status"])
        elif msg["t"] == "error":
            run.result_error = f"{msg.get('step')}: {msg.get('message')}"

    def _read_result(self, run: _Running) -> None:
        fd = run.result_fd
        assert fd is not None
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        if chunk:
            for kind, payload in run.reader.feed(chunk):
                if run.result_error is not None:
                    break  # nothing after a refused frame is believed
                self._handle_frame(run, kind, payload)
            if run.reader.error is not None:
                self._set_result_error(run, run.reader.error)
            return
        if run.reader.partial:
            self._set_result_error(run, "result channel closed early, in the middle of a frame")
            return
        os.close(fd)
        run.result_fd = None

    def _set_result_error(self, run: _Running, message: str) -> None:
        if run.result_error is None:
            run.result_error = message
        if run.result_fd is not None:  # stop reading: the writer gets EPIPE
            os.close(run.result_fd)
            run.result_fd = None

    def _handle_frame(self, run: _Running, kind: bytes, payload: bytes) -> None:
        if kind == KIND_PICKLE:
            if not run.process.trusted:
                self._set_result_error(run, "the container sent a pickled result, refused "
                                            "because the process is not trusted")
                return
            if run.has_result:
                self._set_result_error(run, "the container sent more than one result")
                return
            import cloudpickle

            run.value = cloudpickle.loads(payload)
            run.has_result = True
            return
        limit = run.process.max_json_items
        if limit is not None and _json_items(payload) > limit:
            self._set_result_error(run, f"a result frame holds more than {limit} JSON items")
            return
        try:
            msg = json.loads(payload)
            t = msg["t"]
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
            self._set_result_error(run, "malformed result frame (not a JSON message)")
            return
        if t == "running":
            run.confirmed = True
        elif t == "message":
            if run.process.on_message is not None and run.callback_error is None:
                try:
                    run.process.on_message(msg.get("data"))
                except BaseException as e:  # raised from wait() once the process is reaped
                    run.callback_error = e
                    if not isinstance(e, Exception):  # Ctrl-C and the like: end it now
                        self._kill_run(run)
        elif t == "exec-error":
            self._set_result_error(run, str(msg.get("message")))
        elif t in ("value", "exception", "value-error"):
            if run.has_result:
                self._set_result_error(run, "the container sent more than one result")
                return
            run.has_result = True
            if t == "value":
                run.value = msg.get("value")
            elif t == "value-error":
                self._set_result_error(run, str(msg.get("message")))
            else:
                run.exception = RemoteException(
                    _cut(str(msg.get("type")), MAX_TYPE),
                    _cut(str(msg.get("message")), MAX_MESSAGE),
                    _cut(str(msg.get("traceback", "")), MAX_TRACEBACK, keep_end=True))
        else:
            self._set_result_error(run, f"unknown result message {str(t)[:40]!r}")

    def _read_capture(self, run: _Running, fd: int) -> bool:
        cap = run.captures[fd]
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            cap.add(chunk)

    def _finish(self, run: _Running, reap: bool = True) -> ExitStatus:
        """Collect what is left once the process (and, for the payload, the container)
        has ended, and build its ExitStatus. ``reap=False``: the payload has ended, the
        monitor is reaped later, by destroy()."""
        if reap:
            self._reap(run)
        if run.result_fd is not None:
            while run.result_fd is not None:
                before = run.result_fd
                self._read_result(run)
                if run.result_fd == before:  # would block: a writer outlived the process
                    os.close(before)
                    run.result_fd = None
        for fd in list(run.captures):
            self._read_capture(run, fd)
        status = run.payload_status if run.payload_status is not None else run.init_status
        extra: dict[str, Any] = dict(
            timed_out=run.timed_out, timeout=run.process.timeout, value=run.value,
            exception=run.exception, result_error=run.result_error, has_result=run.has_result,
            pid=run.payload_pid,
        )
        for fd, cap in run.captures.items():
            extra[cap.name] = cap.value()
            os.close(fd)
        run.captures.clear()
        if (run.process.target is not None and not run.has_result and run.result_error is None
                and status is not None and os.WIFEXITED(status)):
            extra["result_error"] = (f"the process exited with status "
                                     f"{os.WEXITSTATUS(status)} before reporting a result")
        if run.initial and self._cgroups is not None:
            with trace.span("host:read usage"):
                extra.update(self._final_usage(status, run.timed_out))
        if status is None:
            result = ExitStatus(signal=_signal.SIGKILL, **extra)
        else:
            result = ExitStatus.from_wait_status(status, **extra)
        run.exit = result
        if run.initial:
            self._stopped(result, keep_pidfd=not reap)
        if run.callback_error is not None:
            err, run.callback_error = run.callback_error, None
            raise err
        return result

    def _final_usage(self, status: int | None, timed_out: bool) -> dict[str, Any]:
        """Usage and OOM facts, read while the (now empty) cgroup still exists."""
        try:
            stats = self._cgroups.stats().to_dict()
        except Exception:
            stats = None
        kills = self._oom_kills()
        killed = (status is None or (os.WIFSIGNALED(status)
                                     and os.WTERMSIG(status) == _signal.SIGKILL))
        self._state.stats = stats
        return {"stats": stats, "oom_kills": kills,
                "oom_killed": bool(kills and killed and not timed_out),
                "memory_limit": self.config.resources.memory}

    def _reap(self, run: _Running) -> None:
        try:
            run.sock.close()
        except OSError:
            pass
        run.monitor_done = True
        if run.monitor_pid:
            try:
                _, status = os.waitpid(run.monitor_pid, 0)
                if run.direct and run.init_status is None:
                    run.init_status = status  # what a bootstrap would have reported
            except ChildProcessError:
                pass
            run.monitor_pid = 0

    def _stopped(self, result: ExitStatus, keep_pidfd: bool = False) -> None:
        st = self._state
        st.status = Status.STOPPED
        st.finished = time.time()
        st.exit = {"exit_code": result.exit_code, "signal": result.signal,
                   "timed_out": result.timed_out, "oom_killed": result.oom_killed}
        if self._pidfd is not None and not keep_pidfd:
            os.close(self._pidfd)
            self._pidfd = None
        # the other processes run in the container are gone with it
        for other in self._procs.values():
            if not other.initial and other.exit is None:
                self._wait_process(other.process._key or 0, None)
        self._save()

    # ------------------------------------------------------------- usage, freezer

    def _manager(self) -> Any:
        if self._cgroups is None and self._state.cgroup_paths:
            from .cgroups import load_manager

            self._cgroups = load_manager(self._cgroup_name(), self._state.cgroup_paths)
        return self._cgroups

    def stats(self) -> dict[str, Any]:
        """Usage of the container's cgroup: live while it runs, final once stopped
        (memory current/peak/limit, CPU user/system seconds, pids, OOM kills)."""
        self.ready()  # a start made with wait=False is finished first
        st = self.state()
        check_transition(self.id, st.status, "stats")
        if st.status is Status.STOPPED:
            return dict(st.stats or {})
        mgr = self._manager()
        if mgr is None:
            raise ContainerError(f"container {self.id!r} has no cgroups: no usage to report")
        data: dict[str, Any] = mgr.stats().to_dict()
        return data

    def pause(self) -> None:
        """Freeze every process of the container (cgroup freezer), waiting until frozen."""
        self.ready()  # a start made with wait=False is finished first
        st = self.state()
        check_transition(self.id, st.status, "pause")
        mgr = self._manager()
        if mgr is None:
            raise ContainerError(f"container {self.id!r} has no cgroups: pause() needs the "
                                 "freezer (use Config(cgroups='required'))")
        mgr.freeze()
        st.status = Status.PAUSED
        self._save_any()

    def resume(self) -> None:
        """Thaw a paused container."""
        st = self.state()
        check_transition(self.id, st.status, "resume")
        self._manager().thaw()
        st.status = Status.RUNNING
        self._save_any()

    def _save_any(self) -> None:
        """Persist the state; a detached handle may write it too (pause/resume)."""
        write_atomic(os.path.join(self._dir, "state.json"), self._state.to_json())

    def _destroy_cgroups(self) -> None:
        mgr = self._cgroups
        loaded = mgr is None and bool(self._state.cgroup_paths)
        if loaded:
            mgr = self._manager()
        if mgr is None:
            return
        try:
            mgr.destroy()
        except Exception as e:  # reported, the rest of the clean-up goes on
            warnings.warn(f"container {self.id!r}: removing its cgroups failed: {e}",
                          RuntimeWarning, stacklevel=3)
        self._cgroups = None
        if loaded:  # the creator's record of the parent is elsewhere: remove it if empty
            levels = len(self.config.cgroup_parent.strip("/").split("/"))
            for path in set(self._state.cgroup_paths.values()):
                d = os.path.dirname(path)
                for _ in range(levels):
                    try:
                        os.rmdir(d)
                    except OSError:
                        break  # still used by another container, or gone already
                    d = os.path.dirname(d)

    # ------------------------------------------------------------- signalling

    def signal(self, sig: int, all: bool = False) -> None:
        """Send ``sig`` to the container's payload (through its init, which forwards it).

        ``all=True`` sends it to every process in the container. SIGKILL ends the
        whole container either way.
        """
        if self._attached:
            self.ready()  # a start made with wait=False is finished first
        check_transition(self.id, self.state().status, "signal")
        if sig == _signal.SIGKILL or not all:
            self._signal_init(sig)
            return
        for pid in self.pids():
            if pid != self._state.init_pid:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def pids(self) -> list[int]:
        """Host pids of every process in the container's PID namespace, init first."""
        if self._attached:
            self.ready()  # a start made with wait=False is finished first
        st = self.state()
        if st.init_pid is None or not self._init_alive():
            return []
        try:
            ns = os.readlink(f"/proc/{st.init_pid}/ns/pid")
        except OSError:
            return []
        found = [st.init_pid]
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != st.init_pid:
                try:
                    if os.readlink(f"/proc/{name}/ns/pid") == ns:
                        found.append(int(name))
                except OSError:
                    pass
        return found

    def _signal_init(self, sig: int) -> None:
        if self._pidfd is not None:
            _signal.pidfd_send_signal(self._pidfd, sig)
            return
        st = self._state
        if st.init_pid is None:
            return
        try:
            fd = os.pidfd_open(st.init_pid)
        except ProcessLookupError:
            return
        try:  # checked after opening: the pidfd now pins this very process
            if linux.proc_start_time(st.init_pid) == st.init_start_time:
                _signal.pidfd_send_signal(fd, sig)
        finally:
            os.close(fd)

    def _kill_run(self, run: _Running) -> None:
        if run.initial:
            self._signal_init(_signal.SIGKILL)
        else:
            self._kill_pid(run.payload_pid)

    def _kill_pid(self, pid: int | None) -> None:
        if pid:
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---------------------------------------------------------------- destroy

    def destroy(self) -> None:
        """Kill whatever still runs, run poststop hooks and remove all state.

        Poststop hook failures are reported as warnings (and kept in ``hook_errors``).
        Destroying twice is harmless.
        """
        if self._destroyed:
            return
        pending, self._pending = self._pending, None
        if pending is not None:  # started with wait=False and never made ready
            if pending.init_w >= 0:
                os.close(pending.init_w)
            self._abort()
            return
        st = self.state()
        started = st.init_pid is not None
        if st.status in (Status.RUNNING, Status.PAUSED):
            self._signal_init(_signal.SIGKILL)
            if st.status is Status.PAUSED and self._manager() is not None:
                self._manager().thaw()  # frozen processes die only once thawed
            if self._attached and self._initial is not None and self._initial.process._key \
                    is not None:
                self._wait_process(self._initial.process._key, None)
            else:
                self._wait_gone()
        run = self._initial
        # wait(reap=False): finish the end. The init (or bootstrap) may have closed
        # the sync socket already (monitor_done), but it is reaped only here.
        if run is not None and (not run.monitor_done or run.monitor_pid):
            with trace.span("host:reap the init"):
                try:
                    self._signal_init(_signal.SIGKILL)  # ends at once if it has not yet
                except ProcessLookupError:
                    pass  # it had
                self._reap(run)
        with trace.span("host:destroy cgroups"):
            self._destroy_cgroups()
        if started:
            for index, hook in enumerate(self.config.hooks.poststop):
                try:
                    run_hook("poststop", index, hook, st)
                except HookError as e:
                    self._hook_failed(e)
        self._remove()

    def _wait_gone(self, timeout: float = 10.0) -> None:
        st = self._state
        if st.init_pid is None:
            return
        end = time.monotonic() + timeout
        while time.monotonic() < end and self._init_alive():
            time.sleep(0.01)

    def _remove(self) -> None:
        for run in self._procs.values():
            for fd in [run.result_fd, *run.captures]:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        shutil.rmtree(self._dir, ignore_errors=True)
        self._destroyed = True

    def _hook_failed(self, e: HookError) -> None:
        self.hook_errors.append(e)
        warnings.warn(str(e), RuntimeWarning, stacklevel=3)


# ------------------------------------------------------------------ helpers


class _step:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> Literal[False]:
        if isinstance(exc, OSError):
            raise SetupError(self.name, exc.strerror or str(exc), exc.errno) from exc
        return False


_BPF_CACHE: dict[tuple[str, frozenset[str], float], bytes] = {}


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


_warned_caps: set[frozenset[str]] = set()


def _warn_missing_caps(wanted: frozenset[str]) -> None:
    """Warn once per set when this host cannot grant some of the capabilities asked for."""
    missing = wanted - current().bounding
    if missing and missing not in _warned_caps:
        _warned_caps.add(missing)
        warnings.warn(f"capabilities {', '.join(sorted(missing))} are not held by this process "
                      "and cannot be given to containers", RuntimeWarning, stacklevel=4)


def _json_items(data: bytes) -> int:
    """An upper bound of the values a JSON text holds (separators, openers, quotes),
    counted without parsing it."""
    return (data.count(b",") + data.count(b"[") + data.count(b"{") + data.count(b":")
            + data.count(b'"') // 2 + 1)


_own: dict[str, Any] = {}


def _own_pid_namespace() -> int:
    """A descriptor of this process's own PID namespace (for setns back to it after a
    child was forked into a new one); opened once per process."""
    if _own.get("pid") != os.getpid():
        if "fd" in _own:
            os.close(_own["fd"])
        _own["fd"] = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        _own["pid"] = os.getpid()
    fd: int = _own["fd"]
    return fd


def _own_start_time() -> int | None:
    pid = os.getpid()
    if _own.get("start_pid") != pid:
        _own["start"], _own["start_pid"] = linux.proc_start_time(pid), pid
    start: int | None = _own["start"]
    return start


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _readable(fd: int | socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _pidfd_kill(pidfd: int) -> None:
    try:
        _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
    except ProcessLookupError:
        pass

