"""The default profile (with a read-only root): the container's /dev holds only
harmless device nodes, so no block device, loop device, kernel log or userfaultfd of
the host's can be reached through it."""

import os

import pytest

pytestmark = pytest.mark.isolated(readonly=True)

EXPECT = {
    "test_no_host_devices": ("passed", ""),
    "test_the_usual_devices_work": ("passed", ""),
}


def test_no_host_devices():
    for name in ("vda", "sda", "loop0", "loop-control", "kmsg", "userfaultfd", "vsock",
                 "mem", "kvm", "fuse"):
        assert not os.path.exists(f"/dev/{name}"), name


def test_the_usual_devices_work():
    import pty

    with open("/dev/null", "w") as f:
        f.write("x")
    assert open("/dev/zero", "rb").read(4) == b"\0" * 4
    assert len(open("/dev/urandom", "rb").read(16)) == 16
    master, slave = pty.openpty()
    os.write(master, b"ok\n")
    assert os.read(slave, 3) == b"ok\n"
