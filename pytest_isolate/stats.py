"""``--isolate-stats[=N]``: the hungriest isolated tests, listed at the end of the run.

Usage travels on each isolated test's last report (``report.isolate_usage``), so
this works the same in a plain run and on the controller of an xdist run.
"""

from __future__ import annotations

from typing import Any

import pytest

from .runtime.units import format_size


class UsageStats:
    def __init__(self, count: int) -> None:
        self.count = count
        self.usage: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        usage = getattr(report, "isolate_usage", None)
        if report.when == "teardown" and isinstance(usage, dict):
            self.usage[report.nodeid] = usage

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.write_sep("=", "isolate usage")
        if not self.usage:
            tr.write_line("no isolated test reported usage (no test ran isolated)")
            return
        for key, title, fmt in (
                ("memory_peak", "peak memory", _size),
                ("cpu_time", "CPU time", _seconds)):
            rows: list[tuple[float, str]] = sorted(
                ((float(u[key]), nodeid) for nodeid, u in self.usage.items()
                 if isinstance(u.get(key), (int, float))),
                key=lambda r: (-r[0], r[1]))
            if not rows:
                tr.write_line(f"{title}: not measured (this host's cgroups do not report it)")
                continue
            shown = rows if self.count == 0 else rows[: self.count]
            what = "all" if len(shown) == len(rows) else f"top {len(shown)} of {len(rows)}"
            tr.write_line(f"{title} ({what}):")
            for value, nodeid in shown:
                u = self.usage[nodeid]
                tr.write_line(f"  {fmt(value):>9}  {_other(key, u)}  {nodeid}")


def _size(n: float) -> str:
    return format_size(int(n))


def _seconds(t: float) -> str:
    return f"{t:.2f}s"


def _other(key: str, u: dict[str, Any]) -> str:
    """The other figures of the row, in fixed-width columns."""
    cpu = u.get("cpu_time")
    mem = u.get("memory_peak")
    pids = u.get("pids_peak")
    wall = u.get("wall_time")
    parts = []
    if key != "memory_peak":
        parts.append(f"mem {_size(mem) if isinstance(mem, (int, float)) else '-':>7}")
    if key != "cpu_time":
        parts.append(f"cpu {_seconds(cpu) if isinstance(cpu, (int, float)) else '-':>7}")
    parts.append(f"pids {pids if isinstance(pids, int) else '-':>4}")
    parts.append(f"wall {_seconds(wall) if isinstance(wall, (int, float)) else '-':>7}")
    return "  ".join(parts)
