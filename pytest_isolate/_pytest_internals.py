"""Every use of pytest internals, in one place, with the reason for each.

The fixture-scope rule (fixtures of scope class and wider live in the host pytest
process, the item and its function-scoped fixtures in the container) has no public
API: it needs the session's ``SetupState`` and the item's fixture request. Capture and
warning recording inside the container need the capture manager's global capture and
``catch_warnings_for_item``. pytest-forked and the PyPI pytest-isolate broke on pytest
9.2 by reaching further than this; the tests in ``tests/plugin/test_internals.py`` pin
what is used here on every supported pytest (tox: the oldest 8.x and the latest 9.x).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from _pytest.runner import call_and_report  # the phase runner, as pytest's own protocol uses
from _pytest.warnings import catch_warnings_for_item

__all__ = [
    "ItemTeardownOnly",
    "call_and_report",
    "fresh_capture_into",
    "outer_setup",
    "recording_warnings",
    "teardown_outer",
]


def _setupstate(item: pytest.Item) -> Any:
    return item.session._setupstate


def outer_setup(item: pytest.Item) -> None:
    """In the host: set up every collector above ``item`` and the item's fixtures of
    scope class and wider, as pytest would before the item's own setup.

    Mirrors ``SetupState.setup`` without its last step (the item itself), then asks the
    item's request for each wider-scoped fixture in pytest's instantiation order, so
    their finalizers are registered on their own nodes in the host.
    """
    ss = _setupstate(item)
    chain = item.listchain()[:-1]
    for col, (_, exc) in ss.stack.items():
        assert col in chain, "previous item was not torn down properly"
        if exc:
            raise exc[0].with_traceback(exc[1])
    for col in chain[len(ss.stack):]:
        ss.stack[col] = ([col.teardown], None)
        try:
            col.setup()
        except BaseException as exc:
            ss.stack[col] = (ss.stack[col][0], (exc, exc.__traceback__))
            raise
    request = getattr(item, "_request", None)
    info = getattr(item, "_fixtureinfo", None)
    if request is None or info is None:  # not a pytest.Function (e.g. a doctest)
        return
    # The item counts as active while its wider fixtures are requested (pytest >= 9.1
    # warns, and 10 will refuse, requests for an inactive node); their finalizers go
    # on their own scope's node, so nothing is lost when the item is taken off again.
    ss.stack[item] = ([], None)
    try:
        for name in item.fixturenames:  # type: ignore[attr-defined]
            defs = info.name2fixturedefs.get(name)
            if defs and defs[-1].scope != "function":
                request.getfixturevalue(name)
    finally:
        ss.stack.pop(item, None)


def set_up_for(item: pytest.Item, nextitem: pytest.Item) -> bool:
    """Whether everything above ``nextitem`` is set up in this process as it will be
    at its turn, while ``item`` (set up) runs: the same collectors, and each of its
    fixtures of scope class and wider already computed, none parametrized for it. A
    fork of this process made now is then as good as one made when its turn comes."""
    if item.listchain()[:-1] != nextitem.listchain()[:-1]:
        return False
    info = getattr(nextitem, "_fixtureinfo", None)
    names = getattr(nextitem, "fixturenames", None)
    if info is None or names is None:
        return False
    callspec = getattr(nextitem, "callspec", None)
    params = callspec.params if callspec is not None else {}
    for name in names:
        defs = info.name2fixturedefs.get(name)
        if not defs or defs[-1].scope == "function":
            continue
        cached = defs[-1].cached_result
        # computed, and for no parameter (a test before may have had it computed with
        # one, indirectly: then it is set up again at this test's turn)
        if name in params or cached is None or \
                cached[1] != defs[-1].cache_key(_NO_PARAM):
            return False
    return True


# What FixtureDef.cache_key sees of a request without a parameter (it answers with its
# param_index, 0, on pytest 8.0, and None on later ones)
_NO_PARAM = __import__("types").SimpleNamespace(param_index=0)


def teardown_outer(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """In the host, after the container: tear down what ``nextitem`` does not share."""
    _setupstate(item).teardown_exact(nextitem)


class ItemTeardownOnly:
    """Stands for "the next item" in the container, so that tearing down there ends
    the item's own (function-scoped) fixtures and nothing above it: wider fixtures
    belong to the host and their finalizers must never run in a container."""

    def __init__(self, item: pytest.Item) -> None:
        self._chain = [*item.listchain()[:-1], self]

    def listchain(self) -> list[Any]:
        return self._chain


def limit_teardown_to_item(item: pytest.Item) -> None:
    """In the container: whatever pytest passes as the next item (``-x`` passes None,
    which would tear down the session), only the item itself is torn down."""
    ss = _setupstate(item)
    original: Callable[[Any], None] = ss.teardown_exact
    only_item = ItemTeardownOnly(item)
    ss.teardown_exact = lambda nextitem: original(only_item)


_inherited: list[Any] = []


def fresh_capture_into(config: pytest.Config, out_fd: int, err_fd: int) -> None:
    """In the container: replace the inherited global capture (its files belong to the
    host and were closed) with a fresh one whose stdout/stderr capture files *are*
    ``out_fd``/``err_fd`` — host-owned files — so that what a test printed before
    crashing is still readable by the host. pytest truncates the capture file after
    each phase, so at a crash the files hold exactly the crashed phase's output.
    """
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return
    # Never stop the inherited capture (that would write into the host's files), and
    # never let it be collected either: its files would be closed with a
    # ResourceWarning in the test's setup (suites run with -W error). The container
    # leaves through os._exit, so keeping them costs nothing.
    _inherited.append(capman._global_capturing)
    capman._global_capturing = None
    capman.start_global_capturing()
    multi = capman._global_capturing
    for cap, fd in ((getattr(multi, "out", None), out_fd), (getattr(multi, "err", None), err_fd)):
        tmpfile = getattr(cap, "tmpfile", None)
        if tmpfile is None or not hasattr(cap, "targetfd_save"):
            continue  # sys capture (in memory) or no capture of this stream
        try:
            os.dup2(fd, tmpfile.fileno())
        except (OSError, ValueError):
            pass
    capman.suspend_global_capture()


def failed_subtests(config: pytest.Config, item: pytest.Item) -> int | None:
    """In the container: how many failed subtests pytest (>= 9) counted for the item in
    the config's stash, which is what fails a parent test whose own call passed."""
    try:
        from _pytest.subtests import failed_subtests_key
    except ImportError:  # pytest 8: subtests is the separate pytest-subtests plugin
        return None
    counts: Any = config.stash.get(failed_subtests_key, None)
    key: Any = getattr(item, "id", item.nodeid)
    return None if counts is None or key not in counts else int(counts[key])


