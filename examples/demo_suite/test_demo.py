"""A small suite that shows what `pytest --isolate` gives each test.

    .venv/bin/python -m pytest --isolate examples/demo_suite -v

Every test here passes under --isolate (and several would fail without it).
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


@pytest.fixture(scope="module")
def shared_counter():
    # Set up once, in the pytest process itself; every isolated test inherits it.
    return {"setups": 1}


def test_own_pid_namespace():
    assert os.getpid() != 1
    with open("/proc/1/comm") as f:
        assert f.read().strip() == "isolate-init"


def test_private_tmp_part_1():
    with open("/tmp/leftover", "w") as f:
        f.write("written by one test")


def test_private_tmp_part_2():
    assert not os.path.exists("/tmp/leftover")  # the previous test's /tmp is gone


def test_own_hostname():
    assert socket.gethostname() == "isolate"
    with pytest.raises(PermissionError):  # no CAP_SYS_ADMIN: Docker's default capabilities
        socket.sethostname("changed-by-a-test")


def test_no_network_but_loopback():
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=2)


def test_left_running_processes_die_with_the_test():
    subprocess.Popen(["sleep", "300"])  # gone as soon as this test's container ends


def test_module_fixture_is_shared(shared_counter):
    assert shared_counter["setups"] == 1


@pytest.mark.isolated(memory="256M", pids=32, timeout=30)
def test_with_limits(tmp_path):
    data = bytearray(64 * 2**20)  # fits in the limit
    (tmp_path / "out").write_bytes(data[:10])
    assert (tmp_path / "out").stat().st_size == 10


@pytest.mark.isolated(profile="untrusted")
def test_untrusted_code_sees_little():
    assert os.getuid() == 65534
    assert "HOME" in os.environ and os.environ["HOME"] == "/tmp"
    with pytest.raises(OSError):
        open("/etc/planted", "w")
