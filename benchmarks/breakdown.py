"""Where one isolated test's time goes, phase by phase.

    python benchmarks/breakdown.py [--tests 200] [--python PY] [-- pytest args]

Runs a suite of trivial tests under ``pytest --isolate`` with
``PYTEST_ISOLATE_TRACE`` set (see ``pytest_isolate/runtime/trace.py``), then prints
for every phase the median and mean duration per test (over all tests but the first,
which pays for imports), the host's phases and the container's side by side. Phases
overlap where host and container work at once; "host:wait ..." phases are the host
waiting for the container's side.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
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
    # group phases by test: each test starts at a "plugin:settings to config"
    per_test: list[dict[str, float]] = []
    current: dict[str, float] = collections.defaultdict(float)
    for _pid, *name_parts, t0, t1 in lines:
        name = normalise(" ".join(name_parts))
        if name == "plugin:settings to config" and current:
            per_test.append(current)
            current = collections.defaultdict(float)
        current[name] += float(t1) - float(t0)
    if current:
        per_test.append(current)
    per_test = per_test[1:]  # the first pays for imports
    names = sorted({n for t in per_test for n in t}, key=lambda n: (n.split(":")[0], n))
    print(f"{len(per_test)} tests traced; whole run {wall:.2f} s "
          f"({wall / (len(per_test) + 1) * 1000:.1f} ms per test, pytest start included)")
    print(f"{'phase':<52} {'median ms':>9} {'mean ms':>8}")
    for n in names:
        values = [t.get(n, 0.0) * 1000 for t in per_test]
        print(f"{n:<52} {statistics.median(values):>9.2f} {statistics.mean(values):>8.2f}")


if __name__ == "__main__":
    main()
