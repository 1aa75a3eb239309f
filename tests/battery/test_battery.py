"""The containment battery: hostile and faulty test files (``items/``) run through
the plugin in a pytest process of their own, with the host checked from outside.

Each item module holds an ``EXPECT`` table, read here with ``ast`` (the host never
imports a hostile module): test name -> (outcome, text its failure must contain).
A run is *contained* when every test ended as expected, the pytest process exited
normally, and the host kept nothing: no process, cgroup, mount, network namespace,
file in /tmp or /dev/shm, and its hostname. ``-p battery_figures`` -- loaded by
``tests/battery/conftest.py`` -- prints the figures at the end of the run.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hostcheck import Snapshot, leftovers

ITEMS = Path(__file__).parent / "items"
SECRET = "battery-secret-value-7f3a"

pytestmark = [pytest.mark.host, pytest.mark.skipif(
    os.geteuid() != 0, reason="the battery starts containers: needs root")]


def expectations(item: Path) -> dict[str, tuple[str, str]]:
    tree = ast.parse(item.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXPECT":
            value: dict[str, tuple[str, str]] = ast.literal_eval(node.value)
            return value
    raise AssertionError(f"{item.name} has no EXPECT table")


def _listing(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


def outcomes(xml: Path) -> dict[str, tuple[str, str]]:
    """test name -> (passed/failed/error/skipped, message and text) from junitxml."""
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml).iter("testcase"):
        kind, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = {"failure": "failed"}.get(child.tag, child.tag)
                text = f"{child.get('message', '')}\n{child.text or ''}"
                break
        out[case.get("name", "")] = (kind, text)
    return out


class Run:
    """One item run: its outcomes, exit status, peak RSS and what the host kept."""

    def __init__(self, item: Path, workdir: Path, secret_file: str) -> None:
        self.item = item
        self.xml = workdir / f"{item.stem}.xml"
        env = dict(os.environ, BATTERY_SECRET=SECRET, BATTERY_SECRET_FILE=secret_file)
        before = Snapshot.take()
        tmp_before, shm_before = _listing("/tmp"), _listing("/dev/shm")
        hostname = socket.gethostname()
        start = time.monotonic()
        log = workdir / f"{item.stem}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--isolate", "-q",
                 "-rA", f"--junitxml={self.xml}", str(workdir / item.name)],
                cwd=workdir, env=env, stdout=f, stderr=subprocess.STDOUT)
        status, rusage = _wait4(proc, deadline=start + 600)
        self.seconds = time.monotonic() - start
        self.exit_status = os.waitstatus_to_exitcode(status)
        self.output = log.read_text("utf-8", "replace")
        # the pytest process's own peak (wait4's figure would include its containers)
        rss = workdir / "peak_rss_kib"
        self.peak_rss = int(rss.read_text()) if rss.exists() else 0
        del rusage
        problems = leftovers(before, os.getpid(), wait=5.0)
        new_tmp = {n for n in _listing("/tmp") - tmp_before if not _another_runs_workdir(n)}
        new_shm = {n for n in _listing("/dev/shm") - shm_before
                   if not _another_runs_workdir(n)}
        if new_tmp:
            problems.append(f"/tmp: {sorted(new_tmp)[:5]}")
        if new_shm:
            problems.append(f"/dev/shm: {sorted(new_shm)[:5]}")
        if socket.gethostname() != hostname:
            problems.append(f"hostname changed to {socket.gethostname()!r}")
        self.host_problems = problems


def _workdirs_of(pid: int) -> list[str]:
    """The work directories of the run ``pid`` (in memory, see fast_tmpdir, or in
    /tmp)."""
    from pytest_isolate.plugin import fast_tmpdir

    return [os.path.join(d, n) for d in dict.fromkeys((fast_tmpdir(), "/tmp"))
            for n in os.listdir(d) if n.startswith(f"pytest-isolate-{pid}-")]


def _another_runs_workdir(name: str) -> bool:
    """The work directory of another pytest run still going (not ours to judge)."""
    from hostcheck import descendants, processes

    m = re.match(r"pytest-isolate-(\d+)-", name)
    if m is None:
        return False
    pid = int(m.group(1))
    procs = processes()
    return pid in procs and pid not in descendants(os.getpid(), procs) | {os.getpid()}


def _wait4(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, os.struct_rusage]:
    """Wait for ``proc`` with its resource usage (peak RSS); kill it at the deadline."""
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, rusage
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.05)


# Loaded by the item's pytest process (the host side, never a container): its own
# peak RSS when it ends.
PEAK_RSS_CONFTEST = """
import os

def pytest_unconfigure(config):
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM")).split()[1]
    with open(os.path.join(os.path.dirname(__file__), "peak_rss_kib"), "w") as f:
        f.write(hwm)
