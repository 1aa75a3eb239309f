"""run_isolated and isolate_usage inside isolated tests (the host runs the call next
to the test's container), usage on reports, junitxml and --isolate-stats."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET

import pytest


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=180)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    return result


HELPERS = """
import os, time, pytest

def add(a, b=1):
    return {"sum": a + b, "t": (a, b"x")}

def hog(mib):
    return len([b"\\x01" * 2**20 for _ in range(mib)])

class Obj:
    def __init__(self, n):
        self.n = n
"""


def test_run_isolated_inside_an_isolated_test(pytester):
    pytester.makepyfile(HELPERS + textwrap.dedent("""
        @pytest.mark.isolated(memory="512M", timeout=120)
        def test_nested(run_isolated):
            assert open("/proc/1/comm").read().strip() == "isolate-init"
            r = run_isolated(add, 2, b=3)
            assert r.ok and r.value == {"sum": 5, "t": (2, b"x")}
            assert r.usage.memory_limit == 512 * 2**20  # the test's limit, inherited
            r = run_isolated(hog, 300, memory="64M")
            assert r.oom_killed and r.usage.memory_limit == 64 * 2**20
            r = run_isolated(Obj, 3, trusted=True)
            assert r.value.n == 3
            r = run_isolated(lambda: Obj(1))
            assert r.value is None and "not plain data" in r.error
            r = run_isolated(time.sleep, 100, timeout=1)
            assert r.timed_out
            # the new container is not the test's: its own /tmp, its own pid 1
            open("/tmp/only-in-the-test", "w").close()
            r = run_isolated(lambda: (os.path.exists("/tmp/only-in-the-test"),
                                      open("/proc/1/comm").read().strip()))
            assert r.value == (False, "isolate-init")

        def test_plain_test_in_the_same_run(run_isolated):
            assert run_isolated(add, 1).value["sum"] == 2
    """))
    run(pytester, "-v").assert_outcomes(passed=2)


def test_nested_calls_cannot_loosen_the_test(pytester):
    pytester.makepyfile(HELPERS + textwrap.dedent("""
        from pytest_isolate import RunIsolatedError

        @pytest.mark.isolated(profile="untrusted", timeout=120)
        @pytest.mark.parametrize("loose", [
            dict(memory="2G"), dict(memory="none"), dict(pids=1000), dict(cpu=4),
            dict(network="host"), dict(seccomp="unconfined"), dict(seccomp="default"),
            dict(readonly=False), dict(user="0"), dict(capabilities="CAP_NET_RAW"),
            dict(profile="default"),
        ])
        def test_loose(run_isolated, loose):
            with pytest.raises(RunIsolatedError, match="cannot be looser") as info:
                run_isolated(add, 1, **loose)
            print(info.value)

        @pytest.mark.isolated(profile="untrusted", timeout=120)
        def test_tighter_is_fine(run_isolated):
            r = run_isolated(add, 1, memory="128M", pids=32, cpu=0.5, timeout=30)
            assert r.ok and r.usage.memory_limit == 128 * 2**20
            r = run_isolated(lambda: (os.getuid(), open("/proc/self/status").read()))
            uid, status = r.value
            assert uid == 65534 and "Seccomp:\\t2" in status
    """))
    result = run(pytester, "-v", "-s")
    result.assert_outcomes(passed=12)
    out = result.stdout.str()
    assert "memory=2G is more than the test's memory=1G (from profile 'untrusted')" in out
    assert "memory=none removes the memory limit 1G (from profile 'untrusted')" in out
    assert "network='host' where network='none' (from profile 'untrusted')" in out
    assert "seccomp='unconfined' is not as strict as seccomp='strict'" in out


def test_a_nested_call_ends_with_the_test_timeout(pytester):
    pytester.makepyfile(HELPERS + textwrap.dedent("""
        @pytest.mark.isolated(timeout=5)
        def test_clamped(run_isolated):
            t = time.monotonic()
            r = run_isolated(time.sleep, 100, timeout=60)
            # ended a second before the test's own deadline: the test can still report
            assert r.timed_out and 3 < r.timeout < 4.5
            assert time.monotonic() - t < 4.5
    """))
    run(pytester).assert_outcomes(passed=1)


def test_forged_requests_from_an_isolated_test_get_errors(pytester):
    pytester.makepyfile(HELPERS + textwrap.dedent("""
        import json, struct
        from pytest_isolate.runtime import emit

        def answer():
            head = os.read(3, 8)
            magic, kind, n = struct.unpack(">2scxI", head)
            body = b""
            while len(body) < n:
                body += os.read(3, n - len(body))
            return json.loads(body)

        @pytest.mark.isolated(timeout=60)
        def test_forged(run_isolated):
            emit({"kind": "request", "id": 1, "op": "run", "blob": "!!!", "mode": "json",
                  "settings": {}})
            assert "run_isolated failed on the host" in answer()["raise"]
            emit({"kind": "request", "id": 2, "op": "format-disk"})
            assert "unknown request" in answer()["raise"]
            emit({"kind": "request", "id": 3, "op": "run", "blob": "", "mode": "json",
                  "settings": {"network": "host"}})
            assert "cannot be looser" in answer()["raise"]
            # the link still works for real calls afterwards
            assert run_isolated(add, 1).value["sum"] == 2
    """))
    run(pytester).assert_outcomes(passed=1)


def test_isolate_usage_tracks_an_allocation(pytester):
    pytester.makepyfile(HELPERS + textwrap.dedent("""
        @pytest.mark.isolated(memory="256M", pids=50)
        def test_usage(isolate_usage):
            before = isolate_usage.snapshot()
            data = b"\\x01" * (32 * 2**20)
            after = isolate_usage.snapshot()
            grown = after.memory_current - before.memory_current
            assert 31 * 2**20 <= grown <= 40 * 2**20, grown
            assert after.memory_peak >= after.memory_current
            assert after.memory_limit == 256 * 2**20
            assert after.pids_limit == 50 and after.pids_current >= 2
            assert after.cpu_time > 0 and after.cgroup_version in (1, 2)
            del data

        @pytest.mark.isolated
        def test_unlimited(isolate_usage):
            s = isolate_usage.snapshot()
            assert s.memory_limit is None and s.pids_limit is None

        @pytest.mark.isolated(False)
        def test_not_isolated(isolate_usage):
            pass
    """))
    result = run(pytester, "-v")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*isolate_usage needs an isolated test: run with --isolate*"])


ALLOCATING = HELPERS + textwrap.dedent("""
    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    @pytest.mark.isolated
    def test_small():
        data = b"\\x01" * (8 * 2**20)
        burn(0.6)

    @pytest.mark.isolated
    def test_big():
        data = b"\\x01" * (96 * 2**20)
        burn(0.05)

    @pytest.mark.isolated
    def test_medium():
        data = b"\\x01" * (48 * 2**20)
        burn(0.3)

    def test_not_isolated():
        pass
