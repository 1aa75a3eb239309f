"""What runs inside a test's container: the item's phases, reports sent as JSON.

The container is a fork of the host pytest process, so the session, the item and
every wider-scoped fixture value are already here; only the item's own phases run.
Everything goes back through :func:`pytest_isolate.runtime.emit` as it happens:

    {"kind": "phase", "when": "call"}                  a phase starts
    {"kind": "report", "data": {...}, "dropped": [..]}  pytest_report_to_serializable data
    {"kind": "warning", ...}                            a warning recorded in the phase

Nothing the host receives is unpickled; the host rebuilds reports with
``pytest_report_from_serializable``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from . import _pytest_internals as internals
from .runtime import emit, trace

__all__ = ["in_container", "run_item", "serialize_report"]

# nodeid -> item, filled by the host before a container is started (the container is
# a fork of the host, so it sees this mapping as it was then).
ITEMS: dict[str, pytest.Item] = {}
# the warning filters of the run outside any test (taken as the test loop starts)
BASE_FILTERS: list[Any] | None = None
_in_container = False


def in_container() -> bool:
    """True inside a test's container (the plugin then runs items the normal way)."""
    return _in_container


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError, RecursionError):
        return False


def serialize_report(config: pytest.Config, report: pytest.TestReport) -> tuple[
        dict[str, Any], list[str]]:
    """The report as JSON data, and the names of attributes that could not be sent."""
    data = config.hook.pytest_report_to_serializable(config=config, report=report)
    clean: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        if _jsonable(value):
            clean[key] = value
        elif key == "user_properties":
            clean[key] = [[str(n), v if _jsonable(v) else repr(v)] for n, v in value]
        else:
            dropped.append(key)
    if isinstance(clean.get("sections"), list):
        clean["sections"] = [[title, _cut(text)] for title, text in clean["sections"]]
    return clean, dropped


MAX_SECTION = 256 << 10  # characters of one captured-output section sent home


def _cut(text: Any) -> Any:
    """A flood of output keeps its end (where the failure is), with a note."""
    if not isinstance(text, str) or len(text) <= MAX_SECTION:
        return text
    return (f"[... {len(text) - MAX_SECTION} earlier characters of output not shown ...]\n"
            + text[-MAX_SECTION:])


def _warning_data(kwargs: dict[str, Any]) -> dict[str, Any]:
    wm = kwargs["warning_message"]
    cat = wm.category
    return {
        "kind": "warning",
        "message": str(wm.message),
        "category": f"{cat.__module__}.{cat.__qualname__}",
        "filename": str(wm.filename),
        "lineno": int(wm.lineno or 0),
        "nodeid": kwargs.get("nodeid", ""),
        "when": kwargs.get("when", "runtest"),
    }


_link: Any = None
IN_CONTAINER = "isolate-in-container"


def link() -> Any:
    """The test's link to the host (a :class:`pytest_isolate.sandbox.Link`), inside a
    test's container; None elsewhere."""
    return _link


def run_item_when_told(nodeid: str, link_fd: int, go_fd: int, hang_fd: int) -> str:
    """The payload of a container prepared ahead of its test's turn: wait for the
    host's word (a line with the test's timeout as JSON), then run the item. The host
    closing ``go_fd`` without a word means the test does not come."""
    import json

    from .runtime import trace

    data = b""
    with trace.span("payload:waiting for its turn"):
        while not data.endswith(b"\n"):
            chunk = os.read(go_fd, 64)
            if not chunk:
                return "not run"
            data += chunk
    os.close(go_fd)
    if BASE_FILTERS is not None:
        # forked inside the test before's warning context: start from the run's own
        # filters, as a fork at this test's turn would (its own are applied next)
        import warnings

        warnings.filters[:] = BASE_FILTERS  # type: ignore[index]
        warnings._filters_mutated()  # type: ignore[attr-defined]
    timeout = json.loads(data)
    return run_item(nodeid, float(timeout) if timeout is not None else None, link_fd,
                    hang_fd)


