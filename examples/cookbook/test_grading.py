"""Grading untrusted submissions with run_isolated: each one runs in a fresh
container with the ``untrusted`` profile (nobody user, read-only root, home
directories hidden, no network, strict seccomp) and tight limits; whatever it does
ends as a result, and the grader goes on.

Run: pytest examples/cookbook/test_grading.py -v -s
"""

import pytest
import students

CASES = [[3, 1, 2], [], [5, 5, 1], list(range(100, 0, -1))]


def run_tests(sort):
    """Runs inside the container: the submission against every case."""
    return [sort(list(case)) == sorted(case) for case in CASES]


def grade(run_isolated, sort):
    result = run_isolated(run_tests, sort, profile="untrusted", memory="128M", pids=16,
                          timeout=5)
    if not result.ok:
        return f"0/{len(CASES)} ({result.describe()})"
    return f"{sum(result.value)}/{len(CASES)}"


@pytest.mark.parametrize("student, expected", [
    ("alice", "4/4"),
    ("bob", "3/4"),
    ("mallory", "0/4 (timed out after 5 s)"),
])
def test_grade(run_isolated, student, expected):
    mark = grade(run_isolated, getattr(students, f"{student}_sort"))
    print(f"{student}: {mark}")
    assert mark == expected
