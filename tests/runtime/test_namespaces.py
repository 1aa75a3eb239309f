"""Each namespace and mount is observed from inside the container and from the host."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from pytest_isolate.runtime import PIPE, Config, IDMap, Mount, Namespaces, Process


def _inside_view():
    import os

    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    with open("/proc/1/cmdline", "rb") as f:
        init_cmd = f.read()
    with open("/proc/1/comm") as f:
        init_comm = f.read().strip()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "self": os.readlink("/proc/self"),
        "pids": pids,
        "init_comm": init_comm,
        "init_is_python": b"python" in init_cmd,
        "pidns": os.readlink("/proc/self/ns/pid"),
    }


def test_pid1_is_the_init_and_proc_matches_the_namespace(run):
    st = run(_inside_view)
    v = st.value
    assert st.ok, st
    assert v["pid"] != 1 and v["ppid"] == 1
    assert v["self"] == str(v["pid"])  # /proc belongs to this PID namespace
    assert v["pids"] == [1, v["pid"]]
    assert v["init_comm"] == "isolate-init"
    assert v["pidns"] != os.readlink("/proc/self/ns/pid")


def test_hostname_is_set_inside_and_unchanged_outside(run):
    host = socket.gethostname()
    st = run(socket.gethostname, Config(hostname="box-1"))
    assert st.value == "box-1"
    assert socket.gethostname() == host


def _net_view():
    import socket

    names = [n for _, n in socket.if_nameindex()]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname(), timeout=2)
    conn, _ = srv.accept()
    cli.sendall(b"ping")
    echoed = conn.recv(4)
    for s in (cli, conn, srv):
        s.close()
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=2)
        outside = "reached"
    except OSError as e:
        outside = e.errno
    return {"ifaces": names, "echo": echoed.decode(), "outside": outside}


def test_loopback_up_and_nothing_else_reachable(run):
    st = run(_net_view)
    assert st.ok, st
    v = st.value
    assert v["ifaces"] == ["lo"]
    assert v["echo"] == "ping"
    assert v["outside"] == errno.ENETUNREACH


def test_network_host_shares_the_host_interfaces(run):
    st = run(lambda: [n for _, n in socket.if_nameindex()], Config(network="host"))
    assert sorted(st.value) == sorted(n for _, n in socket.if_nameindex())


def _tmpfs_marker():
    import os

    with open("/tmp/inside-marker", "w") as f:
        f.write("x")
    with open("/dev/shm/inside-marker", "w") as f:
        f.write("x")
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    return {"tmp": os.listdir("/tmp"), "shm": os.listdir("/dev/shm"),
            "scratch": " /tmp/scratch " in mounts}


def test_tmp_and_shm_are_private_and_mounts_invisible_on_host(run, tmp_path):
    probe = "/tmp/host-marker-isolate-test"
    with open(probe, "w") as f:
        f.write("host")
    try:
        mounts_before = open("/proc/self/mountinfo").read()
        cfg = Config(mounts=(*Config().mounts, Mount("/tmp/scratch", "tmpfs", size="1M")))
        st = run(_tmpfs_marker, cfg)
        assert st.ok, st
        assert sorted(st.value["tmp"]) == ["inside-marker", "scratch"]
        assert st.value["shm"] == ["inside-marker"] and st.value["scratch"]
        assert not os.path.exists("/tmp/inside-marker")
        assert not os.path.exists("/dev/shm/inside-marker")
        assert not os.path.exists("/tmp/scratch")
        assert open("/proc/self/mountinfo").read() == mounts_before
    finally:
        os.unlink(probe)


def _write_attempts(paths):
    import errno

    out = {}
    for p in paths:
        try:
            with open(p, "w") as f:
                f.write("x")
            out[p] = "ok"
        except OSError as e:
            out[p] = errno.errorcode[e.errno]
    return out


@pytest.fixture
def host_dir():
    """A directory on the host's root filesystem (not under /tmp, which containers hide)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="isolate-test-", dir="/var/tmp")
    yield d
    shutil.rmtree(d)


