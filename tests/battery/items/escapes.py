"""Escape attempts under the built-in ``untrusted`` profile. Each test makes the
attempt and asserts that it failed; the harness checks the host from outside too.
BATTERY_SECRET (environment) and BATTERY_SECRET_FILE (a file under /root) are set by
the harness."""

import ctypes
import errno
import os
import signal
import socket

import pytest

pytestmark = pytest.mark.isolated(profile="untrusted")

EXPECT = {
    "test_host_environment_secrets_are_not_passed": ("passed", ""),
    "test_home_directories_are_hidden": ("passed", ""),
    "test_private_files_are_unreadable": ("passed", ""),
    "test_readonly_root_refuses_writes": ("passed", ""),
    "test_the_pytest_process_is_invisible_and_unsignalable": ("passed", ""),
    "test_privileged_calls_are_refused": ("passed", ""),
    "test_no_new_namespaces_or_setns": ("passed", ""),
    "test_raw_sockets_are_refused": ("passed", ""),
    "test_only_loopback_is_reachable": ("passed", ""),
    "test_sys_shows_the_container_not_the_host": ("passed", ""),
    "test_chroot_is_refused": ("passed", ""),
    "test_host_hostname_and_clock_cannot_change": ("passed", ""),
    "test_host_environment_is_not_in_memory_either": ("passed", ""),
    "test_host_daemon_sockets_are_out_of_reach": ("passed", ""),
    "test_only_harmless_devices": ("passed", ""),
    "test_stdout_cannot_fill_the_host_disk": ("failed", "memory limit 64M exceeded"),
    "test_cannot_end_the_run": ("failed", "tried to end the run"),
    # tmp_path is a tmpfs counted in the memory limit: the limit ends the attempt
    "test_cannot_fill_the_host_disk_through_tmp_path": ("failed",
                                                        "memory limit 256M exceeded"),
}

libc = ctypes.CDLL(None, use_errno=True)


def refused(result):
    """A raw libc call failed with a permission error (EPERM/EACCES, or ENOSYS from a
    seccomp filter)."""
    err = ctypes.get_errno()
    return result == -1 and err in (errno.EPERM, errno.EACCES, errno.ENOSYS)


def test_host_environment_secrets_are_not_passed():
    assert "BATTERY_SECRET" not in os.environ
    assert all("BATTERY_SECRET" not in k for k in os.environ)
    with pytest.raises(OSError):  # pid 1 (the container's init) is not ours to read
        open("/proc/1/environ").read()


def test_home_directories_are_hidden():
    import sys

    # what is left in a home is only the way to the interpreter and sys.path entries
    # living there (bound back read-only)
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, *sys.path) if p}
    for home in ("/root", *(os.path.join("/home", d) for d in os.listdir("/home"))):
        for name in os.listdir(home):
            path = os.path.join(home, name)
            assert any(n == path or n.startswith(path + "/") for n in needed), path
    assert not os.path.exists("/root/.battery-secret")


def test_private_files_are_unreadable():
    for path in ("/etc/shadow", "/etc/gshadow"):
        if os.path.exists(path):
            with pytest.raises(PermissionError):
                open(path).read()


def test_readonly_root_refuses_writes(tmp_path):
    for path in ("/etc/battery-pwned", "/usr/battery-pwned", "/var/battery-pwned",
                 os.path.join(os.path.dirname(__file__), "battery-pwned")):
        with pytest.raises(OSError) as info:
            open(path, "w")
        assert info.value.errno in (errno.EROFS, errno.EACCES), path
    (tmp_path / "ok").write_text("the test's own tmp_path is writable")
    open("/tmp/ok", "w").close()


def test_the_pytest_process_is_invisible_and_unsignalable():
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    assert pids[0] == 1 and len(pids) < 10, pids
    assert open("/proc/1/comm").read().strip() == "isolate-init"
    try:
        os.kill(-1, signal.SIGKILL)  # every process this one may signal
    except ProcessLookupError:
        pass  # there is none
    PTRACE_ATTACH = 16
    assert refused(libc.ptrace(PTRACE_ATTACH, 1, None, None))


