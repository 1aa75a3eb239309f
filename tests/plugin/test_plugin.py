"""Plugin behaviour beyond the field cases: selection, settings errors, hooks, xdist."""

from __future__ import annotations

import textwrap

import pytest


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    return result


def test_only_marked_tests_are_isolated_without_the_option(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import pytest

        @pytest.mark.isolated
        def test_marked():
            assert open("/proc/1/comm").read().strip() == "isolate-init"

        def test_plain():
            assert open("/proc/1/comm").read().strip() != "isolate-init"
    """))
    run(pytester).assert_outcomes(passed=2)


def test_isolated_false_opts_out_and_class_markers_apply(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import pytest

        def comm():
            return open("/proc/1/comm").read().strip()

        @pytest.mark.isolated(False)
        def test_opted_out():
            assert comm() != "isolate-init"

        def test_isolated_by_option():
            assert comm() == "isolate-init"

        @pytest.mark.isolated(hostname="from-class")
        class TestBox:
            def test_inherits(self):
                import socket
                assert socket.gethostname() == "from-class"

            @pytest.mark.isolated(hostname="closest")
            def test_closest_wins(self):
                import socket
                assert socket.gethostname() == "closest"
    """))
    run(pytester, "--isolate").assert_outcomes(passed=4)


def test_ini_and_command_line_settings(pytester):
    pytester.makeini("[pytest]\nisolate = true\nisolate_hostname = from-ini\n"
                     "isolate_env = A=1\n")
    pytester.makepyfile(textwrap.dedent("""
        import os, socket

        def test_settings():
            assert socket.gethostname() == "from-cli"
            assert os.environ["A"] == "1" and os.environ["B"] == "2"
    """))
    run(pytester, "--isolate-hostname=from-cli", "--isolate-env", "B=2").assert_outcomes(
        passed=1)


def test_a_bad_command_line_value_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = run(pytester, "--isolate", "--isolate-memory=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*command line: memory='lots' is invalid*"])


def test_a_bad_marker_is_an_error_naming_the_test_and_the_run_goes_on(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import pytest

        @pytest.mark.isolated(memroy="64M")
        def test_typo():
            pass

        @pytest.mark.isolated(pids=-3)
        def test_bad_value():
            pass

        def test_next():
            pass
    """))
    result = run(pytester)
    result.assert_outcomes(errors=2, passed=1)
    result.stdout.fnmatch_lines([
        "*@pytest.mark.isolated on test_a_bad_marker*::test_typo: memroy='64M' is invalid: "
        "unknown setting*",
    ])
    result.stdout.fnmatch_lines(["*::test_bad_value: pids=-3 is invalid*"])


def test_collect_only_runs_nothing(pytester):
    pytester.makepyfile("def test_x():\n    raise SystemExit('ran')\n")
    result = run(pytester, "--isolate", "--collect-only", "-q")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*test_x*", "1 test collected*"])


def test_the_config_hook_adjusts_the_container(pytester):
    pytester.makeconftest(textwrap.dedent("""
        import dataclasses

        def pytest_isolate_config(item, config):
            if "special" in item.name:
                return dataclasses.replace(config, hostname="via-hook")
    """))
    pytester.makepyfile(textwrap.dedent("""
        import socket

        def test_special():
            assert socket.gethostname() == "via-hook"

        def test_ordinary():
            assert socket.gethostname() == "isolate"
    """))
    run(pytester, "--isolate").assert_outcomes(passed=2)


def test_the_container_holds_no_host_descriptor(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import os

        def test_fds():
            targets = {}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    targets[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    pass
            host_things = [t for t in targets.values()
                           if t.startswith(("pipe:", "socket:")) or "pytest-of" in t
                           or t.startswith("/dev/pts")]
            # the result pipe and the link (fd 3, the host's answers to run_isolated)
            # are the only pipes; no socket, terminal or host file
            assert sum(t.startswith("pipe:") for t in targets.values()) == 2, targets
            assert targets[3].startswith("pipe:")
            assert not [t for t in host_things if not t.startswith("pipe:")], targets
    """))
    run(pytester, "--isolate").assert_outcomes(passed=1)


def test_xdist_two_workers(pytester):
    pytest.importorskip("xdist", reason="pytest-xdist is part of the test extra")
    pytester.makepyfile(textwrap.dedent("""
        import os, pytest

        @pytest.mark.parametrize("n", range(8))
        def test_many(n):
            assert os.getpid() != 1 and open("/proc/1/comm").read().strip() == "isolate-init"
    """))
    result = run(pytester, "--isolate", "-n", "2")
    result.assert_outcomes(passed=8)