def test_tmp_path_is_hidden_unless_bound(run, tmp_path):
    (tmp_path / "f").write_text("host")
    plain = run(os.path.exists, args=(str(tmp_path / "f"),))
    bound = run(os.path.exists, Config(mounts=(*Config().mounts,
                                               Mount(str(tmp_path), source=str(tmp_path)))),
                args=(str(tmp_path / "f"),))
    assert (plain.value, bound.value) == (False, True)


def test_readonly_root_refuses_writes_but_tmp_and_binds_stay_writable(run, tmp_path, host_dir):
    work = tmp_path / "work"
    work.mkdir()
    target = os.path.join(host_dir, "host-file")
    cfg = Config(readonly=True,
                 mounts=(*Config().mounts, Mount(str(work), "bind", source=str(work))))
    st = run(_write_attempts, cfg,
             args=([target, "/etc/isolate-probe", "/tmp/ok", str(work / "ok"), "/dev/null"],))
    assert st.ok, st
    assert st.value == {target: "EROFS", "/etc/isolate-probe": "EROFS", "/tmp/ok": "ok",
                        str(work / "ok"): "ok", "/dev/null": "ok"}
    assert not os.path.exists(target)
    assert (work / "ok").read_text() == "x"


def test_without_readonly_the_host_root_is_writable(run, host_dir):
    target = os.path.join(host_dir, "written")
    st = run(_write_attempts, args=([target],))
    assert st.value == {target: "ok"}
    assert open(target).read() == "x"


def test_mount_point_is_never_created_on_the_host_root(factory):
    from pytest_isolate.runtime import SetupError

    cfg = Config(mounts=(*Config().mounts, Mount("/isolate-nowhere", "tmpfs")))
    c = factory.create("m", cfg)
    with pytest.raises(SetupError) as ei:
        c.start(Process(["true"]))
    assert ei.value.step == "mount tmpfs /isolate-nowhere"
    assert "shares the host's root filesystem" in str(ei.value)
    assert not os.path.exists("/isolate-nowhere")
    assert factory.list() == []


