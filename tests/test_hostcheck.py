"""The suite's own leak check must see what it is meant to catch."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import pytest
from hostcheck import Snapshot, leftovers

pytestmark = [pytest.mark.host, pytest.mark.skipif(
    os.geteuid() != 0, reason="creates namespaces and mounts: needs root")]


def test_sees_a_process_left_in_a_pid_namespace():
    before = Snapshot.take()
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "30"])
    try:
        problems = leftovers(before, os.getpid(), wait=0.5)
        assert any("processes" in p for p in problems), problems
    finally:
        p.kill()
        p.wait()
    assert leftovers(before, os.getpid()) == []


def test_sees_a_child_never_reaped():
    before = Snapshot.take()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            problems = leftovers(before, os.getpid(), wait=0)
            if problems:
                break
            time.sleep(0.01)
        assert any("never reaped" in p and str(pid) in p for p in problems), problems
    finally:
        os.waitpid(pid, 0)
    assert leftovers(before, os.getpid()) == []


def test_sees_a_mount_and_a_cgroup():
    before = Snapshot.take()
    d = tempfile.mkdtemp(prefix="hostcheck-", dir="/var/tmp")
    cg = "/sys/fs/cgroup/pids/hostcheck-isolate-probe"
    subprocess.run(["mount", "-t", "tmpfs", "none", d], check=True)
    os.mkdir(cg)
    try:
        problems = leftovers(before, os.getpid(), wait=0)
        assert any("mounts" in p and d in p for p in problems), problems
        assert any("cgroups" in p and cg in p for p in problems), problems
    finally:
        subprocess.run(["umount", d], check=True)
        os.rmdir(d)
        os.rmdir(cg)
    assert leftovers(before, os.getpid()) == []


def test_cgroups_of_another_running_pytest_are_not_ours():
    """A cgroup under another live process's ``pytest-isolate-<pid>`` parent is not a
    leftover of this run; under a dead one's, or our own, it is."""
    from hostcheck import _another_runs, processes

    procs = processes()
    other = subprocess.Popen(["sleep", "30"])
    try:
        procs = processes()
        base = "/sys/fs/cgroup/pids/pytest-isolate-"
        assert _another_runs(f"{base}{other.pid}/c1", {os.getpid()}, procs)
        assert not _another_runs(f"{base}{other.pid}/c1", {os.getpid(), other.pid}, procs)
        assert not _another_runs(f"{base}{os.getpid()}", {os.getpid()}, procs)
        assert not _another_runs("/sys/fs/cgroup/pids/pytest-isolate/c1", {os.getpid()}, procs)
    finally:
        other.kill()
        other.wait()
    dead = other.pid
    assert not _another_runs(f"/sys/fs/cgroup/pids/pytest-isolate-{dead}", {os.getpid()},
                             processes())
