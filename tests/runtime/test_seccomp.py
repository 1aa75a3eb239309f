"""Seccomp profiles, observed from a forked child under the real kernel.

Each check forks: the child sets no_new_privs, installs the compiled filter with
``apply_bpf``, makes its calls and reports back as JSON through a pipe, then leaves
with ``os._exit``. The pytest process itself is never filtered, and every child is
reaped before the test ends. Where a denial could be mistaken for an ordinary error,
the same probe also runs unfiltered to show the answer is the filter's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import mmap
import os
import platform
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import textwrap
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_isolate.runtime import ConfigError
from pytest_isolate.runtime import seccomp as seccomp_mod
from pytest_isolate.runtime.seccomp import Condition, Profile, Rule, apply_bpf, load_profile

DOCKER_PROFILE = str(Path(__file__).parents[1] / "data" / "docker-seccomp-default.json")


def _seccomp_filter_supported() -> bool:
    try:
        with open("/proc/self/status") as f:
            return any(line.startswith("Seccomp_filters:") for line in f)
    except OSError:
        return False


pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(sys.platform != "linux" or not _seccomp_filter_supported(),
                       reason="needs a Linux kernel with seccomp filters"),
]
needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64",
                                  reason="hand-written x86 machine code")
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the unfiltered control calls need root")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
SYS_IO_URING_SETUP = 425  # the same number on every architecture
SYS_CLONE3 = 435
CLONE_FILES = 0x400
CLONE_NEWUSER = 0x10000000
PTRACE_TRACEME, PTRACE_ATTACH = 0, 16
ADDR_NO_RANDOMIZE = 0x0040000
NO_SUCH_PID = 0x3FFFFFFF


# ----------------------------------------------------------------------------- helpers


def _rc(result: int) -> int:
    """A libc/syscall result as the test reads it: the value, or -errno."""
    return -ctypes.get_errno() if result == -1 else result


def _sys(nr: int, *args: int) -> int:
    return _rc(_libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))


@dataclass
class Outcome:
    value: Any
    error: str | None
    status: int

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None

    def ok(self) -> Any:
        assert self.error is None, self.error
        assert os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0, self.status
        return self.value


def _child(w: int, bpf: bytes | None, fn: Callable[[], Any]) -> None:
    try:
        # A SIGSYS kill must not leave a core file in the working directory.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if bpf is not None:
            apply_bpf(bpf)
        out: dict[str, Any] = {"value": fn()}
    except BaseException as e:
        out = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}
    data = json.dumps(out).encode()
    while data:
        data = data[os.write(w, data):]


def run_filtered(bpf: bytes | None, fn: Callable[[], Any], timeout: float = 60) -> Outcome:
    """Run ``fn`` in a forked child under ``bpf`` (None: unfiltered); always reaped."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _child(w, bpf, fn)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"the filtered child did not finish within {timeout} s")
            if select.select([r], [], [], left)[0]:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        return Outcome(None, None, status)
    msg = json.loads(b"".join(chunks))
    return Outcome(msg.get("value"), msg.get("error"), status)


def _bpf(spec: str, caps: frozenset[str] | None = None) -> bytes:
    profile = load_profile(spec, caps)
    assert profile is not None
    return profile.compile()


def _json_profile(tmp_path: Any, doc: object, name: str = "profile.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


# ------------------------------------------------------------------- what runs inside

SCRIPT = textwrap.dedent("""
    import json, subprocess, tempfile, threading
    box = []
    t = threading.Thread(target=box.append, args=(1,))
    t.start(); t.join()
    with tempfile.TemporaryDirectory() as d:
        pass
    print(json.dumps({"thread": box, "true": subprocess.run(["true"]).returncode}))
""")


def ordinary_python() -> dict[str, Any]:
    """Threads, subprocesses, files and a loopback TCP echo, as a test suite does."""
    out: dict[str, Any] = {}
    seen: list[int] = []
    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["threads"] = sorted(seen)
    out["true"] = subprocess.run(["true"]).returncode
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=30)
    out["python"] = [proc.returncode, proc.stdout.strip(), proc.stderr[-2000:]]

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def echo() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(conn.recv(16))

    t = threading.Thread(target=echo)
    t.start()
    with socket.create_connection(srv.getsockname(), timeout=10) as c:
        c.sendall(b"ping")
        out["echo"] = c.recv(16).decode()
    t.join()
    srv.close()

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f")
        with open(path, "w") as f:
            f.write("data")
        os.rename(path, path + "2")
        with open(path + "2") as f:
            out["file"] = f.read()
    a, b = socket.socketpair()
    a.sendall(b"x")
    out["socketpair"] = b.recv(1).decode()
    a.close()
    b.close()
    return out


