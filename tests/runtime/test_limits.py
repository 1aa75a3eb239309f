"""Cgroup limits, usage, OOM reporting, the freezer and seccomp, in real containers."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from pytest_isolate.runtime import (
    PIPE,
    Config,
    ConfigError,
    ContainerError,
    Mount,
    Process,
    Resources,
    SetupError,
    Status,
)

DOCKER_PROFILE = str(Path(__file__).parents[1] / "data" / "docker-seccomp-default.json")


def python_mounts():
    """Binds that make this interpreter runnable inside a container whose /tmp is
    private (a virtualenv under /tmp would otherwise vanish)."""
    import sys

    from pytest_isolate.runtime import Mount

    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return tuple(Mount(p, source=p, readonly=True) for p in sorted(paths)
                 if p.startswith(("/tmp/", "/dev/shm/")))


def _allocate(mib):
    blob = bytearray(mib * 2**20)
    for i in range(0, len(blob), 4096):
        blob[i] = 1
    return len(blob)


def test_memory_limit_breach_is_reported_as_oom_with_peak(run):
    st = run(_allocate, Config(resources=Resources(memory="64M")), args=(256,))
    assert st.signal == signal.SIGKILL and st.oom_killed and st.oom_kills >= 1
    assert st.describe().startswith("memory limit 64M exceeded (OOM kill), peak ")
    assert 48 * 2**20 <= st.stats["memory_peak"] <= 64 * 2**20
    assert st.stats["memory_limit"] == 64 * 2**20


def _grandchild_oom():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c",
                        "b = bytearray(256 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1"])
    return r.returncode


def test_an_oom_kill_of_a_grandchild_is_counted_while_the_payload_survives(run):
    cfg = Config(resources=Resources(memory="64M"), mounts=(*Config().mounts, *python_mounts()))
    st = run(_grandchild_oom, cfg)
    assert st.ok and st.value == -signal.SIGKILL
    assert st.oom_kills == 1 and not st.oom_killed


def test_a_memory_limit_below_what_starting_needs_is_a_clear_error(factory):
    c = factory.create("tiny", Config(resources=Resources(memory="1M")))
    with pytest.raises(SetupError) as ei:
        c.start(Process(target=lambda: None))
    assert ei.value.step == "memory limit"
    assert "memory=1M is below what the container needs to start" in str(ei.value)
    assert "EBUSY" not in str(ei.value)
    assert factory.list() == []


def _fork_bomb():
    import os
    import time

    kids = []
    try:
        for _ in range(1000):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            kids.append(pid)
    except BlockingIOError:
        pass
    for pid in kids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return len(kids)


def test_a_pids_limit_stops_a_fork_bomb_and_the_container_still_works(factory):
    with factory.create("bomb", Config(resources=Resources(pids=16))) as c:
        c.start(Process(target=time.sleep, args=(30,)))
        forks = c.exec(Process(target=_fork_bomb)).wait(timeout=30)
        assert forks.ok and 5 <= forks.value <= 14  # init, payload, exec'd process share 16
        after = c.exec(Process(["true"])).wait(timeout=10)
        assert after.exit_code == 0
        assert c.stats()["pids_limit"] == 16


def _spin(seconds):
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return time.process_time()


def test_a_cpu_quota_throttles_a_busy_loop(run):
    st = run(_spin, Config(resources=Resources(cpu=0.5)), args=(1.5,))
    assert st.ok
    cpu = st.stats["cpu_usage"]
    assert 0.45 <= cpu / 1.5 <= 0.65, cpu  # half a core of 1.5 s wall
    assert st.stats["cpu_quota"] == 50_000 and st.stats["cpu_period"] == 100_000


def test_usage_tracks_an_allocation(run):
    st = run(_allocate, args=(32,))
    s = st.stats
    assert s["memory_peak"] >= 32 * 2**20
    assert s["memory_limit"] is None and s["pids_limit"] is None
    assert s["cpu_usage"] > 0 and s["oom_kills"] == 0


def test_stats_live_while_running(factory):
    with factory.create("live") as c:
        c.start(Process(target=time.sleep, args=(30,)))
        s = c.stats()
        assert s["pids_current"] == 2 and s["memory_current"] > 0


def _count_into(path):
    import time

    n = 0
    while True:
        n += 1
        with open(path + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(path + ".tmp", path)
        time.sleep(0.005)


def _read_counter(path, wait=5.0):
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            return int(open(path).read())
        except (OSError, ValueError):
            time.sleep(0.01)
    raise AssertionError("no counter")


def test_pause_freezes_and_resume_thaws(factory, tmp_path):
    counter = str(tmp_path / "n")
    cfg = Config(mounts=(*Config().mounts, Mount(str(tmp_path), source=str(tmp_path))))
    with factory.create("frozen", cfg) as c:
        c.start(Process(target=_count_into, args=(counter,)))
        first = _read_counter(counter)
        c.pause()
        assert c.status is Status.PAUSED
        assert factory.load("frozen").status is Status.PAUSED
        stopped_at = _read_counter(counter)
        time.sleep(0.3)
        assert _read_counter(counter) == stopped_at >= first
        c.resume()
        assert c.status is Status.RUNNING
        deadline = time.monotonic() + 5
        while _read_counter(counter) == stopped_at and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _read_counter(counter) > stopped_at


def test_destroying_a_paused_container(factory):
    c = factory.create("p")
    c.start(Process(["sleep", "300"]))
    pids = c.pids()
    c.pause()
    c.destroy()
    assert all(not os.path.exists(f"/proc/{p}") for p in pids)
    assert factory.list() == []


def test_pause_without_cgroups_is_a_clear_error(factory):
    with factory.create("nocg", Config(cgroups="off")) as c:
        c.start(Process(["sleep", "300"]))
        with pytest.raises(ContainerError, match="pause\\(\\) needs the freezer"):
            c.pause()


def test_limits_with_cgroups_off_are_refused():
    with pytest.raises(ConfigError, match="cgroups='off'.*resource limits need cgroups"):
        Config(cgroups="off", resources=Resources(pids=4))


# ----------------------------------------------------------------------------- seccomp

def _syscalls():
    import ctypes
    import errno
    import socket
    import subprocess
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def err(rc):
        return "ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()]

    out = {
        "mount": err(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)),
        "unshare_user": err(libc.unshare(0x10000000)),
        "unshare_files": err(libc.unshare(0x400)),
        "clone3": err(libc.syscall(435, None, 0)),
        "keyctl": err(libc.syscall(250, 0, 0, 0, 0, 0)),
    }
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    out["subprocess"] = subprocess.run(["true"]).returncode
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        out["packet"] = "ok"
    except OSError as e:
        out["packet"] = errno.errorcode[e.errno]
    with open("/proc/self/status") as f:
        out["filters"] = next(line.split()[1] for line in f if line.startswith("Seccomp_filters"))
    return out


def test_default_seccomp_denies_what_reaches_past_the_container(run):
    v = run(_syscalls).value
    assert v["mount"] == "EPERM" and v["unshare_user"] == "EPERM" and v["keyctl"] == "EPERM"
    assert v["clone3"] == "ENOSYS"  # glibc falls back to clone, checked by flags
    assert v["unshare_files"] == "ok" and v["subprocess"] == 0
    assert v["filters"] == "1"


def test_strict_seccomp(run):
    v = run(_syscalls, Config(seccomp="strict")).value
    assert v["mount"] == "EPERM" and v["packet"] == "EPERM" and v["clone3"] == "ENOSYS"
    assert v["subprocess"] == 0


def test_unconfined_has_no_filter(run):
    import warnings

    with warnings.catch_warnings(record=True):  # "ALL" includes caps this host may lack
        warnings.simplefilter("always")
        v = run(_syscalls, Config(seccomp="unconfined", capabilities=["ALL"])).value
    assert v["filters"] == "0" and v["unshare_user"] == "ok"


def test_dockers_own_profile_runs_ordinary_python(run):
    v = run(_syscalls, Config(seccomp=DOCKER_PROFILE)).value
    assert v["subprocess"] == 0 and v["mount"] == "EPERM" and v["filters"] == "1"


def test_a_json_profile_with_errno_ret(run, tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
    }))
    st = run(lambda: os.getcwd(), Config(seccomp=str(profile)))
    assert st.exception.type == "OSError" and "[Errno 38]" in st.exception.message


def test_a_kill_action_ends_the_payload_with_sigsys(run, tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }))
    st = run(["sh", "-c", "echo $PPID"], Config(seccomp=str(profile)), stdout=PIPE)
    assert st.signal == signal.SIGSYS
    assert st.describe() == "killed by signal 31 (SIGSYS: seccomp)"


def test_seccomp_applies_to_exec_too(factory):
    with factory.create("e") as c:
        c.start(Process(target=time.sleep, args=(30,)))
        assert c.exec(Process(target=_syscalls)).wait(10).value["mount"] == "EPERM"


def test_a_bad_profile_is_a_config_error_naming_seccomp(factory, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [')
    for spec in ("nope", str(bad), str(tmp_path / "missing.json")):
        c = factory.create("s", Config(seccomp=spec))
        with pytest.raises(ConfigError) as ei:
            c.start(Process(["true"]))
        assert ei.value.field == "seccomp"
        c.destroy()


def _escape_the_cgroup():
    import errno
    import glob

    out = {}
    for procs in sorted(glob.glob("/sys/fs/cgroup/*/cgroup.procs"))[:3]:
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
            out[procs] = "moved"
        except OSError as e:
            out[procs] = errno.errorcode[e.errno]
    return out


def test_a_container_cannot_move_itself_out_of_its_cgroups(run):
    st = run(_escape_the_cgroup, Config(resources=Resources(memory="64M")))
    assert st.value and set(st.value.values()) == {"EROFS"}, st.value


def test_a_pids_limit_too_low_to_start_is_named(factory):
    c = factory.create("p1", Config(resources=Resources(pids=1)))
    with pytest.raises(SetupError) as ei:
        c.start(Process(target=lambda: None))
    assert ei.value.step == "pids limit" and "pids=1 is below" in str(ei.value)
    assert factory.list() == []


@pytest.mark.host
def test_the_same_id_in_two_factories(tmp_path):
    from pytest_isolate.runtime import Factory

    a, b = Factory(tmp_path / "a"), Factory(tmp_path / "b")
    with a.create("same") as ca, b.create("same") as cb:
        ca.start(Process(["sleep", "30"]))
        cb.start(Process(["sleep", "30"]))
        assert ca.stats()["pids_current"] == cb.stats()["pids_current"] == 2


def _own_cgroups():
    with open("/proc/self/cgroup") as f:
        return {c: path for line in f for _, cs, path in [line.rstrip("\n").split(":", 2)]
                for c in cs.split(",")}


def test_the_init_joins_its_v1_cgroups_itself(factory, monkeypatch):
    """On v1 the host never moves the init (that costs an RCU grace period): the init
    writes 0 to the tasks files the host opened, before anything else, so the payload
    and its usage are the container's."""
    from pytest_isolate.runtime.cgroups import V1Manager

    def no_host_move(self, pid):
        raise AssertionError("the host moved the init")

    monkeypatch.setattr(V1Manager, "add", no_host_move)
    cfg = Config(resources=Resources(memory="256M", pids=32))
    with factory.create("selfjoin", cfg) as c:
        st = c.run(Process(target=_own_cgroups))
        paths = c.state().cgroup_paths
    assert st.ok, st.describe()
    assert {"memory", "pids"} <= set(paths)
    for controller in ("memory", "pids"):
        # the path the payload sees ends with the container's own cgroup directory
        assert paths[controller].endswith(st.value[controller]), (controller, st.value)
        assert st.value[controller].rstrip("/").split("/")[-1] == \
            os.path.basename(paths[controller])
    assert st.stats["pids_peak"] >= 2 and st.stats["memory_limit"] == 256 * 2**20


def test_an_init_may_be_ready_before_its_pid_is_reported(factory, monkeypatch):
    """The self-joining init does not wait for the host: its "ready" can overtake the
    bootstrap's "init" message (a race seen under load), and the start must not care."""
    from pytest_isolate.runtime import bootstrap

    real = bootstrap.send_msg

    def late_init(sock, msg):
        if msg.get("t") == "init":
            time.sleep(0.3)  # the init is ready long before this
        real(sock, msg)

    monkeypatch.setattr(bootstrap, "send_msg", late_init)  # the forks inherit it
    with factory.create("late", Config(resources=Resources(pids=32))) as c:
        st = c.run(Process(target=_own_cgroups))
        paths = c.state().cgroup_paths
    assert st.ok, st.describe()
    assert paths["pids"].endswith(st.value["pids"])
