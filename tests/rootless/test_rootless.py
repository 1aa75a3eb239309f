"""The rootless path, for real: pytest --isolate run by a user who is not root.

Run as an unprivileged user (``.ci/run`` does, after the root run). On this kind of
machine user namespaces are allowed and cgroup v1 is root's, so containers come from
a user namespace and the memory and pids limits fall back to rlimits, while a cpu
limit cannot be had: the ``isolate_unsupported`` policy decides.
"""

from __future__ import annotations

import os

import pytest

from pytest_isolate.runtime.probe import probe

pytestmark = pytest.mark.host


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_the_header_says_rootless_and_how_each_limit_is_enforced(pytester):
    pytester.makepyfile("def test_a():\n    pass\n")
    result = run(pytester, "--isolate")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        f"isolate: rootless (uid {os.geteuid()}): containers get a user namespace*",
        "isolate: limits: memory by RLIMIT_AS (no cgroup), pids by RLIMIT_NPROC (no cgroup),"
        " cpu not enforceable (no cgroup)",
        f"isolate: no cgroups: * not writable by uid {os.geteuid()}*",
    ])


def test_a_rootless_container_has_its_own_namespaces(pytester):
    uid = os.geteuid()
    pytester.makepyfile(f"""
        import os, socket

        def test_inside():
            assert os.getpid() == 2  # PID 1 is the container's init
            assert os.getuid() == 0  # root inside ...
            assert open("/proc/self/uid_map").read().split() == ["0", "{uid}", "1"]
            assert socket.gethostname() == "isolate"
            assert os.listdir("/sys/class/net") == ["lo"]
            with open("/tmp/scratch", "w") as f:  # a /tmp of its own
                f.write("x")
            try:
                os.setuid(12345)  # ... with no way to other ids
            except OSError:
                pass
            else:
                raise AssertionError("setuid to an unmapped uid succeeded")
    """)
    result = run(pytester, "--isolate", "-v")
    result.assert_outcomes(passed=1)
    assert not os.path.exists("/tmp/scratch")


def test_memory_and_pids_limits_hold_through_rlimits(pytester):
    pytester.makepyfile("""
        import os, time, pytest

        @pytest.mark.isolated(memory="64M")
        def test_small_allocation_fits():
            b = bytearray(16 * 2**20)

        @pytest.mark.isolated(memory="64M")
        def test_big_allocation_fails():
            with pytest.raises(MemoryError):
                b = bytearray(256 * 2**20)

        @pytest.mark.isolated(pids=16)
        def test_fork_bomb_stops_at_the_limit():
            n = 0
            with pytest.raises(BlockingIOError):
                for _ in range(200):
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
                    n += 1
            assert 5 < n < 16, n
    """)
    result = run(pytester, "-v")
    result.assert_outcomes(passed=3)


CPU_TEST = """
import pytest

@pytest.mark.isolated(cpu=0.5)
def test_needs_a_cpu_limit():
    pass

@pytest.mark.isolated(cpu=0.5)
def test_also():
    pass

@pytest.mark.isolated
def test_fine():
    pass
"""


def test_an_explicit_cpu_limit_stops_the_run_with_one_message(pytester):
    pytester.makepyfile(CPU_TEST)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-isolate: this host cannot give isolated tests what they ask for:",
        "- cpu=0.5 needs the cpu cgroup controller, which this host cannot give: * Fix: *"
        "(2 tests)",
        "Or run them anyway: --isolate-unsupported=warn (without it) or =skip.*",
    ])
    assert result.stderr.str().count("cpu=0.5 needs") == 1


def test_warn_runs_without_the_limit_and_warns_once(pytester):
    pytester.makepyfile(CPU_TEST)
    result = run(pytester, "--isolate-unsupported=warn")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*IsolateWarning: cpu=0.5 needs the cpu cgroup controller*"])


def test_skip_skips_what_needs_it(pytester):
    pytester.makeini("[pytest]\nisolate_unsupported = skip\n")
    pytester.makepyfile(CPU_TEST)
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED * isolate: cpu=0.5 needs the cpu cgroup "
                                 "controller, which this host cannot give (*)"])


def test_the_untrusted_profile_runs_rootless_as_its_own_uid(pytester, monkeypatch):
    monkeypatch.setenv("ISOLATE_SECRET", "hunter2")
    pytester.makepyfile("""
        import os

        def test_sandboxed(tmp_path):
            assert os.getuid() == 65534 and os.getgid() == 65534
            assert "ISOLATE_SECRET" not in os.environ
            assert os.environ["HOME"] == "/tmp"
            (tmp_path / "ok").write_text("tmp_path stays writable")
            try:
                open("/etc/isolate-probe", "w")
            except OSError:
                pass
            else:
                raise AssertionError("wrote under a read-only root")
    """)
    # the profile's cpu limit cannot be had rootless: a default, so a warning
    result = run(pytester, "--isolate", "--isolate-profile=untrusted", "-W",
                 "ignore::pytest_isolate.plugin.IsolateWarning")
    result.assert_outcomes(passed=1)


def test_the_probe_finds_the_user_namespace_path_and_no_cgroups():
    p = probe(refresh=True)
    rows = {f.name: f for f in p.features}
    assert not p.root and not p.full
    assert rows["user namespace"].available
    assert rows["pid namespace"].how == "unshare in a user namespace"
    assert not rows["cgroup memory"].available and rows["cgroup memory"].fix
    assert rows["cgroup memory"].how == "limit by RLIMIT_AS instead"


def test_without_user_namespaces_the_run_stops_naming_the_cause(pytester):
    """As GitHub's ubuntu-24.04 runners refuse unprivileged user namespaces (AppArmor):
    injected here into the probe, the machine allows them."""
    pytester.makeconftest('''
import dataclasses
from pytest_isolate.runtime import probe as _probe

_real = _probe.probe

def _fake(**kw):
    p = _real(**kw)
    return dataclasses.replace(p, features=tuple(
        dataclasses.replace(f, available=False, why_not="kernel.apparmor_restrict_"
                            "unprivileged_userns=1: AppArmor refuses them",
                            fix="run pytest with sudo")
        if f.name == "user namespace" else f for f in p.features))

_probe.probe = _fake
''')
    pytester.makepyfile("def test_a():\n    pass\n")
    result = run(pytester, "--isolate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "- an isolated test needs its user namespace, which this host cannot give: "
        "kernel.apparmor_restrict_unprivileged_userns=1: AppArmor refuses them. "
        "Fix: run pytest with sudo (1 test)"])


def test_grading_with_run_isolated_under_the_untrusted_profile(pytester):
    """run_isolated(profile="untrusted") rootless: the profile's cpu limit cannot be
    had (a default: a warning), memory and pids hold through rlimits, the call runs
    as uid 65534 and comes back as data; with no cgroups there are no usage figures."""
    pytester.makepyfile("""
        import os

        def answer():
            return os.getuid()

        def bomb():
            while True:
                os.fork()

        def test_grade(run_isolated):
            r = run_isolated(answer, profile="untrusted", timeout=60)
            assert r.ok and r.value == 65534, r.describe()
            assert r.usage.memory_peak is None
            r = run_isolated(bomb, profile="untrusted", pids=32, timeout=5)
            assert not r.ok and not r.timed_out, r.describe()
    """)
    result = run(pytester, "-W", "ignore::pytest_isolate.plugin.IsolateWarning")
    result.assert_outcomes(passed=1)
