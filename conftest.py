"""Suite-wide checks: every test leaves the host as it found it."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))

from hostcheck import Snapshot, leftovers


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest):
    """Fail the test (at teardown) if it left a process, mount, netns or cgroup behind."""
    before = Snapshot.take()
    yield
    problems = leftovers(before, os.getpid())
    if problems:
        pytest.fail("left behind on the host: " + "; ".join(problems), pytrace=False)