def test_readonly_bind_mount(run, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cfg = Config(mounts=(*Config().mounts, Mount("/tmp/data", "bind", source=str(src),
                                                 readonly=True)))
    st = run(_write_attempts, cfg, args=(["/tmp/data/f"],))
    assert st.value == {"/tmp/data/f": "EROFS"}


def _read_masked():
    import os

    out = {}
    for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                out[p] = len(f.read(100))
    out["/proc/acpi"] = os.listdir("/proc/acpi") if os.path.isdir("/proc/acpi") else None
    try:
        with open("/proc/sys/kernel/hostname", "w") as f:
            f.write("x")
        out["sys"] = "writable"
    except OSError as e:
        out["sys"] = e.errno
    return out


def test_masked_paths_read_empty_and_readonly_paths_refuse_writes(run):
    st = run(_read_masked)
    assert st.ok, st
    v = st.value
    shown = {p: n for p, n in v.items() if p.startswith("/proc/") and p != "/proc/acpi"}
    assert "/proc/keys" in shown and "/proc/timer_list" in shown
    assert set(shown.values()) == {0}
    assert v["/proc/acpi"] in ([], None)
    assert v["sys"] == errno.EROFS
    with open("/proc/timer_list", "rb") as f:  # the host's is untouched
        assert len(f.read(100)) > 0


def test_ipc_namespace_is_private(run):
    # A System V message queue created inside is gone with the container.
    import subprocess

    before = subprocess.run(["ipcs", "-q"], capture_output=True, text=True).stdout
    st = run(["sh", "-c", "ipcmk -Q >/dev/null && ipcs -q | grep -c 0x"], stdout=PIPE)
    assert st.exit_code == 0 and st.stdout.strip() == b"1"
    after = subprocess.run(["ipcs", "-q"], capture_output=True, text=True).stdout
    assert before == after


def test_user_namespace_maps_root_to_an_unprivileged_range(run):
    cfg = Config(namespaces=Namespaces(user=True),
                 uid_mappings=(IDMap(0, 100000, 65536),), gid_mappings=(IDMap(0, 100000, 65536),))

    def view():
        import os

        with open("/proc/self/uid_map") as f:
            uid_map = f.read().split()
        with open("/tmp/owned", "w"):
            pass
        return {"uid": os.getuid(), "gid": os.getgid(), "map": uid_map,
                "owner": os.stat("/tmp/owned").st_uid}

    st = run(view, cfg)
    assert st.ok, st
    assert st.value == {"uid": 0, "gid": 0, "map": ["0", "100000", "65536"], "owner": 0}


def test_user_namespace_root_cannot_touch_host_root_files(run, host_dir):
    import pathlib

    secret = pathlib.Path(host_dir) / "secret"
    secret.write_text("s")
    secret.chmod(0o600)
    cfg = Config(namespaces=Namespaces(user=True),
                 uid_mappings=(IDMap(0, 100000, 65536),), gid_mappings=(IDMap(0, 100000, 65536),))
    st = run(_write_attempts, cfg, args=([str(secret)],))
    assert st.value == {str(secret): "EACCES"}
    assert secret.read_text() == "s"


def test_process_user_drops_to_uid(run):
    st = run(lambda: (os.getuid(), os.getgid(), os.getgroups()), user="1234:4321")
    assert st.value == [1234, 4321, []]


def test_rootfs_pivot_with_host_binds(run, tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "marker").write_text("in the new root")
    dirs = [d for d in ("usr", "lib", "lib64", "bin", "sbin", "etc")
            if os.path.isdir(f"/{d}") and not os.path.islink(f"/{d}")]
    for d in [*dirs, "proc", "tmp", "dev"]:
        (root / d).mkdir()
    for d in ("bin", "sbin", "lib", "lib64"):  # merged-/usr systems link these
        if os.path.islink(f"/{d}"):
            (root / d).symlink_to(os.readlink(f"/{d}"))
    (root / "dev" / "null").touch()
    binds = tuple(Mount(f"/{d}", source=f"/{d}", readonly=True) for d in dirs)
    cfg = Config(rootfs=str(root), cwd="/",
                 mounts=(*Config().mounts[:2], *binds, Mount("/dev/null", source="/dev/null")))
    st = run(["/bin/sh", "-c", "cat /marker; ls /"], cfg, stdout=PIPE, stderr=PIPE)
    assert st.exit_code == 0, st
    _, *listing = st.stdout.decode().split()
    assert "in the new root" in st.stdout.decode()
    assert "work" not in listing and "marker" in listing


@pytest.mark.host
@pytest.mark.parametrize("refuse_ioctl", [False, True])
def test_loopback_up_by_ioctl_and_by_the_netlink_fallback(refuse_ioctl):
    """In a new network namespace, lo starts down; loopback_up() brings it up with
    one ioctl, or through pyroute2's netlink when the ioctl is refused."""
    import socket

    from pytest_isolate.runtime import linux, network

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            linux.unshare(linux.CLONE_NEWNET)
            server = socket.create_server(("127.0.0.1", 0))
            try:
                socket.create_connection(server.getsockname(), timeout=2).close()
                os._exit(2)  # lo should have been down
            except OSError:
                pass
            server.close()
            refused = []
            if refuse_ioctl:
                def refuse(*args):
                    refused.append(args)
                    raise OSError(1, "refused")
                network.fcntl = type("F", (), {"ioctl": staticmethod(refuse)})
            network.loopback_up()
            if refuse_ioctl and not refused:
                os._exit(3)  # the ioctl was not even tried
            server = socket.create_server(("127.0.0.1", 0))
            socket.create_connection(server.getsockname(), timeout=2).close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _dev_listing():
    return sorted(os.listdir("/dev")), os.path.exists("/dev/kmsg")


def test_a_minimal_dev_by_default_and_the_hosts_on_request(run):
    from pytest_isolate.runtime import Config

    listing, kmsg = run(_dev_listing).value
    assert listing == sorted(["null", "zero", "full", "random", "urandom", "tty", "pts",
                              "ptmx", "fd", "stdin", "stdout", "stderr", "shm"])
    assert not kmsg
    listing, kmsg = run(_dev_listing, Config(devices="host")).value
    assert kmsg == os.path.exists("/dev/kmsg") and len(listing) > 13


def test_devices_setting_is_checked():
    from pytest_isolate.runtime import Config, ConfigError

    with pytest.raises(ConfigError, match="devices"):
        Config(devices="all")