EXPECTED_ORDINARY = {
    "threads": [0, 1, 2, 3],
    "true": 0,
    "echo": "ping",
    "file": "data",
    "socketpair": "x",
}


def _check_ordinary(value: dict[str, Any]) -> None:
    python = value.pop("python")
    assert python[:2] == [0, json.dumps({"thread": [1], "true": 0})], python[2]
    assert value == EXPECTED_ORDINARY


def namespace_and_kernel_probes() -> dict[str, int]:
    def ptrace_traceme_in_grandchild() -> int:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if _rc(_libc.ptrace(PTRACE_TRACEME, 0, None, None)) == 0 else 1)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSTI, b"x")
        tiocsti = 0
    except OSError as e:
        tiocsti = -e.errno
    finally:
        os.close(master)
        os.close(slave)
    return {
        "mount": _rc(_libc.mount(b"none", b"/nonexistent-isolate-mnt", b"tmpfs", 0, None)),
        "setns": _rc(_libc.setns(-1, 0)),
        "unshare_newuser": _rc(_libc.unshare(CLONE_NEWUSER)),
        "unshare_files": _rc(_libc.unshare(CLONE_FILES)),
        "clone3": _sys(SYS_CLONE3, 0, 0),
        "io_uring_setup": _sys(SYS_IO_URING_SETUP, 1, 0),
        "ptrace_attach": _rc(_libc.ptrace(PTRACE_ATTACH, NO_SUCH_PID, None, None)),
        "ptrace_traceme": ptrace_traceme_in_grandchild(),
        "personality_query": int(_rc(_libc.personality(ctypes.c_ulong(0xFFFFFFFF))) >= 0),
        "personality_no_aslr": min(0, _rc(_libc.personality(ctypes.c_ulong(ADDR_NO_RANDOMIZE)))),
        "tiocsti": tiocsti,
    }


# ------------------------------------------------------------------- default profile


@needs_root
def test_default_denies_what_reaches_past_the_container():
    bare = run_filtered(None, namespace_and_kernel_probes).ok()
    assert bare["mount"] == -errno.ENOENT
    assert bare["setns"] == -errno.EBADF
    assert bare["clone3"] == -errno.EINVAL
    assert bare["ptrace_attach"] == -errno.ESRCH

    got = run_filtered(_bpf("default"), namespace_and_kernel_probes).ok()
    assert got == {
        "mount": -errno.EPERM,
        "setns": -errno.EPERM,
        "unshare_newuser": -errno.EPERM,
        "unshare_files": 0,
        "clone3": -errno.ENOSYS,  # glibc falls back to clone, whose flags are checked
        "io_uring_setup": -errno.ENOSYS,
        "ptrace_attach": -errno.EPERM,
        "ptrace_traceme": 0,
        "personality_query": 1,
        "personality_no_aslr": -errno.EPERM,
        "tiocsti": -errno.EPERM,
    }


def test_default_denies_namespaces_in_threads_that_existed_before_the_filter():
    """TSYNC: a thread started before apply_bpf is filtered too."""

    def probe() -> list[int]:
        go, done = threading.Event(), threading.Event()
        box: list[int] = []

        def worker() -> None:
            go.wait()
            box.append(_rc(_libc.unshare(CLONE_NEWUSER)))
            done.set()

        t = threading.Thread(target=worker)
        t.start()
        # The filter goes on from this (main) thread, after the worker exists.
        apply_bpf(default_bpf)
        go.set()
        t.join()
        return box

    default_bpf = _bpf("default")
    assert run_filtered(None, probe).ok() == [-errno.EPERM]


@pytest.mark.parametrize("spec", ["default", "strict", "docker"])
def test_ordinary_python_runs(spec):
    if spec == "docker":
        if not os.path.exists(DOCKER_PROFILE):
            pytest.skip(f"Docker's default profile is not at {DOCKER_PROFILE}")
        spec = DOCKER_PROFILE
    _check_ordinary(run_filtered(_bpf(spec), ordinary_python).ok())