def test_report_header_says_what_is_in_force(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = run(pytester, "--isolate", "--isolate-seccomp=strict")
    result.stdout.fnmatch_lines(["isolate: every test (--isolate); profile default; network "
                                 "none; seccomp strict*",
                                 "isolate: namespaces pid,mount,uts,ipc,net; capabilities "
                                 "Docker default (via *)",
                                 "isolate: cgroups *: *memory(v*"])


def test_a_timeout_kills_the_container_and_shows_where_it_hung(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import time, pytest

        @pytest.mark.isolated(timeout=1)
        def test_hangs():
            def stuck_here():
                time.sleep(60)
            stuck_here()

        def test_next():
            pass
    """))
    result = run(pytester)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*timed out after 1 s*", "*isolate: where it hung (call)*",
                                 "*in stuck_here*"])
    assert result.duration < 30


def test_a_test_near_its_timeout_passes_without_a_stack_dump_and_durations_are_real(
        pytester):
    """The stacks dumped shortly before the timeout are shown only if the test does
    time out; a test that timed out has its real duration in --durations/junitxml."""
    pytester.makepyfile(textwrap.dedent("""
        import time, pytest

        @pytest.mark.isolated(timeout=1)
        def test_close_call():
            time.sleep(0.9)

        @pytest.mark.isolated(timeout=1)
        def test_hangs():
            time.sleep(60)
    """))
    result = run(pytester, "-rA", "--durations=0", "--junitxml=out.xml")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    assert "Timeout (" not in out.split("_ test_hangs _")[0], out  # none for the pass
    result.stdout.fnmatch_lines(["*where it hung*"])
    import re
    import xml.etree.ElementTree as ET

    assert re.search(r"^[01]\.\d+s call +test_\w+\.py::test_hangs", out, re.M), out
    case = next(c for c in ET.parse(pytester.path / "out.xml").iter("testcase")
                if c.get("name") == "test_hangs")
    assert float(case.get("time")) >= 0.9


def test_the_untrusted_profile(pytester, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    pytester.makepyfile(textwrap.dedent("""
        import os, socket, pytest

        @pytest.mark.isolated(profile="untrusted")
        def test_sandboxed(tmp_path):
            assert os.getuid() == 65534 and os.getgid() == 65534
            assert "SECRET_TOKEN" not in os.environ and os.environ["HOME"] == "/tmp"
            (tmp_path / "own").write_text("x")
            with pytest.raises(OSError):
                open(os.path.join(os.path.dirname(__file__), "planted"), "w")
            assert os.listdir("/root") == [] or set(os.listdir("/root")) <= {".pyenv"}
            with pytest.raises(OSError) as unreachable:  # no route out of the netns
                socket.create_connection(("192.0.2.1", 80), timeout=2)
            assert unreachable.value.errno == 101  # ENETUNREACH
            for family in (socket.AF_PACKET, socket.AF_NETLINK):  # strict seccomp
                with pytest.raises(PermissionError):
                    socket.socket(family, socket.SOCK_RAW)
            with open("/proc/self/status") as f:
                status = f.read()
            assert "CapEff:\\t0000000000000000" in status
            assert "Seccomp:\\t2" in status
    """))
    # pytester's own directories are mode 0700, which uid 65534 cannot enter: keep the
    # run's basetemp out of them, as it is in a real run (/tmp/pytest-of-<user>/...)
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="untrusted-base-")
    try:
        run(pytester, f"--basetemp={base}/b").assert_outcomes(passed=1)
    finally:
        shutil.rmtree(base)
    assert not (pytester.path / "planted").exists()


def test_a_profile_from_pyproject(pytester):
    pytester.makepyprojecttoml(textwrap.dedent("""
        [tool.pytest-isolate.profiles.ci]
        extends = "default"
        hostname = "ci-box"
        env = {CI_FLAG = "1"}
    """))
    pytester.makepyfile(textwrap.dedent("""
        import os, socket

        def test_profile():
            assert socket.gethostname() == "ci-box" and os.environ["CI_FLAG"] == "1"
    """))
    run(pytester, "--isolate", "--isolate-profile=ci").assert_outcomes(passed=1)


@pytest.mark.parametrize("func_only", ["false", "true"])
def test_pytest_timeout_is_honoured_and_the_smaller_deadline_wins(pytester, func_only):
    pytest.importorskip("pytest_timeout", reason="pytest-timeout is part of the test extra")
    pytester.makepyfile(textwrap.dedent("""
        import time, pytest

        @pytest.mark.timeout(1)
        def test_marker_timeout():
            time.sleep(60)

        @pytest.mark.isolated(timeout=30)
        @pytest.mark.timeout(2)
        def test_smaller_wins():
            time.sleep(60)

        @pytest.mark.isolated(timeout=1)
        @pytest.mark.timeout(30)
        def test_ours_smaller():
            time.sleep(60)

        def test_fine():
            pass
    """))
    result = run(pytester, "--isolate", "-o", f"timeout_func_only={func_only}")
    result.assert_outcomes(failed=3, passed=1)
    assert result.duration < 30  # no 30 s or 60 s wait anywhere
    if func_only == "false":  # the container's deadline took over pytest-timeout's timer
        result.stdout.fnmatch_lines(["*_ test_marker_timeout _*", "timed out after 1 s"])
    else:  # pytest-timeout's own timer, armed inside the container around the call
        result.stdout.fnmatch_lines(["*_ test_marker_timeout _*",
                                     "*Failed: Timeout (>1.0s) from pytest-timeout*"])
    result.stdout.fnmatch_lines(["*_ test_ours_smaller _*", "timed out after 1 s"])


@pytest.mark.parametrize("extra", [[], ["-x"]])
def test_wider_finalizers_run_once_in_the_pytest_process(pytester, extra):
    pytester.makeconftest(textwrap.dedent("""
        import os, pytest

        @pytest.fixture(scope="session")
        def session_res(tmp_path_factory):
            log = tmp_path_factory.getbasetemp() / "session.log"
            with log.open("a") as f:
                f.write(f"setup {os.getpid()}\\n")
            yield
            with log.open("a") as f:
                f.write(f"teardown {os.getpid()}\\n")
    """))
    pytester.makepyfile(textwrap.dedent("""
        import pytest

        @pytest.fixture
        def per_test(session_res):
            yield
            print("function teardown ran")

        def test_first(per_test):
            pass

        def test_fails(per_test):
            assert False

        def test_last(per_test):
            pass
    """))
    result = run(pytester, "--isolate", *extra)
    result.assert_outcomes(passed=1 if extra else 2, failed=1)
    (log,) = pytester.path.glob("runpytest-[0-9]*/session.log")
    lines = log.read_text().split()
    assert lines[0::2] == ["setup", "teardown"]
    assert lines[1] == lines[3]  # set up and torn down in the same process: pytest's own


@pytest.mark.parametrize("marker, message", [
    ('isolated(hostname="bad host!")', "hostname='bad host!' is invalid"),
    ("isolated(user=2**40)", "uid and gid are at most"),
    ('isolated(timeout=float("inf"))', "a positive, finite number of seconds"),
    ('isolated(seccomp="/no/such/profile.json")', "seccomp='/no/such/profile.json' is invalid"),
    ('isolated("no")', "the only positional argument is True or False"),
    ('isolated(False, memory="64M")', "isolated(False) opts out: it takes no settings"),
])
def test_bad_marker_values_never_crash_the_run(pytester, marker, message):
    pytester.makepyfile(textwrap.dedent(f"""
        import pytest

        @pytest.mark.{marker}
        def test_bad():
            pass

        def test_next():
            pass
    """))
    result = run(pytester, "-p", "no:randomly")
    result.assert_outcomes(errors=1, passed=1)
    assert message in result.stdout.str()
    assert "@pytest.mark.isolated on " in result.stdout.str()


@pytest.mark.parametrize("hook, message", [
    ("raise RuntimeError('hook exploded')", "the pytest_isolate_config hook failed: "
                                            "RuntimeError: hook exploded"),
    ("return {'network': 'host'}", "the pytest_isolate_config hook returned dict"),
    ("import dataclasses; return dataclasses.replace(config, hostname='bad name!')",
     "the pytest_isolate_config hook failed: ConfigError: hostname='bad name!'"),
])
def test_a_broken_config_hook_fails_its_test_only(pytester, hook, message):
    pytester.makeconftest(f"def pytest_isolate_config(item, config):\n    {hook}\n")
    pytester.makepyfile("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    result = run(pytester, "--isolate")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert message in out
    assert "During handling of the above exception" not in out  # said once, plainly


def test_dash_x_with_a_failing_module_teardown(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import pytest

        @pytest.fixture(scope="module")
        def mod():
            yield
            raise RuntimeError("module teardown boom")

        def test_fails(mod):
            assert False

        def test_never(mod):
            pass
    """))
    result = run(pytester, "--isolate", "-x")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_fails*", "*module teardown boom*",
                                 "*stopping after*"])


