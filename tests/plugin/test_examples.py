"""The examples in examples/ run, and say what the README says they do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_demo_suite_passes_under_isolate(pytester):
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--isolate", "-v",
                                           str(EXAMPLES / "demo_suite"), timeout=120)
    result.assert_outcomes(passed=9)


@pytest.mark.host
def test_runtime_demo_prints_what_a_container_sees():
    out = subprocess.run([sys.executable, str(EXAMPLES / "runtime_demo.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "container 'demo': exited with status 0" in out.stdout
    assert 'hostname             "demo-box"' in out.stdout
    assert 'pid 1                "isolate-init"' in out.stdout
    assert "after destroy: containers left = []" in out.stdout


def test_cookbook_examples_pass_plain_and_under_isolate(pytester):
    for extra in ([], ["--isolate"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", "-s", *extra,
                                               str(EXAMPLES / "cookbook"), timeout=300)
        result.assert_outcomes(passed=11)
        result.stdout.fnmatch_lines(["*alice: 4/4*", "*bob: 3/4*",
                                     "*mallory: 0/4 (timed out after 5 s)*", "*eve: 1/4*"])