def test_capabilities_lift_the_default_profiles_denials():
    def syscalls(p: Profile | None) -> set[str]:
        assert p is not None
        return {r.syscall for r in p.rules}

    plain = syscalls(load_profile("default"))
    admin = syscalls(load_profile("default", frozenset({"CAP_SYS_ADMIN"})))
    assert {"mount", "setns", "unshare", "clone", "clone3", "bpf"} <= plain
    assert not {"mount", "setns", "unshare", "clone", "clone3", "bpf"} & admin
    assert {"keyctl", "ptrace", "personality", "io_uring_setup"} <= admin
    assert "ptrace" not in syscalls(load_profile("default", frozenset({"SYS_PTRACE"})))


# --------------------------------------------------------- the 32-bit ABI (int 0x80)


def _int80(nr: int) -> int:
    """Make i386 syscall ``nr`` with zero arguments through int 0x80; eax comes back."""
    code = (b"\x53"                               # push rbx (callee-saved)
            + b"\xb8" + nr.to_bytes(4, "little")  # mov eax, nr
            + b"\x31\xdb\x31\xc9\x31\xd2"         # xor ebx, ebx; ecx; edx
            + b"\x31\xf6\x31\xff"                 # xor esi, esi; edi
            + b"\xcd\x80"                         # int 0x80
            + b"\x5b\xc3")                        # pop rbx; ret
    page = mmap.mmap(-1, mmap.PAGESIZE,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    result = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
    return int(result)


I386_GETPID, I386_MOUNT = 20, 21


@needs_x86_64
@needs_root
def test_the_32_bit_abi_cannot_bypass_the_filters():
    def probe() -> dict[str, int]:
        return {"getpid": int(_int80(I386_GETPID) == os.getpid()), "mount": _int80(I386_MOUNT)}

    bare = run_filtered(None, probe)
    if bare.error is not None or bare.signal is not None:
        pytest.skip(f"this kernel runs no 32-bit code (int 0x80: {bare.error or bare.signal})")
    assert bare.ok() == {"getpid": 1, "mount": -errno.EFAULT}
    # default covers the x86 ABI with the same rules
    assert run_filtered(_bpf("default"), probe).ok() == {"getpid": 1, "mount": -errno.EPERM}
    # strict covers the native ABI only: any other kills the process
    assert run_filtered(_bpf("strict"), probe).signal == signal.SIGSYS


# -------------------------------------------------------------------- strict profile


def strict_probes() -> dict[str, int]:
    def sock(family: int, kind: int, proto: int = 0) -> int:
        try:
            socket.socket(family, kind, proto).close()
            return 0
        except OSError as e:
            return -e.errno

    def _pair() -> int:
        try:
            for end in socket.socketpair():
                end.close()
            return 0
        except OSError as e:
            return -e.errno

    proc = subprocess.run([sys.executable, "-c", "import json, threading, subprocess"])
    return {
        "mount": _rc(_libc.mount(b"none", b"/nonexistent-isolate-mnt", b"tmpfs", 0, None)),
        "ptrace": _rc(_libc.ptrace(PTRACE_ATTACH, NO_SUCH_PID, None, None)),
        "unshare_files": _rc(_libc.unshare(CLONE_FILES)),
        "clone3": _sys(SYS_CLONE3, 0, 0),
        "packet": sock(socket.AF_PACKET, socket.SOCK_RAW),
        "netlink": sock(socket.AF_NETLINK, socket.SOCK_RAW),
        "raw_inet": sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "tcp6": sock(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_CLOEXEC),
        "udp": sock(socket.AF_INET, socket.SOCK_DGRAM),
        "unix_seqpacket": sock(socket.AF_UNIX, socket.SOCK_SEQPACKET),
        "unix_stream": sock(socket.AF_UNIX, socket.SOCK_STREAM),
        "unix_pair": _pair(),
        "python": proc.returncode,
    }


@needs_root
def test_strict_denies_more_and_still_runs_python():
    bare = run_filtered(None, strict_probes).ok()
    assert bare["packet"] == bare["netlink"] == bare["raw_inet"] == 0  # root may
    assert run_filtered(_bpf("strict"), strict_probes).ok() == {
        "mount": -errno.EPERM,
        "ptrace": -errno.EPERM,
        "unshare_files": -errno.EPERM,
        "clone3": -errno.ENOSYS,
        "packet": -errno.EPERM,
        "netlink": -errno.EPERM,
        "raw_inet": -errno.EPERM,
        "tcp6": 0,
        "udp": 0,
        "unix_seqpacket": -errno.EPERM,  # no way to a host daemon's socket file
        "unix_stream": -errno.EPERM,
        "unix_pair": 0,  # asyncio and friends keep their socket pairs
        "python": 0,
    }


def test_strict_ignores_capabilities():
    assert load_profile("strict", frozenset({"CAP_SYS_ADMIN"})) == load_profile("strict")


# --------------------------------------------------------------------- JSON profiles


def _getcwd() -> str:
    return os.getcwd()


def test_json_profile_with_a_custom_errno(tmp_path):
    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.ENOTRECOVERABLE}],
    })
    out = run_filtered(_bpf(spec), _getcwd)
    assert out.error is not None and out.error.startswith(
        f"OSError: [Errno {errno.ENOTRECOVERABLE}]"), out.error


