"""Suite-wide checks: every test, and the run as a whole, leave the host as found."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))

from hostcheck import Snapshot, leftovers

pytest_plugins = ["pytester"]

_session_start: Snapshot | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session_start
    _session_start = Snapshot.take()


HOST_FIXTURES = {"factory", "run", "pytester"}


ROOT_ONLY = ("tests/runtime/", "tests/plugin/", "tests/battery/")
ROOTLESS_ONLY = ("tests/rootless/",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that create containers, or drive capabilities, seccomp and cgroups
    directly, need the host: under ``pytest --isolate`` they opt out of isolation.

    The suite runs twice in CI: as root (everything but tests/rootless), and as an
    unprivileged user (tests/rootless and what needs no root)."""
    root = os.geteuid() == 0
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("host") or names & HOST_FIXTURES:
            item.add_marker(pytest.mark.isolated(False))
        where = item.nodeid
        if not root and where.startswith(ROOT_ONLY):
            item.add_marker(pytest.mark.skip(
                reason=f"needs root, and this process is uid {os.geteuid()}: "
                       f"{where.split('/')[1]} tests drive cgroups v1, capabilities and "
                       "other uids as root (tests/rootless covers the rootless path)"))
        elif root and where.startswith(ROOTLESS_ONLY):
            item.add_marker(pytest.mark.skip(
                reason="needs a process that is not root (the rootless path); .ci/run "
                       "runs tests/rootless again as an unprivileged user"))


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest):
    """Fail the test (at teardown) if it left a process, mount, netns or cgroup behind.

    Inside a container (our suite run with --isolate) the test's processes are alive
    until the container ends: the run-wide check at the end covers those tests.
    """
    from pytest_isolate.child import in_container

    if in_container():
        yield
        return
    before = Snapshot.take()
    yield
    problems = leftovers(before, os.getpid())
    if problems:
        pytest.fail("left behind on the host: " + "; ".join(problems), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole run, fixtures of every scope included, must leave nothing behind."""
    if _session_start is None or hasattr(session.config, "workerinput"):
        return
    problems = leftovers(_session_start, os.getpid())
    if problems:
        tw = session.config.get_terminal_writer()
        tw.line()
        tw.line("pytest-isolate suite left behind on the host: " + "; ".join(problems), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
