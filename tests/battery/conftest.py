"""The battery's figures: collected by each item's test, printed at the end."""

from __future__ import annotations

from typing import Any

import pytest

_FIGURES: list[dict[str, Any]] = []


@pytest.fixture
def battery_figures() -> list[dict[str, Any]]:
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    tr = terminalreporter
    tr.write_sep("=", "containment battery")
    tr.write_line(f"{'item':<16} {'tests':>5} {'contained':>9} {'host unchanged':>14} "
                  f"{'pytest exit':>11} {'pytest peak RSS':>15} {'time':>7}")
    for f in sorted(_FIGURES, key=lambda f: f["item"]):
        rss, secs = f["peak_rss_mib"], f["seconds"]
        tr.write_line(f"{f['item']:<16} {f['tests']:>5} {f['contained']:>9} "
                      f"{'yes' if f['host_ok'] else 'NO':>14} {f['exit']:>11} "
                      f"{'-' if rss != rss else f'{rss:.0f} MiB':>15} "
                      f"{'-' if secs != secs else f'{secs:.1f}s':>7}")
    total = sum(f["tests"] for f in _FIGURES)
    contained = sum(f["contained"] for f in _FIGURES)
    hosts = sum(1 for f in _FIGURES if f["host_ok"])
    tr.write_line(f"{len(_FIGURES)} items, {total} tests: {contained} contained; host "
                  f"unchanged after {hosts} of {len(_FIGURES)} runs")
