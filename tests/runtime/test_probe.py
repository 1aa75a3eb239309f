"""The host probe and ``pytest-isolate doctor``: real features tried for real, and the
missing ones produced for real too -- as an unprivileged user (user namespaces are
allowed here, v1 cgroups are root's) and inside one of our own containers (seccomp
refuses unshare, no CAP_SYS_ADMIN, a read-only /sys), the way a plain Docker
container is locked down. Nothing global is changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# imported here, as root: the unprivileged child below needs no readable source files
from pytest_isolate.runtime import Config, Process, capabilities, network, probe, seccomp
from pytest_isolate.runtime import cgroups as _cgroups

pytestmark = pytest.mark.host

NAMESPACE_ROWS = [f"{n} namespace" for n in ("pid", "mount", "uts", "ipc", "net", "cgroup")]
_preloaded = (capabilities.backend_name(), network.loopback_up, _cgroups.detect(),
              seccomp.load_profile("default").compile())  # the binding is loaded once


def _rows(data):
    return {f["name"]: f for f in data["features"]}


def test_as_root_here_every_feature_is_available():
    result = probe.probe(refresh=True)
    assert result.root
    missing = [(f.name, f.why_not) for f in result.features if not f.available]
    assert missing == [] and result.full
    rows = _rows(result.to_dict())
    assert all(rows[n]["how"] == "unshare" for n in NAMESPACE_ROWS)
    assert rows["cgroup memory"]["how"].startswith("v1 at /sys/fs/cgroup/memory")
    assert set(rows) >= {"user namespace", "mount proc and tmpfs", "loopback up", "seccomp",
                         "drop capabilities", "cgroup pids", "cgroup cpu"}
    assert probe.probe() is probe.probe()  # probed once per process


def _probe_as(uid: int):
    """The probe run by a child that dropped to ``uid`` (no capabilities left)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            # a process that dropped from root is not dumpable, so its /proc/self files
            # stay root's; a user's own process is (it can write its uid_map)
            from pytest_isolate.runtime import linux

            linux.prctl(4, 1)  # PR_SET_DUMPABLE
            data = json.dumps(probe.probe(refresh=True).to_dict()).encode()
            while data:
                data = data[os.write(w, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    return json.loads(out)


def test_an_unprivileged_user_gets_namespaces_through_a_user_namespace_not_v1_cgroups():
    data = _probe_as(65534)
    rows = _rows(data)
    assert not data["root"] and not data["full"]
    assert rows["user namespace"]["available"] and rows["user namespace"]["required"]
    for name in NAMESPACE_ROWS:
        assert rows[name]["available"] and rows[name]["how"] == "unshare in a user namespace"
    assert rows["mount proc and tmpfs"]["available"] and rows["loopback up"]["available"]
    assert rows["seccomp"]["available"] and rows["drop capabilities"]["available"]
    for c in ("memory", "pids", "cpu"):
        row = rows[f"cgroup {c}"]
        assert not row["available"]
        assert "not writable by uid 65534" in row["why_not"]
        assert "no delegation" in row["why_not"] and "root" in row["fix"]


def _probe_dict():
    return probe.probe(refresh=True).to_dict()


def test_in_a_locked_down_container_each_missing_feature_is_named(factory):
    """Our default container is what a plain Docker container is: seccomp refuses
    unshare, CAP_SYS_ADMIN is gone, /sys is read-only."""
    with factory.create("locked", Config()) as c:
        st = c.run(Process(target=_probe_dict, timeout=60))
    assert st.ok, st.describe()
    rows = _rows(st.value)
    assert st.value["root"] and not st.value["full"]
    for name in NAMESPACE_ROWS:
        row = rows[name]
        assert not row["available"], name
        assert "unshare failed as root" in row["why_not"] and "--privileged" in row["fix"]
    assert not rows["user namespace"]["available"]
    assert not rows["user namespace"]["required"]  # as root it is not needed
    assert not rows["mount proc and tmpfs"]["available"]
    assert not rows["cgroup memory"]["available"]
    assert "read-only" in rows["cgroup memory"]["why_not"]
    assert rows["cgroup pids"]["how"] == "limit by RLIMIT_NPROC instead"
    assert rows["seccomp"]["available"]  # a filter on top of a filter is allowed


@pytest.mark.parametrize(("sysctls", "cause", "fix"), [
    ({"kernel.apparmor_restrict_unprivileged_userns": "1"},
     "kernel.apparmor_restrict_unprivileged_userns=1", "sudo"),
    ({"kernel.unprivileged_userns_clone": "0"}, "kernel.unprivileged_userns_clone=0",
     "sysctl -w kernel.unprivileged_userns_clone=1"),
    ({"user.max_user_namespaces": "0"}, "user.max_user_namespaces=0", "sudo"),
    ({}, "unshare(CLONE_NEWUSER) failed (EPERM", "--privileged"),
])
def test_a_refused_user_namespace_names_its_cause_and_the_fix(sysctls, cause, fix):
    got_cause, got_fix = probe.userns_cause("EPERM: Operation not permitted", sysctls.get)
    assert cause in got_cause and fix in got_fix


def test_on_cgroup_v2_without_delegation_the_fix_is_a_delegated_scope(tmp_path):
    """This machine has no usable v2 controllers: the layout is a fake one."""
    import dataclasses

    from test_cgroups_v2 import FakeCgroup2

    tree = FakeCgroup2(tmp_path / "cgroup2")
    # the controllers exist, but none is enabled below this process, nor may it
    layout = dataclasses.replace(tree.layout(tmp_path, "/"), usable=frozenset(),
                                 writable=frozenset())
    assert layout.mode == "v2" and layout.hierarchy("memory") is not None
    rows = {f.name: f for f in probe.probe(cgroup_layout=layout).features}
    for c in ("memory", "pids", "cpu"):
        assert not rows[f"cgroup {c}"].available
        assert "Delegate=yes" in rows[f"cgroup {c}"].fix


def test_doctor_prints_the_table_and_exits_0_when_full_isolation_is_possible():
    out = subprocess.run([sys.executable, "-m", "pytest_isolate", "doctor"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("pytest-isolate doctor: root, Linux ")
    assert any(line.split()[:3] == ["pid", "namespace", "yes"] for line in lines)
    assert any(line.startswith("cgroup memory") and " yes " in line for line in lines)
    assert lines[-1] == "full isolation is possible here"
    js = subprocess.run([sys.executable, "-m", "pytest_isolate", "doctor", "--json"],
                        capture_output=True, text=True, timeout=60)
    assert js.returncode == 0 and json.loads(js.stdout)["full"] is True


def test_doctor_exits_1_and_names_what_is_missing(factory):
    from pytest_isolate import cli

    def run_doctor():
        return cli.doctor()

    with factory.create("doc", Config()) as c:
        st = c.run(Process(target=run_doctor, timeout=60))
    assert st.value == 1, st.describe()


def test_a_bad_command_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "pytest_isolate", "frobnicate"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice: 'frobnicate'" in out.stderr