def test_privileged_calls_are_refused():
    assert refused(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))
    assert refused(libc.umount2(b"/proc", 2))
    assert refused(libc.syscall(175, None, 0, b""))  # init_module
    assert refused(libc.syscall(313, -1, b"", 0))  # finit_module
    assert refused(libc.syscall(250, 0, 0, 0, 0, 0))  # keyctl
    assert refused(libc.syscall(321, 0, None, 0))  # bpf
    attr = ctypes.create_string_buffer(128)
    assert refused(libc.syscall(298, attr, 0, -1, -1, 0))  # perf_event_open
    assert refused(libc.syscall(169, 0xfee1dead, 672274793, 0x4321fedc, None))  # reboot


def test_no_new_namespaces_or_setns():
    for flag in (0x10000000, 0x00020000, 0x20000000, 0x40000000, 0x04000000):
        # user, mount, pid, net, uts
        assert refused(libc.unshare(flag)), hex(flag)
    fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    try:
        assert refused(libc.setns(fd, 0))
    finally:
        os.close(fd)


def test_raw_sockets_are_refused():
    for family, kind in ((socket.AF_INET, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_RAW),
                         (socket.AF_NETLINK, socket.SOCK_RAW)):
        with pytest.raises(OSError) as info:
            socket.socket(family, kind)
        assert info.value.errno in (errno.EPERM, errno.EACCES, errno.EAFNOSUPPORT)


def test_only_loopback_is_reachable():
    for address in (("203.0.113.7", 80), ("1.1.1.1", 53), ("10.0.0.1", 22)):
        with pytest.raises(OSError) as info:
            socket.create_connection(address, timeout=2)
        assert info.value.errno == errno.ENETUNREACH  # no route at all, not a timeout
    server = socket.create_server(("127.0.0.1", 0))
    with socket.create_connection(server.getsockname(), timeout=2):
        pass
    server.close()


def test_sys_shows_the_container_not_the_host():
    assert os.listdir("/sys/class/net") == ["lo"]
    assert not os.path.exists("/sys/fs/cgroup/memory")  # the host's cgroup tree is not here
    with pytest.raises(OSError) as info:
        open("/sys/kernel/mm/transparent_hugepage/enabled", "w")
    assert info.value.errno in (errno.EROFS, errno.EACCES)


def test_chroot_is_refused():
    assert refused(libc.chroot(b"/tmp"))
    assert os.path.realpath("/proc/self/root") == "/"


def test_host_hostname_and_clock_cannot_change():
    assert socket.gethostname() == "sandbox"
    assert refused(libc.sethostname(b"pwned", 5))
    ts = (ctypes.c_long * 2)(0, 0)
    assert refused(libc.clock_settime(0, ts))
    assert refused(libc.settimeofday(ts, None))


@pytest.mark.isolated(memory="256M")
def test_cannot_fill_the_host_disk_through_tmp_path(tmp_path):
    chunk = b"\x03" * 2**20
    with open(tmp_path / "big", "wb") as f:
        for _ in range(4096):  # 4 GiB, were it the host's disk
            f.write(chunk)


def test_host_environment_is_not_in_memory_either():
    import ctypes
    import posix
    import re

    stack = b""
    with open("/proc/self/maps") as f:
        for line in f:
            if "[stack]" in line:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                stack = ctypes.string_at(lo, hi - lo)
    assert stack and not re.search(rb"BATTERY_SECRET=", stack)
    assert not any(b"BATTERY_SECRET" in k for k in posix.environ)


def test_host_daemon_sockets_are_out_of_reach():
    assert os.path.exists("/var/tmp/battery-host.sock")
    with pytest.raises(PermissionError):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("/var/tmp/battery-host.sock")
        s.recv(100)
    with pytest.raises(OSError):
        socket.socket(40, socket.SOCK_STREAM)  # AF_VSOCK: the hypervisor's side


def test_only_harmless_devices():
    assert sorted(os.listdir("/dev")) == sorted([
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "fd", "stdin",
        "stdout", "stderr", "shm"])


@pytest.mark.isolated(memory="64M")
def test_stdout_cannot_fill_the_host_disk():
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    libc.fallocate(1, 0, 0, 4 * 2**30)  # 4 GiB of "output", charged to this test


def test_cannot_end_the_run():
    pytest.exit("all good", returncode=0)
