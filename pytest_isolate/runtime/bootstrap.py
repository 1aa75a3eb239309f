"""The container side of start-up: everything between the host's fork and the payload.

With a user namespace three processes take part: the bootstrap B (the host's child),
the init I (PID 1 of the new PID namespace) and the payload P (I's child)::

    host                         B                        I (PID 1)             P
    fork -----------------> pdeathsig,
                            fds -> /dev/null,
                            unshare(namespaces)
         <-- idmap -------  (user namespace only)
    write uid/gid maps
         --- go --------->  setresuid(0)
                            fork -----------------> pdeathsig
         <-- init {pid} --                        (v1: joins its cgroups
    place I in cgroups (v2)                          itself, no "go")
         --- go (v2) -----------------------------> mounts, /proc, tmpfs,
                                                    ro root, masked paths,
                                                    hostname, lo up
         <-- ready --------------------------------
    prestart hooks
         --- process {size} + stdio fds ----------> read the process
             (bytes on the init pipe)               fork --------------> signals, stdio,
         <-- started {pid} ------------------------                      env, cwd, rlimits,
                                                    reap zombies,        user, caps,
                                                    forward signals      no_new_privs,
                                                                         seccomp; exec
                                                                         or call, result
         <-- exit {status} ------------------------ (P ended)            frames -> host
         <-- init-exit {status}  (I reaped: nothing of the PID namespace is left)

On cgroup v1 the init joins its cgroups itself, as its first step, by writing ``0``
to the ``tasks`` files the host opened for it (see ``Manager.join_files``): a thread
moving itself skips the kernel's global lock and its RCU grace period, so the move
costs microseconds instead of ~10 ms, and no round trip to the host is needed.

Without a user namespace there is no bootstrap: the host unshares only its PID
namespace for children, forks the init straight into the new one (then sets its own
back with setns), and the init unshares the other namespaces itself
(``init_direct_main``); the host knows the init's pid from its fork, so there is no
``init`` message, and it reaps the init itself (no ``init-exit``). One fork of the host
less. Where the host has no step in the middle (no user namespace, the init joins its
cgroups itself, no prestart or create-runtime hooks), the host sends the process at
once after the fork and the container sets itself up without a round trip
(``Container.start(wait=False)``; ``ready()`` collects the messages later)::

    host                                      I (PID 1)                 P
    unshare(PID); fork; setns back ------> pdeathsig, fds -> /dev/null,
    --- process {size} + stdio fds ------> unshare(the rest), join cgroups,
                                           mounts ... lo up
        <-- ready -------------------------
                                           fork ------------------> (as above)
        <-- started {pid} -----------------

Every message is a JSON object on the sync socket pair. A step that fails sends
``{"t": "error", "step": ..., "errno": ..., "message": ...}`` and exits; the host
turns it into a ``SetupError`` naming the step. Nothing here returns to the
caller: each process leaves through ``os._exit``.

The exec path (a second process in a running container) is ``exec_main``: it joins
the init's namespaces with setns and forks once so the new process is inside the
PID namespace, then runs the same payload code.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from . import capabilities, linux, network, trace
from .channel import KIND_JSON, KIND_PICKLE, recv_msg, send_msg, write_all, write_frame
from .config import Config, Mount, parse_user
from .process import MAX_EXTRA_FILES

# Signals the init forwards to the payload. SIGKILL/SIGSTOP cannot be caught, and a
# SIGKILL of the init ends the whole PID namespace, which is what a kill should do.
FORWARDED = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM, signal.SIGCONT, signal.SIGTSTP,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGPWR,
)

NS_FILES = (  # order of setns: the user namespace first, mount last but one
    ("user", linux.CLONE_NEWUSER), ("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET), ("pid", linux.CLONE_NEWPID), ("cgroup", linux.CLONE_NEWCGROUP),
    ("mnt", linux.CLONE_NEWNS),
)


class StepFailed(Exception):
    def __init__(self, step: str, err: BaseException) -> None:
        self.step = step
        self.err = err


@contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic() if trace.fd() is not None else 0.0
    try:
        yield
    except StepFailed:
        raise
    except BaseException as e:
        raise StepFailed(name, e) from e
    if start:
        trace.mark(f"container:{name}", start)


def report_error(sock: socket.socket, e: BaseException) -> None:
    name, err = (e.step, e.err) if isinstance(e, StepFailed) else ("bootstrap", e)
    msg = {"t": "error", "step": name, "message": f"{type(err).__name__}: {err}",
           "errno": getattr(err, "errno", None)}
    if not isinstance(err, OSError):
        msg["traceback"] = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        send_msg(sock, msg)
    except OSError:
        pass


def scrub_fds(keep: set[int]) -> None:
    """Point every inherited descriptor not in ``keep`` at /dev/null.

    Replacing rather than closing keeps the numbers taken, so a Python object of the
    host that still believes it owns one can never close a descriptor opened later.
    """
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    trace_fd = trace.fd()
    keep = keep | {null} | ({trace_fd} if trace_fd is not None else set())
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep:
            continue
        try:
            os.dup2(null, fd, inheritable=False)
        except OSError:
            pass
    os.close(null)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_main(cfg: Config, sock: socket.socket, init_r: int, host_pid: int,
                   join_fds: list[int]) -> NoReturn:
    """Runs in the host's direct child. Never returns.

    ``join_fds``: the container's cgroup ``tasks`` files, open for writing, which the
    init joins itself through; empty when the host moves the init instead.
    """
    code = 1
    try:
        linux.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != host_pid:  # the host died before pdeathsig was armed
            os._exit(1)
        scrub_fds({0, 1, 2, sock.fileno(), init_r, *join_fds})
        linux.set_process_name("isolate-boot")
        flags = cfg.clone_flags()
        with step("unshare"):
            linux.unshare(flags)
        if cfg.namespaces.user:
            send_msg(sock, {"t": "idmap", "pid": os.getpid()})
            _expect_go(sock)
            # Either way this process holds every capability in the new namespace;
            # without a root mapping it keeps them as the one mapped id.
            if cfg.maps_root():
                with step("become root in the user namespace"):
                    os.setresgid(0, 0, 0)
                    os.setresuid(0, 0, 0)
        pid = os.fork()
        if pid == 0:
            _init_main(cfg, sock, init_r, join_fds)
        os.close(init_r)
        for fd in join_fds:
            os.close(fd)
        # its start time names it for good, even once reaped and its pid recycled
        send_msg(sock, {"t": "init", "pid": pid, "start": linux.proc_start_time(pid)})
        _, status = os.waitpid(pid, 0)
        send_msg(sock, {"t": "init-exit", "status": status})
        code = 0
    except BaseException as e:
        report_error(sock, e)
    finally:
        os._exit(code)


def init_direct_main(cfg: Config, sock: socket.socket, init_r: int, host_pid: int,
                     host_start: int | None, join_fds: list[int]) -> NoReturn:
    """The init, forked straight from the host into the container's new PID namespace
    (without a user namespace there is nothing a bootstrap must do first, and the host
    saves a fork of itself). Unshares the container's other namespaces itself, then
    goes on as an init made by a bootstrap. Never returns."""
    try:
        linux.set_pdeathsig(signal.SIGKILL)
        # its parent is outside its PID namespace (getppid() says 0), but /proc is
        # still the host's here: the host died before pdeathsig was armed?
        if linux.proc_start_time(host_pid) != host_start:
            os._exit(1)
        scrub_fds({0, 1, 2, sock.fileno(), init_r, *join_fds})
        with step("unshare"):
            linux.unshare(cfg.clone_flags() & ~linux.CLONE_NEWPID)
    except BaseException as e:
        report_error(sock, e)
        os._exit(1)
    _init_main(cfg, sock, init_r, join_fds)


def _expect_go(sock: socket.socket) -> None:
    msg = recv_msg(sock)
    if msg is None or msg["t"] != "go":
        os._exit(1)  # the host gave up; it cleans up


# -------------------------------------------------------------------------------- init


def _init_main(cfg: Config, sock: socket.socket, init_r: int, join_fds: list[int]) -> NoReturn:
    code = 1
    try:
        linux.set_pdeathsig(signal.SIGKILL)
        if join_fds:
            with step("cgroups"):  # before anything else: all it does is charged there
                for fd in join_fds:
                    os.write(fd, b"0")
                    os.close(fd)
        linux.set_process_name("isolate-init")
        if not join_fds:
            _expect_go(sock)  # the host has placed this process in its cgroups
        with trace.span("container:filesystem (all mounts)"):
            setup_filesystem(cfg)
        if cfg.hostname is not None:
            with step("hostname"):
                linux.sethostname(cfg.hostname)
        if cfg.network == "none":
            with step("loopback up"):
                network.loopback_up()
        send_msg(sock, {"t": "ready"})
        code = _init_loop(cfg, sock, init_r)
    except BaseException as e:
        report_error(sock, e)
    finally:
        os._exit(code)


def _receive_process(sock: socket.socket, init_r: int) -> tuple[bytes, list[int]] | None:
    data, fds, _, _ = socket.recv_fds(sock, 65536, 4 + MAX_EXTRA_FILES)
    if not data:
        return None
    msg = json.loads(data)
    if msg.get("t") != "process":
        return None
    size = int(msg["size"])
    chunks = []
    while size:
        chunk = os.read(init_r, min(size, 1 << 20))
        if not chunk:
            raise EOFError("init pipe closed early")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks), fds


def _init_loop(cfg: Config, sock: socket.socket, init_r: int) -> int:
    received = _receive_process(sock, init_r)
    if received is None:
        return 0  # the host aborted the start
    spec_bytes, fds = received
    os.close(init_r)
    waited = {signal.SIGCHLD, *FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    payload = os.fork()
    if payload == 0:
        run_payload(cfg, spec_bytes, fds, close=[sock.fileno()])
    for fd in fds:
        os.close(fd)
    send_msg(sock, {"t": "started", "pid": payload})
    status = None
    while status is None:
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            try:
                os.kill(payload, info.si_signo)
            except ProcessLookupError:
                pass
            continue
        while True:  # reap every zombie: orphans are re-parented to us
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == payload:
                status = st
    # The payload's end is the container's: everything else in it is killed before
    # the host hears of it, so a host that moves on at once (wait(reap=False)) leaves
    # nothing running, though the kernel may still be tearing the namespaces down.
    try:
        os.kill(-1, signal.SIGKILL)  # from PID 1: every process of its namespace
    except ProcessLookupError:
        pass
    send_msg(sock, {"t": "exit", "status": status})
    return 0


# -------------------------------------------------------------------------- filesystem


# Devices of the filesystems this container mounted itself (its tmpfs mounts), and
# whether the root is the host's own: mount points are only created where that
# writes nothing to the host.
_own_devices: set[int] = set()
_host_root = True


def _may_create(path: str) -> bool:
    if not _host_root:
        return True
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return os.stat(existing).st_dev in _own_devices


def _ensure_dir(path: str) -> None:
    if os.path.isdir(path):
        return
    if not _may_create(path):
        raise FileNotFoundError(
            _errno.ENOENT, f"{path} does not exist, and the container shares the host's root "
            "filesystem, so it is not created there: create it on the host, or mount below a "
            "tmpfs of the container such as /tmp")
    os.makedirs(path, exist_ok=True)


def _set_readonly(path: str, readonly: bool = True, recursive: bool = True) -> None:
    try:
        linux.mount_setattr_readonly(path, readonly, recursive)
        return
    except OSError as e:
        if e.errno not in (_errno.ENOSYS, _errno.EINVAL):
            raise
    # Older kernels: remount every mount at or below path, keeping its other flags.
    targets = [path]
    if recursive:
        prefix = path.rstrip("/") + "/"
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if mp.startswith(prefix):
                    targets.append(mp)
    for t in targets:
        st = os.statvfs(t)
        keep = st.f_flag & (linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        linux.mount(None, t, None, linux.MS_BIND | linux.MS_REMOUNT | keep
                    | (linux.MS_RDONLY if readonly else 0))


def do_mount(m: Mount, dest: str, source_fd: int | None = None) -> None:
    """Make mount ``m`` at ``dest`` (its destination, under the new root if any)."""
    if m.type == "bind":
        assert m.source is not None and source_fd is not None
        # The source was opened before any mount of the container could hide it
        # (a bind from under /tmp, or from the host before pivot_root).
        source = f"/proc/self/fd/{source_fd}"
        if os.path.isdir(source):
            _ensure_dir(dest)
        elif not os.path.exists(dest):
            _ensure_dir(os.path.dirname(dest))
            if not _may_create(dest):
                _ensure_dir(dest)  # raises with the explanation
            with open(dest, "a"):
                pass
        flags = linux.MS_BIND | (linux.MS_REC if m.recursive else 0)
        linux.mount(source, dest, None, flags)
        # A bind inherits the flags of its source's mount, which a read-only root made
        # read-only: say explicitly what this one is.
        _set_readonly(dest, m.readonly, m.recursive)
        return
    _ensure_dir(dest)
    flags = linux.MS_NOSUID | linux.MS_NODEV | (linux.MS_RDONLY if m.readonly else 0)
    if m.type == "proc":
        linux.mount("proc", dest, "proc", flags | linux.MS_NOEXEC)
        return
    if m.type == "sysfs":
        linux.mount("sysfs", dest, "sysfs", flags | linux.MS_NOEXEC)
        return
    opts = []
    if m.mode is not None:
        opts.append(f"mode={m.mode:o}")
    if m.size is not None:
        opts.append(f"size={m.size}")
    if m.uid is not None:
        opts.append(f"uid={m.uid}")
    if m.gid is not None:
        opts.append(f"gid={m.gid}")
    linux.mount("tmpfs", dest, "tmpfs", flags, ",".join(opts) or None)
    _own_devices.add(os.stat(dest).st_dev)


def setup_filesystem(cfg: Config) -> None:
    """Mounts, in runc's order: private propagation; the root (pivoted into when a
    rootfs is given) made read-only if asked; the configured mounts; then the masked
    and read-only paths, which apply to what the container finally sees."""
    global _host_root
    if not cfg.namespaces.mount:
        return
    _host_root = cfg.rootfs is None
    root = cfg.rootfs or "/"
    prefix = cfg.rootfs or ""
    with step("mount propagation private"):
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    sources: dict[int, int] = {}
    for i, m in enumerate(cfg.mounts):
        if m.type == "bind":
            with step(f"open bind source {m.source}"):
                sources[i] = os.open(m.source or "", os.O_PATH | os.O_CLOEXEC)
    nodes: dict[str, int] = {}
    if cfg.devices == "minimal":
        with step("open device nodes"):
            for name in DEVICE_NODES:
                try:
                    nodes[name] = os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC)
                except FileNotFoundError:
                    pass
    if cfg.rootfs is not None:
        with step(f"rootfs {cfg.rootfs}"):
            linux.mount(cfg.rootfs, cfg.rootfs, None, linux.MS_BIND | linux.MS_REC)
    if cfg.readonly:
        with step("read-only root"):
            _set_readonly(root)
    if cfg.devices == "minimal":
        with step("minimal /dev"):
            _minimal_dev(prefix + "/dev", nodes)
    for fd in nodes.values():
        os.close(fd)
    for i, m in enumerate(cfg.mounts):
        with step(f"mount {m.type} {m.destination}"):
            do_mount(m, prefix + m.destination, sources.get(i))
    for fd in sources.values():
        os.close(fd)
    if cfg.rootfs is not None:
        with step(f"pivot_root {cfg.rootfs}"):
            os.chdir(cfg.rootfs)
            linux.pivot_root(".", ".")
            linux.umount2(".", linux.MNT_DETACH)
            os.chdir("/")
    for path in cfg.masked_paths:
        with step(f"mask {path}"):
            try:
                if os.path.isdir(path):
                    linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY, "size=0")
                else:
                    linux.mount(os.devnull, path, None, linux.MS_BIND)
            except FileNotFoundError:
                pass
    for path in cfg.readonly_paths:
        with step(f"read-only {path}"):
            try:
                linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            except FileNotFoundError:
                continue
            _set_readonly(path)


DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEVICE_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


def _minimal_dev(dev: str, nodes: dict[str, int]) -> None:
    """A tmpfs at ``dev`` holding the host's harmless device nodes (bound in, since
    the tmpfs itself is nodev), a new devpts instance and the usual links: no block
    device, loop-control, kmsg, userfaultfd or vsock of the host's."""
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                "mode=755,size=1m")
    _own_devices.add(os.stat(dev).st_dev)
    for name, fd in nodes.items():
        target = os.path.join(dev, name)
        with open(target, "w"):
            pass
        linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND)
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts",
                linux.MS_NOSUID | linux.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    for name, target in DEVICE_LINKS:
        os.symlink(target, os.path.join(dev, name))


