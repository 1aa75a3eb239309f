"""The next test's container is set up while the current test runs (runner.prepare_next)
where a fork made then is as good as one made at its turn; every test still gets a
fresh container of its own, and what pytest does with fixtures is unchanged."""

from __future__ import annotations

import textwrap

import pytest


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    return result


# The payload's start, in seconds since boot (the clock /proc/self/stat counts in):
# when the test's container was forked. Compared with CLOCK_BOOTTIME.
STARTED = textwrap.dedent("""
    import os, time

    def payload_started():
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK")

    def now():
        return time.clock_gettime(time.CLOCK_BOOTTIME)
""")


@pytest.mark.parametrize("prepare", ["1", "0"])
def test_the_next_container_is_made_while_the_test_before_runs(pytester, prepare):
    """With --isolate-prepare=1, test_b's payload was forked before test_a ended
    (test_a sleeps 2 s), and its timeout of 1 s counts from its own start, not from
    then. With 0 (the default) it is forked after."""
    pytester.makepyfile(STARTED + textwrap.dedent("""
        import pytest

        @pytest.fixture(scope="module")
        def shared(tmp_path_factory):
            return tmp_path_factory.mktemp("shared")

        def test_a(shared):
            time.sleep(2)
            (shared / "a_ended").write_text(repr(now()))

        @pytest.mark.isolated(timeout=1)
        def test_b(shared):
            time.sleep(0.5)
            a_ended = float((shared / "a_ended").read_text())
            print("forked", a_ended - payload_started(), "s before test_a ended")
            assert (payload_started() < a_ended - 1) == PREPARED
    """).replace("PREPARED", "True" if prepare == "1" else "False"))
    run(pytester, "--isolate", "-v", f"--isolate-prepare={prepare}").assert_outcomes(passed=2)


def test_fixtures_are_set_up_as_in_a_plain_run(pytester, monkeypatch):
    """Wider fixtures a test needs first (a class fixture, a module fixture in the next
    module, a parametrized module fixture) are not there yet when the test before
    runs: those tests get their container at their turn, and every fixture is set up
    once per scope, with the right parameter, in the same order as without
    --isolate."""
    pytester.makepyfile(test_one=textwrap.dedent("""
        import pytest

        @pytest.fixture(scope="module", params=[1, 2])
        def number(request, log):
            log(f"number {request.param}")
            return request.param

        @pytest.fixture(scope="class")
        def letters(log):
            log("letters")
            return "abc"

        def test_first(log):
            log("test_first")

        def test_number(number, log):
            log(f"test_number {number}")

        class TestClass:
            def test_plain(self, log):
                log("test_plain")

            def test_letters(self, letters, log):
                log(f"test_letters {letters}")

            def test_letters_again(self, letters, log):
                log(f"test_letters_again {letters}")
    """), test_two=textwrap.dedent("""
        import pytest

        @pytest.fixture(scope="module")
        def two(log):
            log("two")
            return 2

        def test_two(two, log):
            log(f"test_two {two}")
    """), conftest=textwrap.dedent("""
        import pytest

        @pytest.fixture(scope="session")
        def log(tmp_path_factory):
            path = tmp_path_factory.getbasetemp() / "log.txt"
            def write(what):
                with open(path, "a") as f:
                    f.write(what + "\\n")
            return write

        def pytest_sessionfinish(session):
            import os, shutil
            base = session.config._tmp_path_factory.getbasetemp()
            shutil.copy(base / "log.txt",
                        session.config.rootpath / f"log-{os.environ['LOG_MODE']}.txt")
    """))
    for mode, args in (("plain", ()), ("isolated", ("--isolate", "--isolate-prepare=2"))):
        monkeypatch.setenv("LOG_MODE", mode)
        run(pytester, *args).assert_outcomes(passed=7)
    plain = (pytester.path / "log-plain.txt").read_text().splitlines()
    isolated = (pytester.path / "log-isolated.txt").read_text().splitlines()
    assert plain == isolated
    assert plain.count("number 1") == plain.count("number 2") == 1
    assert plain.count("letters") == 1 and plain.count("two") == 1