def set_failed_subtests(config: pytest.Config, report: pytest.TestReport, n: int) -> None:
    """In the host: the same count, before the parent's call report is logged."""
    try:
        from _pytest.subtests import failed_subtests_key
    except ImportError:
        return
    counts: Any = config.stash.get(failed_subtests_key, None)
    if counts is not None:
        counts[getattr(report, "id", report.nodeid)] = n


def silence_terminal(config: pytest.Config) -> None:
    """In the container: the terminal reporter still sees the reports other plugins
    log there (they are shown by the host); it must not print them into the test's
    captured output."""
    from _pytest._io import TerminalWriter

    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the container
        _inherited.append(sink)
        tr._tw = TerminalWriter(sink)


class _WarningSink:
    """Quacks like ``ihook`` for the one hook ``catch_warnings_for_item`` calls."""

    def __init__(self, sink: Callable[[dict[str, Any]], None]) -> None:
        self.pytest_warning_recorded = self
        self._sink = sink

    def call_historic(self, kwargs: dict[str, Any]) -> None:
        self._sink(kwargs)


@contextmanager
def recording_warnings(config: pytest.Config, item: pytest.Item,
                       sink: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Apply pytest's warning filters (ini, ``-W``, ``filterwarnings`` marks) as for a
    normal run and hand each recorded warning to ``sink`` instead of the hook."""
    with catch_warnings_for_item(config, _WarningSink(sink), "runtest", item):
        yield


def prime_xfail(item: pytest.Item) -> None:
    """Before the host makes a report for a test that crashed in its container: the
    skipping plugin judges xfail from the item's stash, which was filled in the
    container, not here. Evaluating the marks here makes a crash under
    ``@pytest.mark.xfail`` an xfail, as it would be in a plain run."""
    from _pytest.skipping import evaluate_xfail_marks, xfailed_key

    if item.stash.get(xfailed_key, None) is None:
        item.stash[xfailed_key] = evaluate_xfail_marks(item)


def basetemp(config: pytest.Config) -> str | None:
    """The run's base temporary directory (tmp_path lives below it); created now, in
    the host, so every container can bind it at the same path."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return None
    return str(factory.getbasetemp())