# ----------------------------------------------------------------------------- payload


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def _reset_signals(for_python: bool) -> None:
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    if for_python:  # what a fresh interpreter has
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def run_payload(cfg: Config, spec_bytes: bytes, fds: list[int], close: list[int]) -> NoReturn:
    """Become the payload: set up the process and exec or call. Never returns.

    ``fds`` are [stdin, stdout, stderr, result] as received from the host.
    """
    result_fd = fds[3]
    code = 127
    try:
        import cloudpickle

        t_spec = time.monotonic()
        spec: dict[str, Any] = cloudpickle.loads(spec_bytes)
        trace.mark("payload:load spec", t_spec)
        is_python = spec.get("argv") is None
        for fd in close:
            os.close(fd)
        _reset_signals(is_python)
        linux.set_process_name("isolate-payload")
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target, inheritable=True)
        for fd in fds[:3]:
            if fd > 2:
                os.close(fd)
        result_fd = _place_extra_files(result_fd, fds[4:], inherit=not is_python)
        os.set_inheritable(result_fd, False)
        # The payload, its children and theirs are the OOM killer's first choice
        # inside the container; the init and the bootstrap stay out of its way.
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        env = dict(spec["env"])
        fresh = spec.get("fresh")
        if is_python and fresh:
            # the call goes to a new interpreter: the pickled call in a memfd it
            # inherits, made now while every system call is still allowed
            call_fd = os.memfd_create("isolate-call", 0)
            write_all(call_fd, spec["target"])
            os.lseek(call_fd, 0, os.SEEK_SET)
            os.set_inheritable(result_fd, True)
            env[FRESH_ENV] = f"{call_fd},{result_fd},{int(bool(spec.get('trusted')))}"
        cwd = spec["cwd"]
        with step(f"chdir {cwd}"):
            try:
                os.chdir(cwd)
            except FileNotFoundError:
                if spec.get("cwd_explicit", True):
                    raise
                os.chdir("/")  # the host's cwd is hidden inside (under /tmp, say)
        import resource

        with step("rlimits"):
            for r in spec["rlimits"]:
                resource.setrlimit(r.resource, r.values())
        user = spec.get("user")
        caps = spec.get("caps")
        if user is not None:
            with step(f"user {user}"):
                uid, gid = parse_user(user)
                gid = uid if gid is None else gid
                if caps is not None:
                    capabilities.prepare_uid_change()
                try:
                    os.setgroups([])
                except PermissionError:
                    # a user namespace made without root denies setgroups(2): the
                    # invoking user's groups stay (unmapped ones show as nogroup)
                    if not _setgroups_denied():
                        raise
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
        bpf = spec.get("seccomp")
        if bpf and not cfg.no_new_privs:
            # Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it
            # while the payload still holds it, before the capabilities are dropped.
            with step("seccomp"):
                from .seccomp import apply_bpf

                apply_bpf(bpf)
        if caps is not None:
            with step("capabilities"):
                capabilities.apply(caps)
        if cfg.no_new_privs:
            with step("no_new_privs"):
                linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            if bpf:  # last of all, so that nothing after it needs a denied call
                with step("seccomp"):
                    from .seccomp import apply_bpf

                    apply_bpf(bpf)
        if not is_python:
            argv = spec["argv"]
            try:
                os.execvpe(argv[0], argv, env)
            except OSError as e:
                _send_json(result_fd, {"t": "exec-error", "errno": e.errno,
                                       "message": f"{argv[0]}: {e.strerror}"})
                os._exit(127)
        if fresh:
            executable, path = fresh
            os.execve(executable, [executable, "-c", FRESH_CODE, json.dumps(path)], env)
        os.environ.clear()
        os.environ.update(env)
        if cfg.env is not None:  # an environment of its own: the host's must not linger
            _forget_host_environment(env)
        code = _call(spec, result_fd)
    except StepFailed as e:
        _send_json(result_fd, {"t": "exec-error", "errno": getattr(e.err, "errno", None),
                               "message": f"{e.step}: {e.err}"})
    except BaseException as e:
        _send_json(result_fd, {"t": "exec-error", "errno": getattr(e, "errno", None),
                               "message": f"payload set-up: {type(e).__name__}: {e}"})
    finally:
        os._exit(code)


