"""Per-test overhead of ``pytest --isolate`` against plain pytest and pytest-forked.

    python benchmarks/overhead.py [--runs 5] [--tests 500] [--no-venv]

Creates (once) ``benchmarks/.venv-bench`` with pytest 9.1.x (pytest-forked 1.7.5 fails
every test on pytest 9.2), pytest-forked, pytest-xdist and this project; generates two
suites of trivial tests in a temporary directory (``plain``: N one-line tests;
``fixtures``: the same with a module-scoped fixture and some captured output); then
runs every configuration ``--runs`` times, interleaved round by round so that machine
drift hits all alike, and prints the median wall time of each, the per-test overhead
over plain pytest, and the ratio of ours to pytest-forked's.

Run by hand (as root), not in CI: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
VENV = HERE / ".venv-bench"

CONFIGS: dict[str, list[str]] = {
    "plain": [],
    "forked": ["--forked"],
    "isolate": ["--isolate"],
    "isolate prepare": ["--isolate", "--isolate-prepare=2"],
    "plain -n 2": ["-n", "2"],
    "forked -n 2": ["--forked", "-n", "2"],
    "isolate -n 2": ["--isolate", "-n", "2"],
}


def venv_python(use_venv: bool) -> str:
    if not use_venv:
        return sys.executable
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                       check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "pytest==9.1.*",
                        "pytest-forked==1.7.5", "pytest-xdist", "-e", str(PROJECT)],
                       check=True)
    return str(python)


def make_suites(root: Path, n: int) -> dict[str, Path]:
    plain = root / "plain"
    plain.mkdir()
    (plain / "test_many.py").write_text("".join(
        f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n\n" for i in range(n)))
    fixtures = root / "fixtures"
    fixtures.mkdir()
    per = 50
    for m in range(n // per):
        (fixtures / f"test_mod{m}.py").write_text(
            "import pytest\n\n@pytest.fixture(scope='module')\ndef data():\n"
            "    return list(range(1000))\n\n" + "".join(
                f"def test_{i}(data):\n    print('output of test {i}')\n"
                f"    assert data[{i}] == {i}\n\n" for i in range(per)))
    for suite in (plain, fixtures):
        (suite / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return {"plain": plain, "fixtures": fixtures}


def run_once(python: str, suite: Path, args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([python, "-m", "pytest", "-q", *args], cwd=suite,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or "failed" in last or "error" in last:
        raise SystemExit(f"{args} in {suite.name} did not pass:\n{proc.stdout[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tests", type=int, default=500)
    ap.add_argument("--no-venv", action="store_true",
                    help="use this interpreter (needs pytest-forked and pytest < 9.2)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated subset of: " + ", ".join(CONFIGS))
    opts = ap.parse_args()
    python = venv_python(not opts.no_venv)
    version = subprocess.run([python, "-m", "pytest", "--version"], capture_output=True,
                             text=True).stdout.strip() or "?"
    configs = [c.strip() for c in opts.configs.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-", dir="/var/tmp"))
    try:
        suites = make_suites(root, opts.tests)
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(opts.runs):
            for suite_name, suite in suites.items():
                for config in configs:
                    t = run_once(python, suite, CONFIGS[config])
                    times.setdefault((suite_name, config), []).append(t)
            print(f"round {r + 1}/{opts.runs} done", file=sys.stderr)
        print(f"{version}; {opts.tests} tests per suite; median of {opts.runs} runs; "
              f"{os.cpu_count()} CPUs")
        print(f"{'suite':<9} {'config':<14} {'median s':>9} {'ms/test over plain':>19}")
        for suite_name in suites:
            for config in configs:
                med = statistics.median(times[(suite_name, config)])
                base_name = "plain -n 2" if "-n 2" in config else "plain"
                base = statistics.median(times[(suite_name, base_name)]) \
                    if (suite_name, base_name) in times else med
                over = (med - base) / opts.tests * 1000
                print(f"{suite_name:<9} {config:<14} {med:>9.2f} {over:>19.1f}")
            for n2 in ("", " -n 2"):
                a, b = times.get((suite_name, "isolate" + n2)), times.get(
                    (suite_name, "forked" + n2))
                p = times.get((suite_name, "plain" + n2))
                if a and b and p:
                    ours = statistics.median(a) - statistics.median(p)
                    theirs = statistics.median(b) - statistics.median(p)
                    print(f"{suite_name:<9} ratio isolate/forked{n2}: {ours / theirs:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
