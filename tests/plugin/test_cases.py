"""The field cases (tests/plugin/cases), each run through ``pytest --isolate``."""

from __future__ import annotations

import textwrap

import pytest

BASE = ["-p", "no:cacheprovider", "--isolate"]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_subprocess(*BASE, *args, timeout=120)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    return result


def test_c01_module_globals_reach_the_container_without_copying(pytester, case):
    result = run(pytester, case("c01"))
    result.assert_outcomes(passed=1)


def test_c02_unpicklable_exception_reads_as_in_a_plain_run(pytester, case):
    result = run(pytester, case("c02"))
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*def test_raises():*",
        '>       raise ApiError("upstream failed", 503)',
        "E       c02_custom_exception.ApiError: upstream failed",
    ])
    assert "TypeError" not in result.stdout.str()
    assert result.ret == 1


def test_c03_report_extras_reach_the_host_and_unjsonable_ones_are_dropped(pytester, case):
    pytester.makeconftest(textwrap.dedent("""
        import json, threading, pytest

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(item, call):
            rep = (yield).get_result()
            rep.debug_handle = threading.Lock()
            rep.meta = {"owner": "team-a"}

        def pytest_runtest_logreport(report):
            if report.when == "call":
                with open("meta.json", "w") as f:
                    json.dump(report.meta, f)
    """))
    result = run(pytester, case("c03"), "-rxX")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["*XFAIL*test_xfail_inside*dynamic reason*"])
    assert (pytester.path / "meta.json").read_text() == '{"owner": "team-a"}'
    out = result.stdout.str()
    assert out.count("'debug_handle'") == 1 and "not JSON-compatible" in out
    assert result.ret == 0


def test_c04_warnings_come_back_under_their_node_id(pytester, case):
    name = case("c04")
    result = run(pytester, name)
    result.assert_outcomes(failed=1, passed=2, warnings=1)
    result.stdout.fnmatch_lines([
        "*warnings summary*",
        f"{name}::test_warns",
        "*UserWarning: api v1, use v2*",
    ])
    result.stdout.fnmatch_lines(["*1 failed, 2 passed, 1 warning*"])


def test_c04_command_line_filters_reach_the_container(pytester, case):
    result = run(pytester, case("c04"), "-W", "error::UserWarning")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["FAILED *test_warns*UserWarning: api v1, use v2*"])


def test_c05_outcomes_decided_inside_including_a_crash_under_xfail(pytester, case):
    result = run(pytester, case("c05"), "-ra")
    result.stdout.fnmatch_lines(["c05_outcomes.py sFxx*"])
    result.assert_outcomes(skipped=1, failed=1, xfailed=2)
    result.stdout.fnmatch_lines([
        "*XPASS(strict)?*known bug*",
        "XFAIL *test_crash_under_xfail - segfaults sometimes*SIGSEGV*",
    ])
    assert result.ret == 1


def test_c06_big_output_and_properties_do_not_hang(pytester, case):
    result = run(pytester, case("c06"), "--junitxml=out.xml")
    result.assert_outcomes(failed=1, passed=1)
    assert result.duration < 60
    assert ('value="' + "y" * 1000) in (pytester.path / "out.xml").read_text()


def test_c07_crashes_are_failures_with_signal_traceback_and_output(pytester, case):
    result = run(pytester, case("c07"))
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines([
        "*crashed with signal 11 (SIGSEGV)*",
        "*Captured stdout call*",
        "before the crash",
        "*Captured stderr call*",
        "Fatal Python error: Segmentation fault*",
        '*File "*c07_crashes.py", line * in test_segfault*',
    ])
    result.stdout.fnmatch_lines(["*crashed with signal 6 (SIGABRT)*"])


def test_c08_exit_without_a_result_never_passes(pytester, case):
    result = run(pytester, case("c08"))
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines([
        "*test_hard_exit_zero*",
        "*the test process exited with status 0 before reporting a result*",
        "about to exit",
    ])
    result.stdout.fnmatch_lines(["*test_sys_exit_zero*", "E       SystemExit: 0"])
    assert "child atexit ran" not in result.stdout.str()


def test_c09_the_test_is_not_pid_1(pytester, case):
    result = run(pytester, case("c09"))
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*killed by signal 15 (SIGTERM)*"])


def _sleep_300() -> set[int]:
    from hostcheck import processes

    found = set()
    for pid, (_, comm, _) in processes().items():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if comm == "sleep" and f.read() == b"sleep\x00300\x00":
                    found.add(pid)
        except OSError:
            pass
    return found


def test_c10_orphans_die_with_the_test(pytester, case):
    before = _sleep_300()
    result = run(pytester, case("c10"))
    result.assert_outcomes(passed=1)
    assert not _sleep_300() - before  # the test's `sleep 300` orphans are gone


def test_c11_namespaces(pytester, case):
    result = run(pytester, case("c11"))
    result.assert_outcomes(passed=3)


def test_c13_default_seccomp_keeps_threads_and_subprocesses_working(pytester, case):
    result = run(pytester, case("c13"))
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("extra", [[], ["-x"]])
def test_c14_wider_fixtures_live_in_the_host(pytester, case, extra):
    result = run(pytester, case("c14"), *extra)
    result.assert_outcomes(passed=4)
    assert "not torn down properly" not in result.stdout.str()
    found = list(pytester.path.glob("runpytest-[0-9]*/events.txt"))
    assert len(found) == 1, found
    events = found[0]
    assert events.read_text() == "setup\nteardown\n"


def test_c14_with_last_failed(pytester, case):
    name = case("c14")
    pytester.runpytest_subprocess("--isolate", name, timeout=120).assert_outcomes(passed=4)
    result = pytester.runpytest_subprocess("--isolate", "--lf", name, timeout=120)
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize("extra", [[], ["--isolate-readonly=true"]])
def test_c15_coverage_of_code_run_in_containers(pytester, case, extra):
    pytest.importorskip("pytest_cov", reason="pytest-cov is part of the test extra")
    pytester.makepyfile(covmod=textwrap.dedent("""
        def only_called_in_child(x):
            if x:
                return "yes"
            return "no"
    """))
    result = run(pytester, case("c15"), "--cov=covmod", "--cov-branch",
                 "--cov-report=term-missing", *extra)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["covmod.py * 4 * 1 * 2 * 1 * 67% * 4"])  # only "return no"
    assert "No data was collected" not in result.stdout.str() + result.stderr.str()
    # the container measured into memory: no data file of its own in the project
    assert [p.name for p in pytester.path.glob(".coverage.*")] == []


def test_c12_limits_breached_read_plainly(pytester, case):
    result = run(pytester, case("c12"), "-rA", "--junitxml=out.xml")
    result.assert_outcomes(failed=1, passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_limit_too_low*",
        "*memory=1M is below what the container needs to start*",
        "*test_allocates_too_much*",
        "memory limit 64M exceeded (OOM kill), peak *",
    ])
    result.stdout.fnmatch_lines(["*isolate (teardown)*",
                                 "1 process of this test OOM-killed (memory limit 64M)"])
    out = result.stdout.str()
    assert "EBUSY" not in out and "signal 9" not in out
    assert 'name="isolate_oom_kills" value="1"' in (pytester.path / "out.xml").read_text()