def test_a_prepared_container_whose_test_does_not_come_leaves_nothing(pytester):
    """-x stops the run after test_a fails; test_b's container was prepared meanwhile
    and is destroyed unused (the suite's leak check looks for what is left)."""
    pytester.makepyfile(textwrap.dedent("""
        import time

        def test_a():
            time.sleep(0.5)
            assert False

        def test_b():
            pass
    """))
    result = run(pytester, "--isolate", "-x", "--isolate-prepare=2")
    result.assert_outcomes(failed=1)


def test_finished_containers_are_reaped_as_the_run_goes(pytester):
    """Each finished test's init is reaped while the next test runs: zombies do not
    pile up in the pytest process over a run (at most the last test's is pending)."""
    pytester.makepyfile(textwrap.dedent("""
        import os, pytest

        @pytest.mark.parametrize("i", range(30))
        def test_many(i):
            pass

        @pytest.mark.isolated(False)
        def test_count_zombies():
            me = os.getpid()
            zombies = []
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if stat[0] == "Z" and int(stat[1]) == me:
                        zombies.append(pid)
            assert len(zombies) <= 1, zombies
    """))
    run(pytester, "--isolate", "--isolate-prepare=2").assert_outcomes(passed=31)


def test_prepared_containers_start_from_the_runs_warning_filters(pytester):
    """Forked inside the test before's warning context (filterwarnings("error")), the
    next tests' containers still see the run's own filters."""
    pytester.makepyfile(textwrap.dedent("""
        import time, warnings, pytest

        @pytest.mark.filterwarnings("error")
        def test_a():
            time.sleep(0.3)

        def test_b():
            warnings.warn("w", UserWarning)

        def test_c():
            warnings.warn("w", UserWarning)
    """))
    run(pytester, "--isolate", "--isolate-prepare=2").assert_outcomes(passed=3, warnings=2)


def test_a_fixture_computed_for_an_indirect_parameter_is_not_taken_as_set_up(pytester):
    """test_c needs the module fixture without a parameter; while test_b runs it is
    cached with test_b's: test_c's container is made at its turn, after the host set
    the fixture up again, and every setup has its teardown."""
    pytester.makepyfile(textwrap.dedent("""
        import os, time, pytest

        LOG = os.path.join(os.path.dirname(__file__), "log.txt")

        def log(line):
            with open(LOG, "a") as f:
                f.write(line + "\\n")

        @pytest.fixture(scope="module")
        def f(request):
            v = getattr(request, "param", "default")
            log(f"setup {v}")
            yield v
            log(f"teardown {v}")

        def test_a(f):
            pass

        @pytest.mark.parametrize("f", ["x"], indirect=True)
        def test_b(f):
            time.sleep(0.3)

        def test_c(f):
            log(f"test_c {f}")
    """))
    run(pytester, "--isolate", "--isolate-prepare=2").assert_outcomes(passed=3)
    assert (pytester.path / "log.txt").read_text().splitlines() == [
        "setup default", "teardown default", "setup x", "teardown x", "setup default",
        "test_c default", "teardown default"]


def test_a_start_made_ahead_may_finish_after_the_set_up_deadline(pytester, monkeypatch):
    """The set-up deadline of a container prepared ahead counts again from its turn."""
    monkeypatch.setattr("pytest_isolate.runtime.container.SETUP_TIMEOUT", 0.5)
    from pytest_isolate.runtime import Config, Factory, Process

    f = Factory(str(pytester.path / "state"))
    with f.create("late", Config()) as c:
        c.start(Process(target=int, args=("7",)), wait=False)
        import time
        time.sleep(1.0)
        assert c.wait().value == 7