def test_json_profile_kill_process_kills_with_sigsys(tmp_path):
    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_KILL_PROCESS"}],
    })
    out = run_filtered(_bpf(spec), _getcwd)
    assert out.value is None and out.error is None
    assert out.signal == signal.SIGSYS


def test_json_profile_compares_arguments(tmp_path):
    # socket(AF_INET6, ...) only: the family is argument 0
    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
                      "args": [{"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}]}],
    })

    def probe() -> list[int]:
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.socket(family).close()
                out.append(0)
            except OSError as e:
                out.append(e.errno)
        return out

    assert run_filtered(_bpf(spec), probe).ok() == [0, 97]


@needs_root
def test_dockers_default_profile():
    profile = load_profile(DOCKER_PROFILE)
    assert profile is not None
    assert profile.name == DOCKER_PROFILE
    assert profile.default_action == "errno" and profile.default_errno == errno.EPERM
    assert set(profile.architectures) == {"x86", "x32"} or platform.machine() != "x86_64"
    # Its allow list names syscalls newer than libseccomp 2.5: skipped, and said so.
    assert all(seccomp_mod._resolve(name) == -1 for name in profile.skipped)
    assert not {r.syscall for r in profile.rules} & set(profile.skipped)
    got = run_filtered(profile.compile(), namespace_and_kernel_probes).ok()
    assert got["mount"] == got["setns"] == got["unshare_newuser"] == -errno.EPERM
    assert got["unshare_files"] == -errno.EPERM  # Docker allows unshare only with SYS_ADMIN
    assert got["clone3"] == -errno.ENOSYS
    assert got["ptrace_attach"] == -errno.ESRCH  # allowed since Linux 4.8


def test_docker_includes_and_excludes_follow_the_capabilities():
    plain = load_profile(DOCKER_PROFILE)
    admin = load_profile(DOCKER_PROFILE, frozenset({"CAP_SYS_ADMIN"}))
    assert plain is not None and admin is not None
    assert "mount" not in {r.syscall for r in plain.rules}
    assert "mount" in {r.syscall for r in admin.rules}
    # excludes.caps: without SYS_ADMIN clone3 answers ENOSYS; with it, it is allowed
    assert [r.action for r in plain.rules if r.syscall == "clone3"] == ["errno"]
    assert [r.action for r in admin.rules if r.syscall == "clone3"] == ["allow"]


def test_json_includes_excludes_arches_and_min_kernel(tmp_path):
    goarch = seccomp_mod._native()[1]

    def rule(name: str, **filters: Any) -> dict[str, Any]:
        return {"names": [name], "action": "SCMP_ACT_ERRNO", **filters}

    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            rule("getcwd", includes={"caps": ["CAP_NET_ADMIN"]}),
            rule("chdir", excludes={"caps": ["CAP_CHOWN"]}),
            rule("mkdir", includes={"arches": [goarch]}),
            rule("rmdir", includes={"arches": ["not-this-one"]}),
            rule("rename", excludes={"arches": [goarch]}),
            rule("unlink", includes={"minKernel": "2.6"}),
            rule("link", includes={"minKernel": "999.0"}),
            rule("symlink", excludes={"minKernel": "999.0"}),
        ],
    })
    by_default = load_profile(spec)  # Docker's default caps: CHOWN yes, NET_ADMIN no
    assert by_default is not None
    assert [r.syscall for r in by_default.rules] == ["mkdir", "unlink", "symlink"]
    net_admin = load_profile(spec, frozenset({"NET_ADMIN"}))
    assert net_admin is not None
    assert [r.syscall for r in net_admin.rules] == ["getcwd", "chdir", "mkdir", "unlink",
                                                    "symlink"]


