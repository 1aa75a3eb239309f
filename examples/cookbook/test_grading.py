"""Grading untrusted submissions with run_isolated: each one runs in a fresh
container with the ``untrusted`` profile (nobody user, read-only root, home
directories hidden, no network, strict seccomp), in a fresh interpreter (it cannot
read the grader's memory), under tight limits; whatever it does ends as a result,
and the grader goes on.

The submission only *produces* outputs in the sandbox; they are checked here, on
the host, against answers the sandbox never sees. Checking inside would let a
submission forge its grade (return an object whose ``==`` is always true, or
replace ``sorted``). Outputs come back as plain data: a list subclass comes back
as a list.

Run: pytest examples/cookbook/test_grading.py -v -s
"""

import pytest
import students

CASES = [[3, 1, 2], [], [5, 5, 1], list(range(100, 0, -1))]


def run_cases(sort, cases):
    """Runs inside the container: the submission's output for every case."""
    return [sort(list(case)) for case in cases]


def grade(run_isolated, sort):
    result = run_isolated(run_cases, sort, CASES, profile="untrusted", memory="128M",
                          pids=16, timeout=5)
    if not result.ok:
        return f"0/{len(CASES)} ({result.describe()})"
    outputs = result.value
    if not isinstance(outputs, list) or len(outputs) != len(CASES):
        return f"0/{len(CASES)} (malformed output)"
    right = sum(out == sorted(case) for out, case in zip(outputs, CASES, strict=True))
    return f"{right}/{len(CASES)}"


@pytest.mark.parametrize("student, expected", [
    ("alice", "4/4"),
    ("bob", "3/4"),
    ("mallory", "0/4 (timed out after 5 s)"),
    ("eve", "1/4"),  # her "always equal" lists come back plain and empty: right for []
])
def test_grade(run_isolated, student, expected):
    mark = grade(run_isolated, getattr(students, f"{student}_sort"))
    print(f"{student}: {mark}")
    assert mark == expected