def test_dash_s_shows_the_output_of_isolated_tests(pytester):
    pytester.makepyfile("def test_out():\n    print('visible with -s')\n")
    result = run(pytester, "--isolate", "-s")
    result.assert_outcomes(passed=1)
    assert "visible with -s" in result.stdout.str()


def test_a_builtin_profile_name_in_pyproject_adjusts_it(pytester):
    pytester.makepyprojecttoml(textwrap.dedent("""
        [tool.pytest-isolate.profiles.untrusted]
        hostname = "adjusted"
    """))
    pytester.makepyfile(textwrap.dedent("""
        import os, socket, pytest

        @pytest.mark.isolated(profile="untrusted")
        def test_still_untrusted():
            assert socket.gethostname() == "adjusted"
            assert os.getuid() == 65534  # the built-in's protections stay
    """))
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="untrusted-base-")
    try:
        run(pytester, f"--basetemp={base}/b").assert_outcomes(passed=1)
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("line, dropped", [
    ('seccomp = "unconfined"', "seccomp='unconfined' is not as strict as seccomp='strict'"),
    ('user = "0"', "user='0' where the user is '65534:65534'"),
    ('capabilities = "CAP_SYS_ADMIN"', "capabilities CAP_SYS_ADMIN beyond none"),
    ('memory = "none"', "memory=none removes the memory limit 1G"),
    ('network = "host"', "network='host' where network='none'"),
    ("readonly = false", "readonly=False where the root is read-only"),
    ("hide_home = false", "home directories shown where they are hidden"),
])
def test_an_adjusted_untrusted_profile_cannot_drop_protections(pytester, line, dropped):
    pytester.makepyprojecttoml(f"[tool.pytest-isolate.profiles.untrusted]\n{line}\n")
    pytester.makepyfile("def test_x(): pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "may not drop its protections" in err and dropped in err, err
    assert 'extends = "untrusted"' in err


def test_an_adjusted_untrusted_profile_may_change_its_limits(pytester):
    pytester.makepyprojecttoml('[tool.pytest-isolate.profiles.untrusted]\nmemory = "2G"\n'
                               'timeout = 600\npids = 1000\n')
    pytester.makepyfile("def test_x(): pass\n")
    run(pytester).assert_outcomes(passed=1)


def test_subtests_fail_as_in_a_plain_run(pytester):
    pytest.importorskip("_pytest.subtests", reason="pytest >= 9 has built-in subtests")
    pytester.makepyfile(textwrap.dedent("""
        import unittest

        def test_subtests(subtests):
            for i in range(3):
                with subtests.test(msg="check", i=i):
                    assert i < 2

        class T(unittest.TestCase):
            def test_sub(self):
                for i in range(3):
                    with self.subTest(i=i):
                        self.assertLess(i, 2)
    """))
    plain = run(pytester)
    isolated = run(pytester, "--isolate")
    assert isolated.ret == plain.ret == 1
    assert isolated.parseoutcomes() == plain.parseoutcomes()
    isolated.stdout.fnmatch_lines(["*SUBFAILED*test_subtests*"])


@pytest.mark.parametrize("body, ret", [
    ('pytest.exit("stop now", returncode=7)', 7),
    ("raise KeyboardInterrupt", 2),
])
def test_exit_and_interrupt_inside_stop_the_session(pytester, body, ret):
    pytester.makepyfile(textwrap.dedent(f"""
        import pytest

        def test_first():
            {body}

        def test_never_runs():
            raise AssertionError("ran after the session should have stopped")
    """))
    plain = run(pytester)
    isolated = run(pytester, "--isolate")
    assert isolated.ret == plain.ret == ret
    assert "ran after the session" not in isolated.stdout.str()


def test_a_fork_of_the_test_that_returns_into_pytest_reports_nothing(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import os, pytest

        @pytest.fixture
        def fx():
            yield
            if os.environ.get("CHILD"):
                raise AssertionError("the fork ran the teardown")

        def test_forks(fx):
            if os.fork() == 0:
                os.environ["CHILD"] = "1"
                assert False, "the fork's failure must not be reported"
            os.wait()

        def test_next():
            pass
    """))
    result = run(pytester, "--isolate", "-v")
    result.assert_outcomes(passed=2)
    assert "the fork" not in result.stdout.str()


@pytest.mark.parametrize("ini, message", [
    ("isolate = maybe", "ini file: isolate='maybe' is invalid: write isolate = true"),
    ("isolate_unsupported = bogus",
     "ini file: isolate_unsupported='bogus' is invalid: error, warn or skip"),
])
def test_bad_ini_keys_are_usage_errors_naming_the_key(pytester, ini, message):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.isolated\ndef test_a():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str(), result.stderr.str()


def test_isolate_true_in_the_ini_file_isolates_every_test(pytester):
    pytester.makeini("[pytest]\nisolate = yes\n")
    pytester.makepyfile("def test_a():\n"
                        "    assert open('/proc/1/comm').read().strip() == 'isolate-init'\n")
    run(pytester).assert_outcomes(passed=1)