def test_json_args_on_one_index_are_alternatives(tmp_path):
    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
        ]}, {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": 15, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"},
        ]}],
    })
    profile = load_profile(spec)
    assert profile is not None
    assert [r.args for r in profile.rules] == [
        (Condition(0, "==", 0),), (Condition(0, "==", 8),),
        (Condition(0, "==", 2), Condition(1, "masked_eq", 15, 1)),
    ]


def test_names_libseccomp_does_not_know(tmp_path):
    # Skipping an allow rule of a deny-by-default profile leaves the call denied: fine.
    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["getcwd", "not_a_syscall_xyz"], "action": "SCMP_ACT_ALLOW"}],
    })
    profile = load_profile(spec)
    assert profile is not None
    assert profile.skipped == ("not_a_syscall_xyz",)
    assert [r.syscall for r in profile.rules] == ["getcwd"]
    # Names of other architectures go to libseccomp, which uses them where they exist.
    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["chown32"], "action": "SCMP_ACT_ERRNO"}],
    }, "arch.json")
    assert load_profile(spec) is not None
    # Skipping a rule that denies would allow the call: an error naming it and the rule.
    spec = _json_profile(tmp_path, {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
                     {"names": ["getcwdd"], "action": "SCMP_ACT_ERRNO"}],
    }, "typo.json")
    with pytest.raises(ConfigError) as ei:
        load_profile(spec)
    assert ei.value.field == "seccomp"
    assert "syscalls[1]" in str(ei.value) and "'getcwdd'" in str(ei.value)


# ------------------------------------------------------------------------ bad input

BAD_PROFILES: list[tuple[str, object, str]] = [
    ("malformed", '{"defaultAction": "SCMP_ACT_ALLOW",\n  "syscalls": [}',
     "not valid JSON: Expecting value at line 2 column 16"),
    ("unknown-action", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_DENY"}]},
     'syscalls[0].action: unknown action "SCMP_ACT_DENY"'),
    ("unknown-default", {"defaultAction": "ALLOW"}, 'defaultAction: unknown action "ALLOW"'),
    ("bad-op", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQUAL"}]}]},
     'syscalls[0].args[0].op: unknown comparison "SCMP_CMP_EQUAL"'),
    ("bad-index", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "syscalls[0].args[0].index: expected an integer from 0 to 5"),
    ("no-default", {"syscalls": []}, "defaultAction is missing"),
    ("typo-key", {"defaultaction": "SCMP_ACT_ALLOW"}, "unknown key 'defaultaction'"),
    ("bad-arch", {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
     'architectures[0]: unknown architecture "SCMP_ARCH_Z80"'),
    ("bad-errno", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5}]},
     "syscalls[0].errnoRet: errnoRet only goes with SCMP_ACT_ERRNO"),
    ("notify", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}]}, "seccomp agent"),
    ("bad-kernel", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "new"}}]},
     'minKernel "new" is not a version'),
    ("not-an-object", "[]", "expected a JSON object"),
]


@pytest.mark.parametrize(("label", "doc", "message"), BAD_PROFILES,
                         ids=[b[0] for b in BAD_PROFILES])
def test_bad_json_profiles_are_config_errors(tmp_path, label, doc, message):
    spec = _json_profile(tmp_path, doc, f"{label}.json")
    with pytest.raises(ConfigError) as ei:
        load_profile(spec)
    assert ei.value.field == "seccomp"
    assert ei.value.value == spec
    assert message in str(ei.value)


def test_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_profile("defualt")
    assert ei.value.field == "seccomp"
    assert "unknown profile name" in str(ei.value)
    assert "'default', 'strict', 'unconfined'" in str(ei.value)
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="no such file") as ei:
        load_profile(missing)
    assert ei.value.field == "seccomp" and ei.value.value == missing
    with pytest.raises(ConfigError, match="is a directory"):
        load_profile(str(tmp_path) + "/")


