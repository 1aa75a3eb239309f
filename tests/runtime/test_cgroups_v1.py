"""The cgroup v1 manager against the real kernel.

This machine is hybrid: memory, pids, cpu, cpuacct, cpuset and freezer are v1
hierarchies (cpu and cpuacct separately mounted), the unified hierarchy holds none of
them. Every test removes every cgroup it made; the suite's autouse leak check
(``conftest.py``) fails any test that leaves a directory named like "*isolate*".
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import signal
import struct
import sys
import time

import pytest

from pytest_isolate.runtime.cgroups import (
    CgroupError,
    CgroupUnavailableError,
    V1Manager,
    cpu_shares,
    detect,
    new_manager,
)
from pytest_isolate.runtime.cgroups import v1 as v1mod
from pytest_isolate.runtime.config import Resources

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer")
LAYOUT = detect()
MiB = 1024 * 1024

pytestmark = [pytest.mark.host, pytest.mark.skipif(
    os.geteuid() != 0 or not all(LAYOUT.version(c) == 1 and LAYOUT.can_use(c)
                                 for c in V1_CONTROLLERS),
    reason="needs root and writable cgroup v1 hierarchies for " + ", ".join(V1_CONTROLLERS))]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# -- forked children ---------------------------------------------------------------


class Child:
    """A forked child that waits on a pipe until ``start()`` (so that it can be put
    into the cgroup first), runs ``target(*args)``, sends its JSON result back and
    exits. Never outlives the test: ``reap()`` SIGKILLs and waits."""

    def __init__(self, target=None, *args):
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.close(go_w)
                os.close(out_r)
                os.read(go_r, 1)
                result = target(*args) if target is not None else None
                os.write(out_w, json.dumps(result).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(go_r)
        os.close(out_w)
        self.pid, self._go, self._out = pid, go_w, out_r
        self.status: int | None = None

    def start(self) -> None:
        os.write(self._go, b"g")

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"child {self.pid} still running after {timeout} s")
            time.sleep(0.005)
        return self.status

    def result(self, timeout: float = 20.0):
        self.wait(timeout)
        data = b""
        while chunk := os.read(self._out, 65536):
            data += chunk
        return json.loads(data) if data else None

    def reap(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, self.status = os.waitpid(self.pid, 0)
        for fd in (self._go, self._out):
            try:
                os.close(fd)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


@pytest.fixture
def parent_name(request):
    """A parent unique to this test run, so nothing here touches a real one."""
    return f"pytest-isolate-t{os.getpid()}"


@pytest.fixture
def managers(parent_name):
    made: list = []
    children: list[Child] = []

    def make(cid="c1", parent=parent_name, **resources):
        m = new_manager(cid, Resources(**resources), parent=parent)
        made.append(m)
        return m

    def fork(target=None, *args):
        c = Child(target, *args)
        children.append(c)
        return c

    make.fork = fork
    yield make
    for m in made:
        m.destroy()
    for c in children:
        c.reap()


# -- layout ----------------------------------------------------------------------


def test_this_machine_is_detected_as_hybrid_with_controllers_on_v1():
    assert LAYOUT.mode == "hybrid"
    for c in V1_CONTROLLERS:
        assert LAYOUT.version(c) == 1
        h = LAYOUT.hierarchy(c)
        assert h is not None and c in h.controllers
    assert LAYOUT.hierarchy("cpu") is not LAYOUT.hierarchy("cpuacct")  # separate mounts here
    assert LAYOUT.unified is not None and LAYOUT.unified.version == 2
    assert not set(V1_CONTROLLERS) & LAYOUT.unified.controllers
    # The own cgroup per hierarchy is what /proc/self/cgroup says.
    own = {line.split(":")[1]: line.split(":", 2)[2]
           for line in _read("/proc/self/cgroup").splitlines()}
    mem = LAYOUT.hierarchy("memory")
    assert mem.path == own["memory"]
    assert mem.own_dir == os.path.join(mem.mountpoint, own["memory"].lstrip("/")).rstrip("/")
    assert detect() is LAYOUT  # probed once


def test_new_manager_picks_v1_here():
    m = new_manager("x", Resources(memory="64M"))
    assert isinstance(m, V1Manager)
    assert set(m.paths()) == {"memory", "pids", "cpuacct", "freezer"}  # cpu/cpuset on demand
    assert os.path.basename(m.paths()["memory"]) == "x"
    assert m.paths()["memory"].endswith("/pytest-isolate/x")


# -- limits ----------------------------------------------------------------------


def test_every_limit_reads_back_in_every_hierarchy(managers):
    m = managers(memory="64M", pids=16, cpu=0.5, cpuset="0")
    m.create()
    p = m.paths()
    assert set(p) == set(V1_CONTROLLERS)
    for c, d in p.items():
        assert os.path.isdir(d), c
        assert os.path.basename(d) == "c1"
    assert p["cpu"] != p["cpuacct"]

    assert int(_read(f"{p['memory']}/memory.limit_in_bytes")) == 64 * MiB
    assert int(_read(f"{p['memory']}/memory.memsw.limit_in_bytes")) == 64 * MiB  # swap off
    assert _read(f"{p['memory']}/memory.swappiness") == "0"
    assert _read(f"{p['pids']}/pids.max") == "16"
    assert _read(f"{p['cpu']}/cpu.cfs_period_us") == "100000"
    assert _read(f"{p['cpu']}/cpu.cfs_quota_us") == "50000"
    assert _read(f"{p['cpu']}/cpu.shares") == "1024"  # untouched without cpu_weight
    assert _read(f"{p['cpuset']}/cpuset.cpus") == "0"
    # A new v1 cpuset cgroup starts empty: the parent got the anchor's values copied in,
    # and the container the parent's memory nodes.
    parent = os.path.dirname(p["cpuset"])
    anchor = os.path.dirname(parent)
    assert _read(f"{parent}/cpuset.cpus") == _read(f"{anchor}/cpuset.cpus") != ""
    assert _read(f"{parent}/cpuset.mems") == _read(f"{anchor}/cpuset.mems") != ""
    assert _read(f"{p['cpuset']}/cpuset.mems") == _read(f"{anchor}/cpuset.mems")
    assert _read(f"{p['freezer']}/freezer.state") == "THAWED"

    st = m.stats()
    assert st.version == 1
    assert st.memory_limit == 64 * MiB and st.pids_limit == 16
    assert (st.cpu_quota, st.cpu_period, st.cpu_limit) == (50000, 100000, 0.5)
    assert st.memory_current == 0 and st.pids_current == 0 and st.oom_kills == 0
    assert st.to_dict()["cpu_limit"] == 0.5


def test_unlimited_reads_back_as_none(managers):
    m = managers()
    m.create()
    st = m.stats()
    # v1 spells "unlimited" 9223372036854771712 and -1: both are None.
    assert _read(f"{m.paths()['memory']}/memory.limit_in_bytes") == str(v1mod.UNLIMITED)
    assert st.memory_limit is None and st.pids_limit is None
    assert st.cpu_quota is None and st.cpu_limit is None  # no cpu hierarchy joined


def test_cpu_weight_becomes_shares_as_runc_converts(managers):
    assert (cpu_shares(1), cpu_shares(100), cpu_shares(10000)) == (2, 2597, 262144)
    m = managers(cpu_weight=100)
    m.create()
    assert _read(f"{m.paths()['cpu']}/cpu.shares") == "2597"
    assert _read(f"{m.paths()['cpu']}/cpu.cfs_quota_us") == "-1"


@pytest.mark.parametrize(("swap", "memsw", "swappiness"), [
    ("32M", 96 * MiB, None), (None, v1mod.UNLIMITED, None), (0, 64 * MiB, "0")])
def test_swap_setting(managers, swap, memsw, swappiness):
    m = managers(memory="64M", memory_swap=swap)
    m.create()
    d = m.paths()["memory"]
    assert int(_read(f"{d}/memory.memsw.limit_in_bytes")) == memsw
    if swappiness is not None:
        assert _read(f"{d}/memory.swappiness") == swappiness


# -- processes -------------------------------------------------------------------


def test_add_puts_the_process_in_every_hierarchy(managers):
    m = managers(memory="64M", pids=16, cpu=0.5, cpuset="0")
    m.create()
    child = managers.fork()
    t = time.perf_counter()
    m.add(child.pid)
    elapsed = time.perf_counter() - t
    assert m.pids() == [child.pid]
    lines = _read(f"/proc/{child.pid}/cgroup").splitlines()
    by_ctrl = {}
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            by_ctrl[c] = path
    for c, d in m.paths().items():
        h = LAYOUT.hierarchy(c)
        assert os.path.join(h.mountpoint, by_ctrl[c].lstrip("/")) == d, c
    assert m.stats().pids_current == 1
    child.start()
    assert os.WIFEXITED(child.wait()) and os.WEXITSTATUS(child.status) == 0
    assert m.pids() == []
    assert elapsed < 1.0


def test_add_of_a_dead_process_is_a_clear_error(managers):
    m = managers()
    m.create()
    child = managers.fork()
    child.reap()
    with pytest.raises(CgroupError, match=rf"process {child.pid} .*exited"):
        m.add(child.pid)


def _allocate(mib):
    chunks = [b"\x01" * MiB for _ in range(mib)]  # touched, not just reserved
    return len(chunks)


def test_oom_kill_under_the_memory_limit(managers):
    m = managers(memory="64M")
    m.create()
    child = managers.fork(_allocate, 256)
    m.add(child.pid)
    child.start()
    status = child.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert m.oom_kills() == 1
    st = m.stats()
    assert st.oom_kills == 1
    assert 0.8 * 64 * MiB <= st.memory_peak <= 64 * MiB
    assert m.pids() == []


def _fork_until_refused(limit):
    hold_r, hold_w = os.pipe()
    kids, err = [], None
    for _ in range(limit):
        try:
            pid = os.fork()
        except OSError as e:
            err = errno.errorcode[e.errno]
            break
        if pid == 0:
            try:
                os.close(hold_w)
                os.read(hold_r, 1)  # holds its pid until the parent is done counting
            finally:
                os._exit(0)
        kids.append(pid)
    os.close(hold_w)
    for pid in kids:
        os.waitpid(pid, 0)
    return {"forks": len(kids), "error": err}


def test_pids_limit_refuses_fork_with_eagain(managers):
    m = managers(pids=16)
    m.create()
    child = managers.fork(_fork_until_refused, 100)
    m.add(child.pid)
    child.start()
    result = child.result()
    assert result == {"forks": 15, "error": "EAGAIN"}  # the child itself is the 16th
    st = m.stats()
    assert st.pids_limit == 16
    if os.path.exists(os.path.join(m.paths()["pids"], "pids.peak")):
        assert st.pids_peak == 16


def _spin(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def test_cpu_quota_halves_cpu_time(managers):
    m = managers(cpu=0.5)
    m.create()
    child = managers.fork(_spin, 1.0)
    m.add(child.pid)
    child.start()
    child.result()
    st = m.stats()
    assert 0.3 <= st.cpu_usage <= 0.7, st
    assert 0.3 <= st.cpu_user + st.cpu_system <= 0.7, st
    usage_ns = int(_read(f"{m.paths()['cpuacct']}/cpuacct.usage"))
    assert 0.3e9 <= usage_ns <= 0.7e9
    throttled = dict(line.split() for line in
                     _read(f"{m.paths()['cpu']}/cpu.stat").splitlines())
    assert int(throttled["nr_throttled"]) > 0


def test_freeze_stops_and_thaw_resumes(managers):
    shared = mmap.mmap(-1, 16)  # MAP_SHARED|MAP_ANONYMOUS: the child's counter, our stop flag

    def count():
        end = time.monotonic() + 20
        n = 0
        while shared[8] == 0 and time.monotonic() < end:
            n += 1
            struct.pack_into("Q", shared, 0, n)
        return n

    def counter():
        return struct.unpack_from("Q", shared, 0)[0]

    m = managers()
    m.create()
    child = managers.fork(count)
    m.add(child.pid)
    child.start()
    deadline = time.monotonic() + 5
    while counter() == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert counter() > 0
    m.freeze()
    assert _read(f"{m.paths()['freezer']}/freezer.state") == "FROZEN"
    a = counter()
    time.sleep(0.2)
    assert counter() == a
    m.thaw()
    assert _read(f"{m.paths()['freezer']}/freezer.state") == "THAWED"
    deadline = time.monotonic() + 5  # a loaded machine may take a while to run it again
    while counter() == a and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counter() > a
    shared[8] = 1
    assert child.result() >= counter() - 1
    shared.close()


def _family(n):
    hold_r, _hold_w = os.pipe()
    for _ in range(n):
        if os.fork() == 0:
            try:
                os.read(hold_r, 1)
            finally:
                os._exit(0)
    os.read(hold_r, 1)  # never returns: nobody writes
    return None


def test_kill_ends_every_member(managers):
    m = managers(pids=16)
    m.create()
    child = managers.fork(_family, 3)
    m.add(child.pid)
    child.start()
    deadline = time.monotonic() + 5
    while len(m.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    members = m.pids()
    assert len(members) == 4 and child.pid in members
    m.kill()
    assert m.pids() == []
    status = child.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not any(_alive(p) for p in members)
    assert _read(f"{m.paths()['freezer']}/freezer.state") == "THAWED"


# -- removal ---------------------------------------------------------------------


def test_destroy_kills_leftovers_and_removes_every_directory(managers, parent_name):
    m = managers(parent=f"{parent_name}/gw0", memory="64M", pids=16, cpu=0.5, cpuset="0")
    m.create()
    child = managers.fork()
    m.add(child.pid)
    dirs = list(m.paths().values())
    parents = {os.path.dirname(d) for d in dirs} | {os.path.dirname(os.path.dirname(d))
                                                    for d in dirs}
    assert all(os.path.isdir(d) for d in parents)
    m.destroy()
    status = child.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not any(os.path.exists(d) for d in dirs + sorted(parents))
    m.destroy()  # idempotent
    assert not m.exists()


def test_a_parent_that_existed_before_is_left_alone(managers, parent_name):
    hierarchies = {LAYOUT.hierarchy(c).anchor_dir for c in V1_CONTROLLERS}
    pre = sorted(os.path.join(a, parent_name) for a in hierarchies)
    for d in pre:
        os.mkdir(d)
    try:
        m = managers(memory="64M", cpuset="0")
        m.create()
        assert all(os.path.dirname(d) in pre for d in m.paths().values())
        m.destroy()
        assert not m.exists()
        assert all(os.path.isdir(d) for d in pre)
    finally:
        for d in pre:
            os.rmdir(d)


def test_a_shared_parent_goes_with_the_last_container_of_this_process(managers):
    a = managers("a")
    b = managers("b")
    a.create()
    b.create()
    parent = os.path.dirname(a.paths()["pids"])
    a.destroy()
    assert os.path.isdir(parent) and b.exists()
    b.destroy()
    assert not os.path.exists(parent)


def test_stale_empty_cgroup_with_the_same_id_is_reused(managers):
    first = managers("same")
    first.create()
    # The same id again (a crashed run left it): reused, limits rewritten.
    second = managers("same", pids=8)
    second.create()
    assert _read(f"{second.paths()['pids']}/pids.max") == "8"
    child = managers.fork()
    second.add(child.pid)
    third = managers("same")
    with pytest.raises(CgroupError, match="holds processes"):
        third.create()
    assert second.exists()  # the failed create did not remove the live one


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(("resources", "setting", "text"), [
    ({"cpu": 0.001}, "cpu", "cpu=0.001 was refused"),
    ({"cpuset": "7"}, "cpuset", "cpuset=7 was refused"),
    ({"memory_swap": "32M"}, "memory_swap", "needs a memory limit"),
])
def test_refused_value_is_a_cgroup_error_naming_the_setting(managers, resources, setting,
                                                            text):
    m = managers(**resources)
    with pytest.raises(CgroupError) as info:
        m.create()
    err = info.value
    assert err.setting == setting
    assert text in str(err)
    # no internal exception attached to the traceback
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert not m.exists()  # nothing left behind


def test_memory_limit_below_usage_is_ebusy_with_the_fix_in_the_message(managers):
    m = managers()
    m.create()
    hold = mmap.mmap(-1, 8)  # [0]: allocated, [1]: may exit

    def hold_memory():
        chunks = [b"\x01" * MiB for _ in range(32)]
        hold[0] = 1
        while hold[1] == 0:
            time.sleep(0.01)
        return len(chunks)

    child = managers.fork(hold_memory)
    m.add(child.pid)
    child.start()
    deadline = time.monotonic() + 10
    while hold[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(CgroupError) as info:
        v1mod.CONTROLLERS["memory"].apply(m.paths()["memory"], Resources(memory="1M"))
    assert info.value.setting == "memory" and info.value.errno == errno.EBUSY
    assert "memory=1M is below what the container already uses" in str(info.value)
    hold[1] = 1
    assert child.result() == 32


def test_unusable_controller_names_the_setting():
    from pytest_isolate.runtime.cgroups import CgroupLayout

    empty = CgroupLayout(mode="none")
    with pytest.raises(CgroupUnavailableError, match=r"pids=16 needs the pids cgroup "
                                                     r"controller") as info:
        new_manager("x", Resources(pids=16), layout=empty)
    assert info.value.setting == "pids"
    with pytest.raises(CgroupError, match="container id"):
        new_manager("a/b", Resources())
    with pytest.raises(CgroupError, match=r"'\.\.'"):
        new_manager("a", Resources(), parent="../escape")