"""

ITEM_FILES = sorted(p.name for p in ITEMS.glob("*.py"))


@pytest.fixture
def secret_file():
    """A private file in root's home (the untrusted profile must hide it), and a host
    daemon's socket file anyone may connect to (untrusted code must not reach it).
    Fixed names: the items know them, since the untrusted environment drops ours."""
    import threading

    path = Path("/root/.battery-secret")
    path.write_text(SECRET)
    path.chmod(0o600)
    sock_path = "/var/tmp/battery-host.sock"
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    os.chmod(sock_path, 0o777)
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            conn.sendall(b"host daemon")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield str(path)
    stop.set()
    thread.join()
    server.close()
    os.unlink(sock_path)
    path.unlink()


@pytest.mark.parametrize("name", ITEM_FILES)
def test_item_is_contained(name, tmp_path_factory, secret_file, battery_figures):
    workdir = tmp_path_factory.mktemp(f"battery-{Path(name).stem}")
    (workdir / name).write_text((ITEMS / name).read_text())
    (workdir / "conftest.py").write_text(PEAK_RSS_CONFTEST)
    expect = expectations(ITEMS / name)
    run = Run(ITEMS / name, workdir, secret_file)
    got = outcomes(run.xml) if run.xml.exists() else {}
    wrong = []
    for test, (outcome, text) in expect.items():
        kind, message = got.get(test, ("missing", ""))
        if kind not in outcome.split("|") or text not in message:
            wrong.append(f"{test}: expected {outcome} {text!r}, got {kind} "
                         f"{message.strip()[:300]!r}")
    unexpected = sorted(set(got) - set(expect))
    failed_expected = any(set(o.split("|")) & {"failed", "error"} for o, _ in expect.values())
    expected_status = 1 if failed_expected else 0
    contained = sum(1 for t in expect if t in got and got[t][0] in expect[t][0].split("|")
                    and expect[t][1] in got[t][1])
    battery_figures.append({
        "item": Path(name).stem, "tests": len(expect), "contained": contained,
        "host_ok": not run.host_problems, "exit": run.exit_status,
        "peak_rss_mib": run.peak_rss / 1024, "seconds": run.seconds,
    })
    assert not wrong, "\n".join(wrong) + "\n" + run.output[-3000:]
    assert not unexpected, unexpected
    assert run.exit_status == expected_status, run.output[-3000:]
    assert "INTERNALERROR" not in run.output
    assert not run.host_problems, run.host_problems
    # what a container sends or prints never grows the pytest process without bound
    assert 0 < run.peak_rss < 512 * 1024, f"pytest peak RSS {run.peak_rss} KiB"


# ----------------------------------------------------------- the pytest process itself

SLEEPERS = """
import subprocess, time, pytest

@pytest.mark.parametrize("n", range(3))
def test_sleeps(n):
    subprocess.Popen(["sleep", "300"])  # a child of its own, too
    time.sleep(300)
"""


def _start_sleepers(workdir: Path) -> subprocess.Popen[bytes]:
    (workdir / "test_sleepers.py").write_text(SLEEPERS)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--isolate", "-q",
         "test_sleepers.py"], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for_payload(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    from hostcheck import descendants, processes

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        procs = processes()
        if any(procs[p][1] == "sleep" for p in descendants(proc.pid, procs) if p in procs):
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no test started in time")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupting_the_run_ends_it_cleanly(tmp_path, sig, battery_figures):
    import signal

    before = Snapshot.take()
    proc = _start_sleepers(tmp_path)
    _wait_for_payload(proc)
    proc.send_signal(getattr(signal, sig))
    out, _ = proc.communicate(timeout=60)
    text = out.decode()
    problems = leftovers(before, os.getpid(), wait=5.0)
    battery_figures.append({"item": f"pytest {sig}", "tests": 1,
                            "contained": int(proc.returncode == 2 and not problems),
                            "host_ok": not problems, "exit": proc.returncode,
                            "peak_rss_mib": float("nan"), "seconds": float("nan")})
    assert proc.returncode == 2, text  # pytest's "interrupted"
    assert "KeyboardInterrupt" in text, text
    assert re.search(r"(no tests ran|\d+ \w+).* in [\d.]+s\s*$", text), text  # summary
    assert not problems, problems


def test_pytest_killed_mid_run_leaves_no_process_and_the_next_run_collects(
        tmp_path, battery_figures):
    before = Snapshot.take()
    proc = _start_sleepers(tmp_path)
    _wait_for_payload(proc)
    pid = proc.pid
    proc.kill()  # SIGKILL: no clean-up of any kind in the pytest process
    proc.communicate(timeout=60)
    problems = leftovers(before, os.getpid(), wait=5.0)
    # the containers died with it (their processes have a parent-death signal)
    assert not [p for p in problems if p.startswith("process")], problems
    workdir_left = _workdirs_of(pid)  # with its containers' state in it
    assert workdir_left or problems  # there was something to collect
    # the next run collects what the killed one left
    (tmp_path / "test_sleepers.py").write_text("import pytest\n\n"
                                               "@pytest.mark.isolated\n"
                                               "def test_ok():\n    pass\n")
    nxt = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "test_sleepers.py"], cwd=tmp_path, capture_output=True, timeout=120)
    assert nxt.returncode == 0, nxt.stdout.decode()
    after = leftovers(before, os.getpid(), wait=5.0)
    left_tmp = _workdirs_of(pid)
    battery_figures.append({"item": "pytest SIGKILL", "tests": 1,
                            "contained": int(not after and not left_tmp),
                            "host_ok": not after and not left_tmp, "exit": -9,
                            "peak_rss_mib": float("nan"), "seconds": float("nan")})
    assert not after, after
    assert not left_tmp, left_tmp