def _place_extra_files(result_fd: int, extra: list[int], inherit: bool) -> int:
    """Put ``Process(extra_files=...)`` at fds 3, 4, ... in order (as runc does with
    ExtraFiles), moving the result channel above them. Returns its new number.
    Inheritable only for an exec'd program: a callable's children do not get them."""
    if not extra:
        return result_fd
    top = 3 + len(extra)
    moved_result = fcntl.fcntl(result_fd, fcntl.F_DUPFD_CLOEXEC, top)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top) for fd in extra]
    for fd in {result_fd, *extra}:
        os.close(fd)
    for index, fd in enumerate(moved):
        os.dup2(fd, 3 + index, inheritable=inherit)
        os.close(fd)
    return moved_result


FRESH_ENV = "PYTEST_ISOLATE_FRESH_CALL"
FRESH_CODE = ("import sys, json; sys.path[:] = json.loads(sys.argv.pop(1)); "
              "from pytest_isolate.runtime.bootstrap import fresh_main; fresh_main()")


def fresh_main() -> NoReturn:
    """The new interpreter of a ``Process(fresh=True)``: read the call, make it."""
    call_fd, result_fd, trusted = (int(x) for x in os.environ.pop(FRESH_ENV).split(","))
    code = 127
    try:
        os.set_inheritable(result_fd, False)
        chunks = []
        while True:
            chunk = os.read(call_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(call_fd)
        code = _call({"target": b"".join(chunks), "trusted": bool(trusted)}, result_fd)
    finally:
        os._exit(code)


def _forget_host_environment(env: dict[str, str]) -> None:
    """A forked payload given an environment of its own still holds the host's in
    memory: Python's ``posix.environ`` copy, and the strings the kernel put on the
    stack at exec (what ``/proc/self/environ`` shows), which ``unsetenv`` leaves in
    place. Replace the one and zero the other."""
    import ctypes
    import posix

    posix.environ.clear()
    posix.environ.update({k.encode(): v.encode() for k, v in env.items()})
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # fields 50 and 51 of stat(5), counted from 1; the split starts at field 3
        start, end = int(fields[50 - 3]), int(fields[51 - 3])
    except (OSError, IndexError, ValueError):
        return
    if 0 < start < end:
        ctypes.memset(start, 0, end - start)


_result_fd: int | None = None


def emit(data: Any) -> None:
    """From inside a callable payload: send ``data`` (JSON-compatible) to the host now.

    The host passes it to ``Process(on_message=...)`` while the payload runs, so what
    was sent survives a later crash. Raises ``TypeError`` for data that is not
    JSON-compatible and ``RuntimeError`` outside a payload.
    """
    if _result_fd is None:
        raise RuntimeError("emit() is only available inside a container's callable payload")
    write_frame(_result_fd, KIND_JSON, json.dumps({"t": "message", "data": data}).encode())


def _send_json(fd: int, obj: dict[str, Any]) -> None:
    try:
        write_frame(fd, KIND_JSON, json.dumps(obj).encode())
    except OSError:
        pass


def _exception_data(e: BaseException) -> dict[str, Any]:
    t = type(e)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    try:
        message = str(e)
    except BaseException:
        message = "<str() of the exception failed>"
    try:
        # the frames of this package that lead to the user's code are not theirs
        start = e.__traceback__
        while start is not None and start.tb_next is not None and \
                start.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            start = start.tb_next
        tb = "".join(traceback.format_exception(t, e, start))
    except BaseException:
        tb = ""
    return {"t": "exception", "type": name[:MAX_TYPE], "message": _cut(message, MAX_MESSAGE),
            "traceback": _cut(tb, MAX_TRACEBACK, keep_end=True)}


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
MAX_TYPE = 200
MAX_MESSAGE = 64 * 1024
MAX_TRACEBACK = 256 * 1024


def _cut(text: str, limit: int, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    note = f"[... {len(text) - limit} characters cut ...]"
    return f"{note}\n{text[-limit:]}" if keep_end else f"{text[:limit]}\n{note}"


def _fresh_std_streams() -> None:
    """sys.stdin/stdout/stderr as a fresh interpreter has them, on fds 0-2.

    The host's may be anything (pytest's capture files, a closed stream); output is
    written through at once so that what was printed before a crash reaches the host.
    """
    import io

    enc = sys.getfilesystemencoding()
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        if fd == 0:
            stream = io.TextIOWrapper(io.BufferedReader(raw), encoding=enc)
        else:
            stream = io.TextIOWrapper(
                raw, encoding=enc, write_through=True,  # type: ignore[arg-type]
                errors="backslashreplace" if fd == 2 else "strict")
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _call(spec: dict[str, Any], result_fd: int) -> int:
    import faulthandler

    import cloudpickle

    global _result_fd
    _result_fd = result_fd
    _fresh_std_streams()
    # The host may have enabled faulthandler (pytest does); its signal handlers were
    # reset above, and enable() alone would not install them again.
    faulthandler.disable()
    faulthandler.enable(file=sys.stderr, all_threads=True)
    _send_json(result_fd, {"t": "running"})
    code = 0
    try:
        with trace.span("payload:load target"):
            fn, args, kwargs = cloudpickle.loads(spec["target"])
        with trace.span("payload:call"):
            value = fn(*args, **kwargs)
        if spec.get("trusted"):
            payload = cloudpickle.dumps(value)
            write_frame(result_fd, KIND_PICKLE, payload)
        else:
            try:
                text = json.dumps({"t": "value", "value": value})
            except (TypeError, ValueError) as e:
                text = json.dumps({"t": "value-error",
                                   "message": f"the return value ({type(value).__name__}) is "
                                              f"not JSON-compatible: {e}; return plain data or "
                                              "pass trusted=True"})
            write_frame(result_fd, KIND_JSON, text.encode())
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
        _send_json(result_fd, _exception_data(e))
    except BaseException as e:
        code = 1
        _send_json(result_fd, _exception_data(e))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return code


# -------------------------------------------------------------------------------- exec


def exec_main(cfg: Config, sock: socket.socket, init_pid: int, host_pid: int,
              spec_bytes: bytes, fds: list[int], cgroup_procs: list[str]) -> NoReturn:
    """Runs in a fresh child of the host: join the container, fork, place the new
    process in the container's cgroups before it runs anything, run the payload."""
    code = 1
    try:
        linux.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != host_pid:
            os._exit(1)
        scrub_fds({0, 1, 2, sock.fileno(), *fds})
        with step("open cgroups"):  # before setns: the container may not see them
            procs = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in cgroup_procs]
        ns_fds = []
        with step("open namespaces"):
            own = {}
            for name, flag in NS_FILES:
                path = f"/proc/{init_pid}/ns/{name}"
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue  # the container shares this one with the host
                own[name] = flag
                ns_fds.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
        for name, fd, flag in ns_fds:
            with step(f"setns {name}"):
                linux.setns(fd, flag)
            os.close(fd)
        if "user" in own and cfg.maps_root():
            with step("become root in the user namespace"):
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
        gate_r, gate_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            linux.set_pdeathsig(signal.SIGKILL)
            os.close(gate_w)
            if os.read(gate_r, 1) != b"1":  # placed in the cgroups, or told to give up
                os._exit(1)
            os.close(gate_r)
            for fd in procs:
                os.close(fd)
            run_payload(cfg, spec_bytes, fds, close=[sock.fileno()])
        os.close(gate_r)
        with step("join cgroups"):
            for fd in procs:
                os.write(fd, str(pid).encode())
                os.close(fd)
        os.write(gate_w, b"1")
        os.close(gate_w)
        for fd in fds:
            os.close(fd)
        send_msg(sock, {"t": "started", "pid": pid})
        _, status = os.waitpid(pid, 0)
        send_msg(sock, {"t": "exit", "status": status})
        code = 0
    except BaseException as e:
        report_error(sock, e)
    finally:
        os._exit(code)
