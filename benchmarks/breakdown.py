"""Where one isolated test's time goes, phase by phase.

    python benchmarks/breakdown.py [--tests 200] [--python PY] [-- pytest args]

Runs a suite of trivial tests under ``pytest --isolate`` with
``PYTEST_ISOLATE_TRACE`` set (see ``pytest_isolate/runtime/trace.py``), then prints
for every phase its mean duration per test (its total over the run divided by the
number of tests), the host's phases and the container's side by side. Phases overlap
where host and container work at once (and the next test's container is set up while
a test runs); "host:wait ..." phases are the host waiting for the container's side;
"payload:call" includes "payload:waiting for its turn" (a prepared container's payload
waits inside its call for the word to start).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def normalise(name: str) -> str:
    """'container:mask /proc/acpi' -> 'container:mask (each)': one row per kind."""
    m = re.match(r"(container:(?:mask|read-only|mount \w+|open bind source|chdir|user|"
                 r"setns))\b", name)
    return f"{m.group(1)} (each)" if m else name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", type=int, default=200)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("pytest_args", nargs="*")
    opts = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="breakdown-", dir="/var/tmp"))
    try:
        (root / "test_many.py").write_text("".join(
            f"def test_{i}():\n    pass\n\n" for i in range(opts.tests)))
        trace = root / "trace.txt"
        env = dict(os.environ, PYTEST_ISOLATE_TRACE=str(trace))
        start = time.perf_counter()
        proc = subprocess.run([opts.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "--isolate", *opts.pytest_args, "test_many.py"], cwd=root,
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr)
        lines = [line.split() for line in trace.read_text().splitlines()]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # Phases of one test overlap with the next one's (its container is prepared while
    # the test before runs), so phases are summed over the run and divided by the
    # number of tests: the mean cost per test of each, wherever it fell.
    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    for _pid, *name_parts, t0, t1 in lines:
        name = normalise(" ".join(name_parts))
        totals[name] += float(t1) - float(t0)
        counts[name] += 1
    n = opts.tests
    print(f"{n} tests; whole run {wall:.2f} s ({wall / n * 1000:.1f} ms per test, pytest "
          "start included)")
    print(f"{'phase':<52} {'ms/test':>8} {'times':>6}")
    for name in sorted(totals, key=lambda k: (k.split(":")[0], k)):
        print(f"{name:<52} {totals[name] / n * 1000:>8.2f} {counts[name]:>6}")


if __name__ == "__main__":
    main()