def test_profiles_check_their_rules():
    with pytest.raises(ConfigError, match="unknown action 'deny'"):
        Profile("mine", "deny")
    with pytest.raises(ConfigError, match="argument 0 is compared twice"):
        Profile("mine", rules=(Rule("personality", "errno", None,
                                    (Condition(0, "!=", 0), Condition(0, "!=", 8))),))
    with pytest.raises(ConfigError, match="unknown comparison '=~'"):
        Profile("mine", rules=(Rule("personality", args=(Condition(0, "=~", 0),)),))
    with pytest.raises(ConfigError, match="does not know the syscall 'no_such_call'"):
        Profile("mine", rules=(Rule("no_such_call"),)).compile()


# --------------------------------------------------------------- compiling, applying


def test_unconfined_is_no_filter():
    assert load_profile("unconfined") is None


def test_compile_is_cached_by_content(monkeypatch):
    calls = []
    build = seccomp_mod._build_bpf

    def counting(profile: Profile) -> bytes:
        calls.append(profile.name)
        return build(profile)

    monkeypatch.setattr(seccomp_mod, "_build_bpf", counting)
    # an errno no other test uses, so the cache cannot already hold this content
    rule = Rule("getcwd", "errno", 4000 + os.getpid() % 95)
    first = Profile("one", rules=(rule,))
    bpf = first.compile()
    assert len(bpf) % 8 == 0 and len(bpf) >= 8
    assert first.compile() is bpf
    twin = Profile("two", rules=(rule,))  # same content, another name
    assert twin.compile() is bpf
    assert twin != first and hash(Profile("one", rules=(rule,))) == hash(first)
    assert calls == ["one"]


def test_apply_bpf_needs_no_libseccomp():
    """The container side attaches bytes only: pyseccomp is never imported there."""
    bpf = Profile("getcwd-denied", rules=(Rule("getcwd", "errno", errno.EXDEV),)).compile()
    code = textwrap.dedent(f"""
        import ctypes, os, sys
        sys.modules["seccomp"] = sys.modules["pyseccomp"] = None  # importing fails
        from pytest_isolate.runtime.seccomp import apply_bpf
        ctypes.CDLL(None).prctl({PR_SET_NO_NEW_PRIVS}, 1, 0, 0, 0)
        apply_bpf(sys.stdin.buffer.read())
        try:
            os.getcwd()
        except OSError as e:
            print(e.errno)
    """)
    proc = subprocess.run([sys.executable, "-c", code], input=bpf, capture_output=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == [str(errno.EXDEV)]


def test_missing_libseccomp_fails_only_when_seccomp_is_asked_for(monkeypatch):
    monkeypatch.setattr(seccomp_mod, "_binding", None)
    monkeypatch.setitem(sys.modules, "seccomp", None)
    monkeypatch.setitem(sys.modules, "pyseccomp", None)
    seccomp_mod._builtin.cache_clear()
    try:
        assert load_profile("unconfined") is None
        with pytest.raises(ConfigError) as ei:
            load_profile("default")
        assert ei.value.field == "seccomp" and ei.value.value == "default"
        assert "libseccomp" in str(ei.value) and "apt-get install libseccomp2" in str(ei.value)
        with pytest.raises(ConfigError, match="apt-get install libseccomp2"):
            Profile("uncached", rules=(Rule("getcwd", "errno", 4095),)).compile()
    finally:
        seccomp_mod._builtin.cache_clear()


def test_apply_bpf_reports_errors_as_oserror():
    with pytest.raises(OSError) as ei:
        apply_bpf(b"")
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        apply_bpf(b"\x00" * 7)
    assert ei.value.errno == errno.EINVAL

    def garbage() -> int:
        try:  # opcode 0xffff is no BPF instruction: the kernel refuses the program
            apply_bpf(b"\xff\xff\x00\x00\x00\x00\x00\x00")
        except OSError as e:
            return e.errno
        return 0

    assert run_filtered(None, garbage).ok() == errno.EINVAL


def test_personality_rules_deny_exactly_the_other_values():
    allowed = seccomp_mod._PERSONALITIES
    cubes = seccomp_mod._cubes_outside(allowed)

    def denied(x: int) -> bool:
        return any(x & mask == value for mask, value in cubes)

    import random

    rng = random.Random(1)
    samples = [*allowed, *(v ^ 1 << b for v in allowed for b in range(32)),
               *(rng.getrandbits(32) for _ in range(20000))]
    assert all(denied(x) == (x not in allowed) for x in samples)
