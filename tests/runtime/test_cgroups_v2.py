"""The cgroup v2 manager and the layout probe.

THIS MACHINE HAS NO CGROUP V2 CONTROLLER SET: it is hybrid, memory/pids/cpu/cpuset
live in v1 hierarchies and the unified hierarchy at /sys/fs/cgroup/unified offers
none of them. So the v2 manager's controller handling is tested against a FAKE
cgroup2 tree under ``tmp_path`` (``FakeCgroup2``): plain files laid out as the kernel
lays them out, a ``mkdir`` that fills a new directory with the files the parent's
``cgroup.subtree_control`` calls for (so a controller enabled too late shows up as
a missing file), an ``rmdir`` that refuses a cgroup with members, and a small
"kernel" thread that turns ``cgroup.freeze`` into ``frozen 1`` in ``cgroup.events``,
delivers a real SIGKILL for ``cgroup.kill`` and drops dead pids from
``cgroup.procs``. The pids in the fake ``cgroup.procs`` files are REAL forked
children of this test, so "killed" means really dead.

The core v2 files (``cgroup.procs``, ``cgroup.freeze``, ``cgroup.events``,
``cgroup.kill``, ``cpu.stat``) need no controller, so one test drives them on the
real unified hierarchy of this machine as well.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pytest_isolate.runtime.cgroups import (
    SUPERVISOR_LEAF,
    CgroupError,
    CgroupUnavailableError,
    DirOps,
    HybridManager,
    V1Manager,
    V2Manager,
    detect,
    load_manager,
    new_manager,
)
from pytest_isolate.runtime.cgroups import fs as cgfs
from pytest_isolate.runtime.cgroups import v2 as v2mod
from pytest_isolate.runtime.config import Resources

pytestmark = pytest.mark.host

ALL = "cpuset cpu io memory hugetlb pids rdma misc"
KERNEL_ORDER = ALL.split()
MiB = 1024 * 1024

# -- the fake cgroup2 tree -------------------------------------------------------------


class FakeCgroup2(DirOps):
    """A plain directory tree that answers like a cgroup2 mount (see the module doc)."""

    def __init__(self, root: Path, controllers: str = ALL, *, kill_file: bool = True,
                 memory_peak: bool = True, pids_peak: bool = True, swap: bool = True):
        self.root = root
        self.kill_file, self.memory_peak, self.pids_peak, self.swap = (
            kill_file, memory_peak, pids_peak, swap)
        self.kill_requests: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the "kernel" does one thing at a time
        root.mkdir(parents=True)
        # The true root: no cgroup.type, cgroup.freeze, cgroup.events, cgroup.kill.
        for name, text in (("cgroup.controllers", controllers), ("cgroup.subtree_control", ""),
                           ("cgroup.procs", ""), ("cgroup.max.depth", "max"),
                           ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n")):
            (root / name).write_text(text + ("\n" if text and not text.endswith("\n") else ""))

    # DirOps: what the kernel does on mkdir/rmdir in cgroupfs
    def mkdir(self, path: str) -> None:
        with self._lock:
            os.mkdir(path)
            self._populate(Path(path))

    def rmdir(self, path: str) -> None:
        p = Path(path)
        with self._lock:
            if any(c.is_dir() for c in p.iterdir()) or (p / "cgroup.procs").read_text().split():
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
            for f in p.iterdir():
                f.unlink()
            os.rmdir(path)

    def _populate(self, p: Path) -> None:
        enabled = {w.lstrip("+") for w in (p.parent / "cgroup.subtree_control").read_text().split()}
        files = {
            "cgroup.controllers": " ".join(c for c in KERNEL_ORDER if c in enabled),
            "cgroup.subtree_control": "", "cgroup.procs": "", "cgroup.threads": "",
            "cgroup.type": "domain", "cgroup.freeze": "0",
            "cgroup.events": "populated 0\nfrozen 0", "cgroup.max.depth": "max",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0",
        }
        if self.kill_file:
            files["cgroup.kill"] = ""
        if "memory" in enabled:
            files.update({"memory.max": "max", "memory.high": "max", "memory.low": "0",
                          "memory.current": "0",
                          "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
                                           "oom_group_kill 0"})
            if self.memory_peak:
                files["memory.peak"] = "0"
            if self.swap:
                files.update({"memory.swap.max": "max", "memory.swap.current": "0"})
        if "pids" in enabled:
            files.update({"pids.max": "max", "pids.current": "0", "pids.events": "max 0"})
            if self.pids_peak:
                files["pids.peak"] = "0"
        if "cpu" in enabled:
            files.update({"cpu.max": "max 100000", "cpu.weight": "100"})
            files["cpu.stat"] += "\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0"
        if "cpuset" in enabled:
            files.update({"cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpus.effective": "0-1",
                          "cpuset.mems.effective": "0"})
        for name, text in files.items():
            (p / name).write_text(text + "\n" if text else "")

    def cgroup(self, rel: str, *, controllers: str | None = None, subtree: str | None = None,
               procs: tuple[int, ...] = ()) -> Path:
        """Make (as the kernel would) ``rel`` and its ancestors; override some files."""
        p = self.root
        for part in Path(rel.strip("/")).parts:
            p = p / part
            if not p.exists():
                self.mkdir(str(p))
        if controllers is not None:
            (p / "cgroup.controllers").write_text(controllers + "\n")
        if subtree is not None:
            (p / "cgroup.subtree_control").write_text(subtree + "\n")
        if procs:
            (p / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in procs))
        return p

    def layout(self, tmp: Path, own: str = "/"):
        """detect() over a mountinfo/cgroup pair describing this tree as the host's."""
        mi = tmp / "mountinfo"
        mi.write_text(f"30 23 0:26 / {self.root} rw,nosuid,nodev,noexec,relatime shared:4 - "
                      "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
        cg = tmp / "cgroup"
        cg.write_text(f"0::{own}\n")
        return detect(str(mi), str(cg))

    # the "kernel" thread
    def tick(self) -> None:
        with self._lock:
            self._tick()

    def _tick(self) -> None:
        for dirpath, dirnames, _ in os.walk(self.root):
            p = Path(dirpath)
            if not (p / "cgroup.type").exists():
                continue
            try:
                procs = [int(x) for x in (p / "cgroup.procs").read_text().split()]
                kill = p / "cgroup.kill"
                if kill.exists() and kill.read_text().strip() == "1":
                    self.kill_requests.append(str(p))
                    kill.write_text("")
                    for pid in procs:
                        if pid > 1 and pid not in (os.getpid(), os.getppid()):
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                live = [pid for pid in procs if _alive(pid)]
                if live != procs:
                    (p / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in live))
                frozen = (p / "cgroup.freeze").read_text().strip() == "1"
                events = f"populated {int(bool(live or dirnames))}\nfrozen {int(frozen)}\n"
                if (p / "cgroup.events").read_text() != events:
                    tmp = p / ".events.tmp"
                    tmp.write_text(events)
                    os.replace(tmp, p / "cgroup.events")  # readers see old or new
            except FileNotFoundError:
                continue  # removed meanwhile

    def start(self) -> FakeCgroup2:
        def loop():
            while not self._stop.wait(0.002):
                self.tick()

        self._thread = threading.Thread(target=loop, name="fake-cgroup2-kernel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _read(p) -> str:
    return Path(p).read_text().strip()


@pytest.fixture
def fake(tmp_path):
    """A pure-v2 host: the test process sits in /system.slice/runner.service (like a
    GitHub Actions runner) together with its parent process."""
    tree = FakeCgroup2(tmp_path / "cgroup2")
    tree.cgroup("/system.slice", controllers=ALL, subtree="cpuset cpu io memory pids")
    tree.cgroup("/system.slice/runner.service", procs=(os.getppid(), os.getpid()))
    tree.start()
    yield tree
    tree.stop()


@pytest.fixture
def writes(monkeypatch):
    """Every write the managers make, as (path, text) in order."""
    log: list[tuple[str, str]] = []
    real = cgfs.write

    def recording(path, text, *, append=False):
        real(path, text, append=append)
        log.append((str(path), text))

    monkeypatch.setattr(cgfs, "write", recording)
    monkeypatch.setattr(v2mod, "write", recording)
    return log


@pytest.fixture
def children():
    """Fork real children that block on a pipe; all reaped at the end."""
    made: list[int] = []

    def fork() -> int:
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(w)
                os.read(r, 1)
            finally:
                os._exit(0)
        os.close(r)
        made.append(pid)
        fork.pipes.append(w)
        return pid

    fork.pipes = []
    yield fork
    for pid in made:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    for w in fork.pipes:
        os.close(w)


def _reap(pid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    raise AssertionError(f"child {pid} is still running")


FULL = Resources(memory="64M", pids=16, cpu=0.5, cpu_weight=200, cpuset="0")

# -- detect() --------------------------------------------------------------------------

V1_MOUNTINFO = """\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
32 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset
33 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,freezer
"""  # noqa: E501 (real lines)
V1_CGROUP = """\
11:freezer:/
10:pids:/user.slice/user-1000.slice/session-1.scope
8:cpuset:/
6:memory:/user.slice/user-1000.slice/session-1.scope
4:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-1000.slice/session-1.scope
"""


def _files(tmp: Path, mountinfo: str, cgroup: str) -> tuple[str, str]:
    (tmp / "mountinfo").write_text(mountinfo)
    (tmp / "cgroup").write_text(cgroup)
    return str(tmp / "mountinfo"), str(tmp / "cgroup")


def test_detect_pure_v1(tmp_path):
    layout = detect(*_files(tmp_path, V1_MOUNTINFO, V1_CGROUP))
    assert layout.mode == "v1" and layout.unified is None
    for c in ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer"):
        assert layout.version(c) == 1, c
    assert layout.hierarchy("cpu") is layout.hierarchy("cpuacct")  # co-mounted
    assert layout.hierarchy("cpu").mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.hierarchy("cpu").own_dir == "/sys/fs/cgroup/cpu,cpuacct/user.slice"
    assert layout.hierarchy("memory").own_dir == \
        "/sys/fs/cgroup/memory/user.slice/user-1000.slice/session-1.scope"
    assert layout.hierarchy("freezer").own_dir == "/sys/fs/cgroup/freezer"
    assert "name=systemd" not in layout.drivers
    # (those directories do not exist here, so build the manager without the
    # writability check new_manager makes)
    m = V1Manager("c1", Resources(memory="64M"), hierarchies=layout.drivers)
    assert m.paths()["memory"] == ("/sys/fs/cgroup/memory/user.slice/user-1000.slice/"
                                   "session-1.scope/pytest-isolate/c1")
    assert m.paths()["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/user.slice/pytest-isolate/c1"


def test_detect_pure_v2(tmp_path, fake):
    layout = fake.layout(tmp_path, "/system.slice/runner.service")
    assert layout.mode == "v2"
    assert layout.unified is not None and layout.unified.mountpoint == str(fake.root)
    assert layout.unified.controllers == frozenset(ALL.split())
    for c in ("memory", "pids", "cpu", "cpuset"):
        assert layout.version(c) == 2 and layout.can_use(c), c
    assert layout.version("freezer") is None and layout.version("cpuacct") is None
    assert layout.unified.anchor_dir == str(fake.root / "system.slice/runner.service")
    assert isinstance(new_manager("c1", FULL, layout=layout), V2Manager)


# Lines copied from this machine's /proc/self/mountinfo; the cgroup2 mount point is
# moved into tmp_path so that its cgroup.controllers can be written.
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
{pids}40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {unified} rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_PIDS = "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/0cae60e8e630b89c2820ecfe52c32ad7
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


def test_detect_hybrid_like_this_machine(tmp_path):
    unified = FakeCgroup2(tmp_path / "unified", "hugetlb")
    layout = detect(*_files(tmp_path, HYBRID_MOUNTINFO.format(pids=HYBRID_PIDS,
                                                              unified=unified.root),
                            HYBRID_CGROUP))
    assert layout.mode == "hybrid"
    for c in ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer", "devices", "blkio"):
        assert layout.version(c) == 1, c
    assert layout.version("hugetlb") == 2  # the only one the unified hierarchy offers
    assert layout.hierarchy("memory").own_dir == \
        "/sys/fs/cgroup/memory/process_api/0cae60e8e630b89c2820ecfe52c32ad7"
    assert layout.hierarchy("cpu") is not layout.hierarchy("cpuacct")
    assert {"memory", "pids", "cpu", "cpuacct", "cpuset", "freezer"} <= layout.usable


def test_hybrid_uses_v2_for_what_only_the_unified_hierarchy_has(tmp_path):
    # Same host, but pids is not mounted as v1 and the unified hierarchy offers it.
    # The v1 mount points move into tmp_path too, so that they exist (and are writable).
    unified = FakeCgroup2(tmp_path / "unified", "pids hugetlb")
    v1 = tmp_path / "v1"
    for c in ("cpu", "cpuacct", "cpuset", "freezer", "memory/process_api/0cae60e8e630b89c2820"
              "ecfe52c32ad7"):
        (v1 / c).mkdir(parents=True)
    mountinfo = HYBRID_MOUNTINFO.format(pids="", unified=unified.root)
    layout = detect(*_files(tmp_path, mountinfo.replace(" /sys/fs/cgroup/", f" {v1}/"),
                            HYBRID_CGROUP.replace("8:pids:/\n", "")))
    assert layout.mode == "hybrid"
    assert layout.version("pids") == 2 and layout.version("memory") == 1
    m = new_manager("c1", Resources(memory="64M", pids=16), layout=layout)
    assert isinstance(m, HybridManager)
    assert isinstance(m.first, V1Manager) and isinstance(m.second, V2Manager)
    assert m.second.controllers == ("pids",)
    assert "pids" not in m.first.paths() and m.paths()["pids"] == m.paths()["unified"]
    assert m.first.paths()["memory"] == str(v1 / "memory/process_api/0cae60e8e630b89c2820"
                                                 "ecfe52c32ad7/pytest-isolate/c1")
    assert m.paths()["unified"] == str(unified.root / "pytest-isolate/c1")
    # its v2 half needs a whole-process move, so the host moves the init (both halves)
    assert m.join_files() is None
    assert sorted(m.first.join_files()) == sorted(f"{d}/tasks" for d in m.first.paths().values())


DELEGATED = "/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"


def _delegated_tree(root: Path) -> FakeCgroup2:
    """systemd's user delegation: user@1000.service gets cpu, memory and pids; the
    app.slice passes on memory and pids; the shell's scope holds our process."""
    tree = FakeCgroup2(root)
    tree.cgroup("/user.slice", subtree="cpuset cpu io memory pids")
    tree.cgroup("/user.slice/user-1000.slice", subtree="cpu memory pids")
    tree.cgroup("/user.slice/user-1000.slice/user@1000.service", subtree="memory pids")
    tree.cgroup("/user.slice/user-1000.slice/user@1000.service/app.slice", subtree="memory pids")
    tree.cgroup(DELEGATED, procs=(os.getpid(),))
    return tree


def test_detect_delegated_subtree_as_the_user(tmp_path):
    """Detection as uid 65534 owning only its delegated subtree (like Delegate=yes):
    run in a forked child that drops to that uid, on a tree it may traverse."""
    base = Path(tempfile.mkdtemp(prefix="cgv2-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        tree = _delegated_tree(base / "cgroup2")
        service = tree.root / DELEGATED.lstrip("/").rsplit("/app.slice", 1)[0]
        # systemd chowns the delegated cgroup, its cgroup.procs/subtree_control/threads
        # and everything below to the user.
        for path in [service, *(service / f for f in ("cgroup.procs",
                                                      "cgroup.subtree_control",
                                                      "cgroup.threads"))]:
            os.chown(path, 65534, 65534)
        for dirpath, dirnames, filenames in os.walk(service / "app.slice"):
            for name in [*dirnames, *filenames, ""]:
                os.chown(os.path.join(dirpath, name), 65534, 65534)
        mi = base / "mountinfo"
        mi.write_text(f"30 23 0:26 / {tree.root} rw - cgroup2 cgroup2 rw,nsdelegate\n")
        cg = base / "cgroup"
        cg.write_text(f"0::{DELEGATED}\n")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                layout = detect(str(mi), str(cg))
                try:
                    new_manager("c1", Resources(cpuset="0"), layout=layout)
                    cpuset_error = None
                except CgroupUnavailableError as e:
                    cpuset_error = [e.setting, str(e)]
                os.write(w, json.dumps({
                    "mode": layout.mode, "usable": sorted(layout.usable),
                    "writable": sorted(layout.writable), "anchor": layout.unified.anchor_dir,
                    "cpuset_error": cpuset_error,
                    "manager": type(new_manager("c1", Resources(memory="64M", cpu=0.5),
                                                layout=layout)).__name__,
                }).encode())
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        assert os.waitpid(pid, 0)[1] == 0
        seen = json.loads(data)
        assert seen["mode"] == "v2"
        assert seen["anchor"] == str(tree.root) + DELEGATED
        # memory, pids are enabled for the scope; cpu can be enabled from the delegated
        # user@1000.service; cpuset stops at user-1000.slice, which the user cannot write.
        assert {"memory", "pids", "cpu"} <= set(seen["usable"])
        assert "cpuset" not in seen["usable"]
        assert seen["manager"] == "V2Manager"
        setting, message = seen["cpuset_error"]
        assert setting == "cpuset" and "cpuset=0 needs the cpuset cgroup controller" in message
    finally:
        shutil.rmtree(base)


def test_delegated_subtree_enables_controllers_top_down_and_moves_the_supervisor(
        tmp_path, writes):
    tree = _delegated_tree(tmp_path / "cgroup2")
    layout = tree.layout(tmp_path, DELEGATED)
    scope = tree.root / DELEGATED.lstrip("/")
    assert layout.unified.anchor_dir == str(scope)
    m = new_manager("c1", Resources(memory="64M", pids=16, cpu=0.5), layout=layout, ops=tree)
    m.create()
    service = scope.parent.parent
    written = [(Path(p).relative_to(tree.root).as_posix(), t) for p, t in writes]
    rel = DELEGATED.lstrip("/")
    # cpu is missing below user@1000.service: enabled there, then in app.slice ...
    assert written[0] == (f"{service.relative_to(tree.root)}/cgroup.subtree_control", "+cpu")
    assert written[1] == (f"{scope.parent.relative_to(tree.root)}/cgroup.subtree_control",
                          "+cpu")
    # ... then our process leaves the scope for the supervisor leaf, and only then does
    # the scope enable controllers for its children ("no internal processes").
    assert written[2] == (f"{rel}/{SUPERVISOR_LEAF}/cgroup.procs", f"{os.getpid()}\n")
    assert written[3] == (f"{rel}/cgroup.subtree_control", "+memory +pids +cpu")
    assert written[4] == (f"{rel}/pytest-isolate/cgroup.subtree_control", "+memory +pids +cpu")
    assert [w[0].rsplit("/", 1)[1] for w in written[5:]] == ["memory.max", "memory.swap.max",
                                                             "pids.max", "cpu.max"]
    assert m.moved == [os.getpid()]
    assert _read(scope / SUPERVISOR_LEAF / "cgroup.procs") == str(os.getpid())
    assert _read(scope / "pytest-isolate/c1/cpu.max") == "50000 100000"
    # Another process (an xdist worker) probing after the move is anchored at the scope,
    # not in the leaf.
    (tmp_path / "cgroup").write_text(f"0::{DELEGATED}/{SUPERVISOR_LEAF}\n")
    detect.cache_clear()
    assert detect(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup")).unified.anchor_dir \
        == str(scope)
    m.destroy()
    assert not (scope / "pytest-isolate").exists()
    assert (scope / SUPERVISOR_LEAF).is_dir()  # stays: documented


# -- the v2 manager on the fake tree -------------------------------------------------


def test_create_writes_every_limit_file(tmp_path, fake, writes):
    layout = fake.layout(tmp_path, "/system.slice/runner.service")
    m = new_manager("c1", FULL, layout=layout, ops=fake)
    assert isinstance(m, V2Manager)
    assert m.controllers == ("memory", "pids", "cpu", "cpuset")
    m.create()
    service = fake.root / "system.slice/runner.service"
    d = service / "pytest-isolate/c1"
    assert m.paths() == {"unified": str(d), "memory": str(d), "pids": str(d), "cpu": str(d),
                         "cpuset": str(d)}
    # Both processes of the service moved to the leaf before its subtree_control.
    assert m.moved == [os.getppid(), os.getpid()]
    assert _read(service / SUPERVISOR_LEAF / "cgroup.procs").split() == \
        [str(os.getppid()), str(os.getpid())]
    assert _read(service / "cgroup.subtree_control") == "+memory +pids +cpu +cpuset"
    assert _read(service / "pytest-isolate/cgroup.subtree_control") == \
        "+memory +pids +cpu +cpuset"
    assert _read(fake.root / "system.slice/cgroup.subtree_control") == \
        "cpuset cpu io memory pids"  # already enough: left alone
    assert _read(d / "memory.max") == str(64 * MiB)
    assert _read(d / "memory.swap.max") == "0"
    assert _read(d / "pids.max") == "16"
    assert _read(d / "cpu.max") == "50000 100000"
    assert _read(d / "cpu.weight") == "200"
    assert _read(d / "cpuset.cpus") == "0"
    assert _read(d / "cgroup.subtree_control") == ""  # the container is a leaf
    # Limits were written while the container was empty, after its mkdir.
    container_writes = [p for p, _ in writes if p.startswith(str(d))]
    assert [os.path.basename(p) for p in container_writes] == [
        "memory.max", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight", "cpuset.cpus"]
    m.destroy()
    assert not (service / "pytest-isolate").exists()
    assert service.is_dir()


def test_defaults_swap_off_and_nothing_else_written(tmp_path, fake, writes):
    m = new_manager("c1", Resources(), layout=fake.layout(tmp_path, "/"), ops=fake)
    assert m.controllers == ("memory", "pids")  # for usage figures
    m.create()
    d = fake.root / "pytest-isolate/c1"
    assert _read(d / "memory.max") == "max" and _read(d / "pids.max") == "max"
    assert _read(d / "memory.swap.max") == "0"  # swap off by default
    assert _read(fake.root / "cgroup.subtree_control") == "+memory +pids"
    # The true root (no cgroup.type) may hold processes: nobody was moved.
    assert m.moved == [] and not (fake.root / SUPERVISOR_LEAF).exists()
    assert [os.path.basename(p) for p, _ in writes] == [
        "cgroup.subtree_control", "cgroup.subtree_control", "memory.swap.max"]
    m.destroy()


@pytest.mark.parametrize(("swap", "expected"), [(None, "max"), ("32M", str(32 * MiB))])
def test_swap_settings(tmp_path, fake, swap, expected):
    m = new_manager("c1", Resources(memory="64M", memory_swap=swap),
                    layout=fake.layout(tmp_path, "/"), ops=fake)
    m.create()
    assert _read(fake.root / "pytest-isolate/c1/memory.swap.max") == expected
    m.destroy()


def test_no_swap_accounting(tmp_path):
    tree = FakeCgroup2(tmp_path / "cgroup2", swap=False)
    layout = tree.layout(tmp_path, "/")
    m = new_manager("c1", Resources(memory="64M"), layout=layout, ops=tree)
    m.create()  # swap 0 without memory.swap.max: nothing to switch off
    m.destroy()
    m = new_manager("c2", Resources(memory="64M", memory_swap="32M"), layout=layout, ops=tree)
    with pytest.raises(CgroupError, match=r"memory_swap=32M needs swap accounting") as info:
        m.create()
    assert info.value.setting == "memory_swap"
    assert not (tree.root / "pytest-isolate").exists()


def test_stats_parse_every_file(tmp_path, fake):
    m = new_manager("c1", Resources(), layout=fake.layout(tmp_path, "/"), ops=fake)
    m.create()
    d = fake.root / "pytest-isolate/c1"
    (d / "memory.current").write_text("1234\n")
    (d / "memory.peak").write_text("5678\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n"
                                     "oom_group_kill 0\n")
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n"
                                "system_usec 500000\nnr_periods 0\n")
    (d / "pids.current").write_text("3\n")
    (d / "pids.peak").write_text("7\n")
    st = m.stats()
    assert st.version == 2
    assert (st.memory_current, st.memory_peak, st.memory_limit) == (1234, 5678, None)
    assert st.oom_kills == 2 and m.oom_kills() == 2
    assert (st.cpu_usage, st.cpu_user, st.cpu_system) == (1.5, 1.0, 0.5)
    assert (st.cpu_quota, st.cpu_period) == (None, None)  # no cpu controller: no cpu.max
    assert (st.pids_current, st.pids_peak, st.pids_limit) == (3, 7, None)
    # The limited spellings.
    (d / "memory.max").write_text("67108864\n")
    (d / "pids.max").write_text("16\n")
    (d / "cpu.max").write_text("50000 100000\n")
    st = m.stats()
    assert (st.memory_limit, st.pids_limit) == (64 * MiB, 16)
    assert (st.cpu_quota, st.cpu_period, st.cpu_limit) == (50000, 100000, 0.5)
    (d / "cpu.max").write_text("max 100000\n")
    st = m.stats()
    assert (st.cpu_quota, st.cpu_period, st.cpu_limit) == (None, 100000, None)
    assert set(st.to_dict()) >= {"memory_peak", "oom_kills", "cpu_user", "pids_peak",
                                 "cpu_limit", "version"}
    m.destroy()


def test_peaks_missing_on_older_kernels_are_none(tmp_path):
    tree = FakeCgroup2(tmp_path / "cgroup2", memory_peak=False, pids_peak=False)
    m = new_manager("c1", Resources(), layout=tree.layout(tmp_path, "/"), ops=tree)
    m.create()
    st = m.stats()
    assert st.memory_peak is None and st.pids_peak is None
    assert st.memory_current == 0 and st.pids_current == 0
    m.destroy()


def test_add_pids_and_kill_through_cgroup_kill(tmp_path, fake, children, writes):
    m = new_manager("c1", Resources(pids=16), layout=fake.layout(tmp_path, "/"), ops=fake)
    m.create()
    a, b = children(), children()
    m.add(a)
    m.add(b)
    d = fake.root / "pytest-isolate/c1"
    assert m.pids() == sorted([a, b])
    assert _read(d / "cgroup.procs").split() == [str(a), str(b)]
    m.kill()
    assert (str(d / "cgroup.kill"), "1") in writes
    assert fake.kill_requests == [str(d)]
    for pid in (a, b):
        status = _reap(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert m.pids() == []
    assert not any(p.endswith("cgroup.freeze") for p, _ in writes)  # no fallback needed
    m.destroy()
    assert not d.exists()


def test_kill_without_cgroup_kill_freezes_kills_and_thaws(tmp_path, children, writes):
    """Kernels before 5.14: no cgroup.kill. The manager itself sends SIGKILL (os.kill is
    not mocked: the children really die) between a freeze and a thaw."""
    tree = FakeCgroup2(tmp_path / "cgroup2", kill_file=False).start()
    try:
        m = new_manager("c1", Resources(), layout=tree.layout(tmp_path, "/"), ops=tree)
        m.create()
        a, b = children(), children()
        m.add(a)
        m.add(b)
        m.kill()
        d = tree.root / "pytest-isolate/c1"
        seq = [(os.path.basename(p), t) for p, t in writes if p.startswith(str(d))]
        assert ("cgroup.freeze", "1") in seq and seq[-1] == ("cgroup.freeze", "0")
        assert seq.index(("cgroup.freeze", "1")) < seq.index(("cgroup.freeze", "0"))
        assert tree.kill_requests == []
        for pid in (a, b):
            status = _reap(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert m.pids() == [] and _read(d / "cgroup.freeze") == "0"
        m.destroy()
    finally:
        tree.stop()


def test_freeze_waits_for_frozen_in_cgroup_events(tmp_path, fake, writes):
    m = new_manager("c1", Resources(), layout=fake.layout(tmp_path, "/"), ops=fake)
    m.create()
    d = fake.root / "pytest-isolate/c1"
    m.freeze()
    assert (str(d / "cgroup.freeze"), "1") in writes
    assert "frozen 1" in _read(d / "cgroup.events")
    m.thaw()
    assert _read(d / "cgroup.freeze") == "0" and "frozen 0" in _read(d / "cgroup.events")
    m.destroy()


def test_freeze_that_never_completes_times_out_clearly(tmp_path):
    tree = FakeCgroup2(tmp_path / "cgroup2")  # no kernel thread: frozen stays 0
    m = new_manager("c1", Resources(), layout=tree.layout(tmp_path, "/"), ops=tree)
    m.create()
    with pytest.raises(CgroupError, match=r"timed out after 0.2 s waiting for container "
                                          r"'c1' to freeze"):
        m.freeze(timeout=0.2)
    assert _read(tree.root / "pytest-isolate/c1/cgroup.freeze") == "0"  # undone
    m.destroy()


def test_nested_parent_and_preexisting_parent(tmp_path, fake):
    layout = fake.layout(tmp_path, "/")
    m = new_manager("c1", FULL, parent="pytest-isolate/gw0", layout=layout, ops=fake)
    m.create()
    gw0 = fake.root / "pytest-isolate/gw0"
    assert _read(gw0 / "cgroup.subtree_control") == "+memory +pids +cpu +cpuset"
    assert _read(gw0 / "c1/cpu.max") == "50000 100000"
    m.destroy()
    assert not (fake.root / "pytest-isolate").exists()
    m.destroy()  # idempotent

    fake.cgroup("/mine")
    m = new_manager("c2", FULL, parent="mine", layout=layout, ops=fake)
    m.create()
    m.destroy()
    assert (fake.root / "mine").is_dir() and not (fake.root / "mine/c2").exists()


def test_absolute_parent_is_anchored_at_the_hierarchy_root(tmp_path, fake):
    layout = fake.layout(tmp_path, "/system.slice/runner.service")
    m = new_manager("c1", FULL, parent="/pytest-isolate", layout=layout, ops=fake)
    m.create()
    assert m.paths()["unified"] == str(fake.root / "pytest-isolate/c1")
    assert m.moved == []  # the root needs no evacuation
    m.destroy()


def test_refused_write_names_the_setting_and_leaves_nothing(tmp_path, fake):
    class NoCpuMax(DirOps):  # a container cgroup without cpu.max
        def mkdir(self, path):
            fake.mkdir(path)
            if os.path.basename(path) == "c1":
                os.unlink(os.path.join(path, "cpu.max"))

        def rmdir(self, path):
            fake.rmdir(path)

    m = new_manager("c1", Resources(cpu=0.5), layout=fake.layout(tmp_path, "/"),
                    ops=NoCpuMax())
    with pytest.raises(CgroupError) as info:
        m.create()
    assert info.value.setting == "cpu"
    assert "cpu=0.5 was refused" in str(info.value)
    assert "controller is not enabled" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not (fake.root / "pytest-isolate").exists()


def test_controller_the_host_lacks_is_unavailable(tmp_path):
    tree = FakeCgroup2(tmp_path / "cgroup2", "cpu io memory")
    layout = tree.layout(tmp_path, "/")
    with pytest.raises(CgroupUnavailableError, match=r"pids=16 needs the pids cgroup "
                                                     r"controller, which this host does not"):
        new_manager("c1", Resources(pids=16), layout=layout, ops=tree)
    m = new_manager("c1", Resources(memory="64M"), layout=layout, ops=tree)
    assert m.controllers == ("memory",)  # pids skipped: only wanted for usage figures


def test_load_manager_from_saved_paths(tmp_path, fake, children):
    m = new_manager("c1", Resources(), layout=fake.layout(tmp_path, "/"), ops=fake)
    m.create()
    pid = children()
    m.add(pid)
    other = load_manager("c1", json.loads(json.dumps(m.paths())), ops=fake)
    assert isinstance(other, V2Manager) and other.pids() == [pid]
    other.destroy()
    assert os.WTERMSIG(_reap(pid)) == signal.SIGKILL
    assert not (fake.root / "pytest-isolate/c1").exists()
    m.destroy()  # the parent, created by this process, goes too
    assert not (fake.root / "pytest-isolate").exists()


# -- the real unified hierarchy of this machine (core files only) ---------------------

LAYOUT = detect()
UNIFIED = LAYOUT.unified


@pytest.mark.skipif(os.geteuid() != 0 or UNIFIED is None or not LAYOUT.unified_writable
                    or not os.path.exists(os.path.join(UNIFIED.mountpoint, "cgroup.procs")),
                    reason="needs root and a writable cgroup2 mount")
def test_core_files_on_the_real_unified_hierarchy(children):
    m = V2Manager("c1", Resources(), f"pytest-isolate-t{os.getpid()}", UNIFIED)
    m.create()
    try:
        d = m.paths()["unified"]
        pid = children()
        m.add(pid)
        assert m.pids() == [pid]
        assert f"0::{d[len(UNIFIED.mountpoint):]}" in _read(f"/proc/{pid}/cgroup").splitlines()
        m.freeze()
        assert "frozen 1" in _read(f"{d}/cgroup.events")
        m.thaw()
        assert "frozen 0" in _read(f"{d}/cgroup.events")
        st = m.stats()
        assert st.cpu_usage is not None and st.memory_current is None
        m.kill()  # cgroup.kill exists on this kernel
        assert os.WTERMSIG(_reap(pid)) == signal.SIGKILL
        assert m.pids() == []
    finally:
        m.destroy()
    assert not os.path.exists(os.path.dirname(d))


def test_v2_processes_are_moved_by_the_host_not_by_themselves(tmp_path, fake):
    """A v2 process cannot move only itself across cgroups (cgroup.threads works only
    inside a threaded subtree), so the v2 manager offers no join files: the container
    moves its init with add(), through cgroup.procs."""
    m = new_manager("c1", Resources(pids=16), layout=fake.layout(tmp_path, "/"), ops=fake)
    assert m.join_files() is None
