"""Host memory across many isolated tests: does the pytest process grow?

    python benchmarks/host_memory.py [--tests 5000] [--python PY]

Runs N trivial tests under ``pytest --isolate`` with a conftest that records the
pytest process's resident memory (VmRSS) after the first 100 tests and at the end,
and its peak (VmHWM); prints them and the growth per 1,000 tests. Target: at most
1 MiB per 1,000 isolated tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFTEST = '''
import json, os

_seen = {"n": 0}

def _status():
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in f)
                if k in ("VmRSS", "VmHWM")}

def pytest_runtest_logfinish(nodeid, location):
    _seen["n"] += 1
    if _seen["n"] == 100:
        _seen["after_100"] = _status()["VmRSS"]

def pytest_unconfigure(config):
    s = _status()
    with open(os.path.join(os.path.dirname(__file__), "memory.json"), "w") as f:
        json.dump({"tests": _seen["n"], "after_100_kib": _seen.get("after_100"),
                   "end_kib": s["VmRSS"], "peak_kib": s["VmHWM"]}, f)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", type=int, default=5000)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--plain", action="store_true", help="without --isolate, for comparison")
    opts = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hostmem-", dir="/var/tmp"))
    try:
        (root / "conftest.py").write_text(CONFTEST)
        (root / "test_many.py").write_text("".join(
            f"def test_{i}():\n    assert {i} >= 0\n\n" for i in range(opts.tests)))
        start = time.perf_counter()
        proc = subprocess.run([opts.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *([] if opts.plain else ["--isolate"]), "test_many.py"],
                              cwd=root, capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr)
        m = json.loads((root / "memory.json").read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    grown = (m["end_kib"] - m["after_100_kib"]) / 1024
    per_k = grown / max(1, m["tests"] - 100) * 1000
    kind = "plain" if opts.plain else "isolated"
    print(f"{m['tests']} {kind} tests in {wall:.0f} s; pytest RSS after 100 tests "
          f"{m['after_100_kib'] / 1024:.1f} MiB, at the end {m['end_kib'] / 1024:.1f} MiB, "
          f"peak {m['peak_kib'] / 1024:.1f} MiB; growth {grown:.2f} MiB "
          f"({per_k:.2f} MiB per 1,000 tests)")


if __name__ == "__main__":
    main()