""")


def test_stats_list_the_hungriest_tests_in_order(pytester):
    pytester.makepyfile(ALLOCATING)
    result = run(pytester, "--isolate-stats=2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "*= isolate usage =*",
        "peak memory (top 2 of 3):",
        "*M  cpu*test_stats_list_the_hungriest_tests_in_order.py::test_big",
        "*M  cpu*::test_medium",
        "CPU time (top 2 of 3):",
        "*s  mem*::test_small",
        "*s  mem*::test_medium",
    ])
    assert "::test_not_isolated" not in result.stdout.str().split("isolate usage")[1]


def test_stats_without_a_count_and_under_xdist(pytester):
    pytester.makepyfile(ALLOCATING)
    result = run(pytester, "-n", "2", "--isolate-stats")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["peak memory (all):", "*::test_big", "*::test_medium",
                                 "*::test_small"])


def test_a_stats_count_that_is_not_a_number_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(): pass\n")
    result = run(pytester, "--isolate-stats", "tests/")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'tests/' is not a count: write --isolate-stats=N*"])


def test_usage_is_on_the_report_and_in_junitxml(pytester):
    pytester.makepyfile(ALLOCATING)
    pytester.makeconftest(textwrap.dedent("""
        seen = {}

        def pytest_runtest_logreport(report):
            if report.when == "teardown" and hasattr(report, "isolate_usage"):
                seen[report.nodeid.split("::")[-1]] = report.isolate_usage

        def pytest_terminal_summary(terminalreporter):
            for name, usage in sorted(seen.items()):
                terminalreporter.write_line(f"USAGE {name} {sorted(usage)}")
    """))
    result = run(pytester, "--junitxml=out.xml")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "USAGE test_big ['cpu_time', 'memory_limit', 'memory_peak', 'pids_peak', 'wall_time']",
    ])
    assert "USAGE test_not_isolated" not in result.stdout.str()
    tree = ET.parse(pytester.path / "out.xml")
    props = {}
    for case in tree.iter("testcase"):
        props[case.get("name")] = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert int(props["test_big"]["isolate_memory_peak"]) >= 96 * 2**20
    assert int(props["test_small"]["isolate_memory_peak"]) < 96 * 2**20
    assert float(props["test_small"]["isolate_cpu_time"]) >= 0.6
    assert int(props["test_big"]["isolate_pids_peak"]) >= 2
    assert float(props["test_big"]["isolate_wall_time"]) > 0
    assert "isolate_memory_limit" not in props["test_big"]  # unlimited: not a property
    assert props["test_not_isolated"] == {}


def test_a_fixture_value_kept_from_a_plain_test_is_refused_inside_an_isolated_one(pytester):
    pytester.makepyfile(HELPERS + textwrap.dedent("""
        from pytest_isolate import RunIsolatedError

        KEPT = []

        def test_plain(run_isolated):
            KEPT.append(run_isolated)

        @pytest.mark.isolated(memory="64M")
        def test_later():
            with pytest.raises(RunIsolatedError, match="belongs to .*test_plain.*request "
                               "the run_isolated fixture in the isolated test itself"):
                KEPT[0](add, 1, memory="1G")
    """))
    run(pytester).assert_outcomes(passed=2)
