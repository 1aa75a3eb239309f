"""What happens when this host cannot give a test what it asks for: each missing
capability injected into the probe of a pytest run of its own (this machine has them
all; nothing global changes), with the one message and the policy outcomes checked."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.host

INJECT = '''
import dataclasses
from pytest_isolate.runtime import probe as _probe

_real = _probe.probe
MISSING = {missing!r}

def _fake(**kw):
    p = _real(**kw)
    return dataclasses.replace(p, features=tuple(
        dataclasses.replace(f, available=False, why_not="injected: " + f.name + " is gone",
                            fix="undo the injection")
        if f.name in MISSING else f for f in p.features))

_probe.probe = _fake
'''


def inject(pytester: pytest.Pytester, *missing: str) -> None:
    pytester.makeconftest(INJECT.format(missing=set(missing)))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


TESTS = """
import os, pytest

def test_plain():
    assert os.getpid() != 2

@pytest.mark.isolated
def test_isolated_one():
    pass

@pytest.mark.isolated(cpu=0.5)
def test_isolated_two():
    pass
"""


def test_no_namespaces_stops_the_run_once_naming_cause_and_fix(pytester):
    inject(pytester, "pid namespace")
    pytester.makepyfile(TESTS)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-isolate: this host cannot give isolated tests what they ask for:",
        "- an isolated test needs its pid namespace, which this host cannot give: "
        "injected: pid namespace is gone. Fix: undo the injection (2 tests)",
        "Or run them anyway: --isolate-unsupported=warn (without it) or =skip. "
        "'pytest-isolate doctor' shows what this host supports.",
    ])
    assert result.stderr.str().count("pid namespace is gone") == 1


def test_warn_without_namespaces_runs_the_tests_unisolated_with_one_warning(pytester):
    inject(pytester, "pid namespace")
    pytester.makepyfile(TESTS.replace("pass", "assert os.getpid() != 2"))
    result = run(pytester, "--isolate-unsupported=warn")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*IsolateWarning: an isolated test needs its pid namespace,"
                                 " which this host cannot give*Tests run without it*"])


def test_skip_without_namespaces_skips_the_isolated_tests(pytester):
    inject(pytester, "pid namespace")
    pytester.makepyfile(TESTS)
    result = run(pytester, "--isolate-unsupported=skip", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED * isolate: an isolated test needs its pid "
                                 "namespace, which this host cannot give (injected: *)"])


def test_an_explicit_cpu_limit_without_the_cpu_cgroup_is_an_error_others_run(pytester):
    inject(pytester, "cgroup cpu")
    pytester.makepyfile(TESTS)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["- cpu=0.5 needs the cpu cgroup controller, which this host "
                                 "cannot give: injected: cgroup cpu is gone. Fix: undo the "
                                 "injection (1 test)"])
    result = run(pytester, "--isolate-unsupported=warn")
    result.assert_outcomes(passed=3, warnings=1)


def test_missing_seccomp_is_a_warning_for_the_default_profile_an_error_when_asked(pytester):
    inject(pytester, "seccomp")
    pytester.makepyfile(TESTS.replace("cpu=0.5", ""))
    result = run(pytester)  # the default profile's seccomp: a default, not a request
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*IsolateWarning: seccomp='default' needs seccomp filters*"])
    result = run(pytester, "--isolate-seccomp=strict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["- seccomp='strict' needs seccomp filters, which this host "
                                 "cannot give: injected: seccomp is gone*(2 tests)"])


def test_a_memory_limit_without_the_memory_cgroup_falls_back_to_rlimit_as(pytester):
    inject(pytester, "cgroup memory")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolated(memory="64M")
        def test_fits():
            b = bytearray(16 * 2**20)

        @pytest.mark.isolated(memory="64M")
        def test_too_big():
            with pytest.raises(MemoryError):
                bytearray(256 * 2**20)
    """)
    result = run(pytester, "--isolate")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["isolate: limits: memory by RLIMIT_AS (no cgroup), pids by "
                                 "cgroup, cpu by cgroup"])


def test_a_bad_policy_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nisolate_unsupported = maybe\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unsupported*'maybe'*error, warn or skip*"])
    result = run(pytester, "-p", "no:randomly", "--isolate-unsupported=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --isolate-unsupported: invalid choice: 'maybe'*"])


CALLS = """
import pytest

def add(a, b):
    return a + b

def test_untrusted_profile_default_cpu(run_isolated):
    r = run_isolated(add, 1, 2, profile="untrusted", timeout=30)
    assert r.ok and r.value == 3, r.describe()

def test_explicit_cpu(run_isolated):
    r = run_isolated(add, 1, 2, cpu=0.5)
    assert r.value == 3

@pytest.mark.isolated
def test_explicit_cpu_nested(run_isolated):
    r = run_isolated(add, 1, 2, cpu=0.5)
    assert r.value == 3
"""


def test_run_isolated_follows_the_unsupported_policy(pytester):
    """A call asking for a limit the host cannot give: a profile's default is a
    warning and the call runs without it; an explicit one is a RunIsolatedError (or,
    with the policy, runs with a warning, or skips the calling test), in a plain test
    as in an isolated one."""
    inject(pytester, "cgroup cpu")
    pytester.makepyfile(CALLS)
    result = run(pytester, "-rs", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*RunIsolatedError: run_isolated(): cpu=0.5 needs the cpu "
                                 "cgroup controller*--isolate-unsupported=warn*"])
    failures = result.stdout.str().split("= FAILURES =")[1].split("warnings summary")[0]
    assert "sandbox.py" not in failures  # the traceback ends at the call
    run(pytester, "--isolate-unsupported=warn").assert_outcomes(passed=3, warnings=1)
    result = run(pytester, "--isolate-unsupported=skip", "-rs")
    result.assert_outcomes(skipped=3)  # a configured policy covers profile defaults too
    result.stdout.fnmatch_lines(["*isolate: cpu=0.5 needs the cpu cgroup controller*"])