def run_item(nodeid: str, timeout: float | None, link_fd: int | None = None,
             hang_fd: int | None = None) -> str:
    """Run the item's setup, call and teardown here and send each report home.
    ``link_fd`` is where the host's answers to run_isolated/isolate_usage arrive;
    ``hang_fd`` where the stacks go shortly before the timeout (the host shows them
    only if the test does time out)."""
    global _in_container, _link
    _in_container = True
    if link_fd is not None:
        from .sandbox import Link

        _link = Link(link_fd)
    item = ITEMS[nodeid]
    config = item.config
    # fds 1 and 2 are host-owned files: make them pytest's capture files too
    internals.fresh_capture_into(config, os.dup(1), os.dup(2))
    internals.limit_teardown_to_item(item)
    # Reports other plugins log while the test runs (subtests, for one) go home too;
    # the test's own phase reports are made with log=False and sent by _phase.
    hooks = config.pluginmanager.get_plugin(IN_CONTAINER)
    if hooks is not None:
        hooks.pid = os.getpid()
    internals.silence_terminal(config)
    if timeout is not None:
        import faulthandler
        import sys

        # Where the test hangs, written just before the host kills the container: to
        # a file of the host's, which it shows only if the test times out.
        faulthandler.dump_traceback_later(max(timeout - 0.3, timeout * 0.8),
                                          file=hang_fd if hang_fd is not None
                                          else (sys.__stderr__ or 2), exit=False)
    only_item = internals.ItemTeardownOnly(item)
    measuring = coverage_start()
    try:
        with internals.recording_warnings(config, item,
                                          lambda kw: emit(_warning_data(kw))):
            _phase(item, "setup", only_item)
            setup_ok = _last_passed
            if setup_ok and not config.getoption("setuponly", False):
                _phase(item, "call", only_item)
            _phase(item, "teardown", only_item)
    except pytest.exit.Exception as e:  # pytest.exit() in the test: the session stops
        emit({"kind": "exit", "reason": str(e.msg), "returncode": e.returncode})
        return "exit"
    except KeyboardInterrupt:
        emit({"kind": "interrupt"})
        return "interrupt"
    if measuring:
        emit({"kind": "coverage", **coverage_lines()})
    return "done"


def _coverage() -> Any:
    cov_mod = __import__("sys").modules.get("coverage")
    if cov_mod is None:
        return None
    return cov_mod.Coverage.current()


def coverage_start() -> bool:
    """When coverage (pytest-cov) runs: measure into memory from here on.

    The container is a fork, so its tracer is the host's. Left alone, coverage would
    notice the new pid and start a data file of its own in the project directory
    (which a read-only root refuses, and which would be litter otherwise). A fresh
    in-memory data object instead holds what this test ran, sent home as numbers.
    """
    cov = _coverage()
    if cov is None:
        return False
    try:
        cov._data = None  # coverage internals, guarded: the data object is made anew
        cov._no_disk = True
        cov._init_data(suffix=None)
        if cov._collector is not None:  # the tracer writes into the new object too
            cov._collector.use_data(cov._data, cov.config.context)
        cov.get_data()
    except Exception:
        return False
    return True


def coverage_lines() -> dict[str, Any]:
    cov = _coverage()
    data = cov.get_data()
    arcs = data.has_arcs()
    out = {f: sorted(list(a) if arcs else a for a in (data.arcs(f) if arcs else data.lines(f))
                     or ())
           for f in data.measured_files()}
    return {"arcs" if arcs else "lines": out}


class InContainer:
    """Hooks for the test's side of a container. Registered once in the pytest process
    (registering a plugin in every container would cost each test a millisecond and a
    half): outside a container they do nothing."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.pid: int | None = None  # the payload's pid, set by run_item

    def _forked_copy(self) -> None:
        """A process the test forked that returned into pytest instead of exiting
        would run the rest of the test's protocol and send reports of its own: it ends
        here, silently, as soon as it is back in pytest's hands."""
        if self.pid is not None and os.getpid() != self.pid:
            os._exit(0)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Any:
        try:
            return (yield)
        finally:
            self._forked_copy()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        try:
            return (yield)
        finally:
            self._forked_copy()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: Any) -> Any:
        try:
            return (yield)
        finally:
            self._forked_copy()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not _in_container:
            return
        self._forked_copy()
        data, dropped = serialize_report(self.config, report)
        emit({"kind": "report", "extra": True, "data": data, "dropped": dropped})


_last_passed = False


def _phase(item: pytest.Item, when: str, only_item: Any) -> None:
    global _last_passed
    emit({"kind": "phase", "when": when})
    kwds = {"nextitem": only_item} if when == "teardown" else {}
    pid = os.getpid()
    with trace.span(f"test:{when}"):
        report = internals.call_and_report(item, when, log=False, **kwds)  # type: ignore[arg-type]
    if os.getpid() != pid:  # a fork of the test that got this far: see _forked_copy
        os._exit(0)
    _last_passed = report.passed
    data, dropped = serialize_report(item.config, report)
    msg: dict[str, Any] = {"kind": "report", "data": data, "dropped": dropped}
    if when == "call":
        n = internals.failed_subtests(item.config, item)
        if n:
            msg["failed_subtests"] = n
    emit(msg)
