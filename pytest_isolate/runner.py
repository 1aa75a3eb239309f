"""Running one item in a container, from the host: outer setup here, the item's
phases there, reports logged here as if the test had run in this process."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from . import _pytest_internals as internals
from . import child
from .runtime import trace
from .settings import SettingError, Settings

if TYPE_CHECKING:
    from .plugin import IsolateState
    from .runtime import ExitStatus

import signal as _signal

_CRASH_SIGNALS = {_signal.SIGSEGV, _signal.SIGBUS, _signal.SIGABRT, _signal.SIGFPE,
                  _signal.SIGILL, _signal.SIGSYS, _signal.SIGTRAP}
MAX_SECTION = 1 << 20  # bytes of a crashed test's output shown in its report


class IsolatedCrash(Exception):
    """The test's container ended without reporting a phase."""


def _reraise(config: pytest.Config) -> tuple[type[BaseException], ...]:
    if config.getoption("usepdb", False):
        return (pytest.exit.Exception,)
    return (pytest.exit.Exception, KeyboardInterrupt)


def run_isolated(item: pytest.Item, nextitem: pytest.Item | None,
                 settings: Settings | SettingError, state: IsolateState) -> None:
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    try:
        _run(item, nextitem, settings, state)
    finally:
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _log(item: pytest.Item, report: pytest.TestReport) -> None:
    item.ihook.pytest_runtest_logreport(report=report)


def _host_phase(item: pytest.Item, when: str, func: Any) -> pytest.TestReport:
    call = pytest.CallInfo.from_call(func, when=when,  # type: ignore[arg-type]
                                     reraise=_reraise(item.config))
    report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
    return report


def _fail(message: str) -> Any:
    def raiser() -> None:
        raise pytest.fail.Exception(message, pytrace=False)
    return raiser


def _run(item: pytest.Item, nextitem: pytest.Item | None,
         settings: Settings | SettingError, state: IsolateState) -> None:
    if isinstance(settings, SettingError):
        setup = _host_phase(item, "setup", _fail(str(settings)))
    else:
        setup = _host_phase(item, "setup", lambda: internals.outer_setup(item))
    if setup.failed or setup.skipped or isinstance(settings, SettingError):
        _log(item, setup)
        if item.session.shouldfail or item.session.shouldstop:
            nextitem = None
        _log(item, _host_phase(item, "teardown", lambda: internals.teardown_outer(item, nextitem)))
        return
    box = take_prepared(state, item, settings) or _Box(item, state)
    try:
        box.run(settings, nextitem)
    finally:
        box.close()
    if box.stop is not None:  # what the test raised, raised here: pytest ends the session
        kind, reason, returncode = box.stop
        if kind == "interrupt":
            raise KeyboardInterrupt
        raise pytest.exit.Exception(reason, returncode)
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None  # as pytest does: the run stops, so everything is torn down now
    host_teardown = _host_phase(item, "teardown",
                                lambda: internals.teardown_outer(item, nextitem))
    inner = box.reports.get("teardown")
    final = inner if inner is not None and (inner.failed or not host_teardown.failed) \
        else host_teardown
    if box.teardown_failure is not None and not final.failed:
        final = _host_phase(item, "teardown", _fail(box.teardown_failure))
    _annotate(final, box.status)
    _attach_usage(final, box.status, box.wall_time)
    _log(item, final)


def prepare_next(state: IsolateState, item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Start the next tests' containers now, while ``item`` runs, when a fork made now
    is as good as one made at their turn: isolated, with valid settings, and every
    collector and wider fixture they need set up already (``internals.set_up_for``).
    Each container is still its test's own and fresh. Two ahead without xdist (the
    test after ``nextitem`` is the next in the session's list), one ahead with it (a
    worker does not know which test it gets after ``nextitem``)."""
    if nextitem is None or state.prepare_depth < 1:
        return
    if item.session.shouldfail or item.session.shouldstop:
        return
    wanted = [nextitem]
    if state.prepare_depth > 1:
        after = _after(state, item.session, nextitem)
        if after is not None:
            wanted.append(after)
    for i, candidate in enumerate(wanted):
        if i < len(state.prepared):
            if state.prepared[i].item is candidate:
                continue  # prepared while the test before ran
            return
        settings = state.settings_for(candidate)
        if not isinstance(settings, Settings) or not internals.set_up_for(item, candidate):
            return
        box = _Box(candidate, state)
        with trace.span("plugin:prepare the next container"):
            ok = box.prepare(settings)
        if not ok:
            box.close()
            return
        state.prepared.append(box)


def _after(state: IsolateState, session: pytest.Session, nextitem: pytest.Item
           ) -> pytest.Item | None:
    """The test run after ``nextitem``: the next in the session's list."""
    if state.item_index is None:
        state.item_index = {id(it): i for i, it in enumerate(session.items)}
    i = state.item_index.get(id(nextitem))
    if i is None or i + 1 >= len(session.items) or session.items[i] is not nextitem:
        return None
    return session.items[i + 1]


def take_prepared(state: IsolateState, item: pytest.Item, settings: Settings) -> _Box | None:
    """The container prepared for ``item``, if it was made with these settings; if the
    first prepared container is for another test, all are destroyed unused."""
    if not state.prepared:
        return None
    box = state.prepared[0]
    if box.item is item and box.settings is not None and \
            dataclasses.replace(box.settings, timeout=settings.timeout) == settings:
        state.prepared.pop(0)
        return box  # type: ignore[no-any-return]  # the timeout goes with the word
    discard_prepared(state)
    return None


def discard_prepared(state: IsolateState) -> None:
    while state.prepared:
        state.prepared.pop().discard()


def _annotate(report: pytest.TestReport, status: ExitStatus | None) -> None:
    """Facts about the container the test's own reports could not know."""
    if status is None:
        return
    if status.oom_kills and not status.oom_killed:
        from .runtime.units import format_size

        n = status.oom_kills
        # pytest shows a passed test's teardown sections whose title says "teardown"
        report.sections.append(("isolate (teardown)", f"{n} process{'es' if n > 1 else ''} of this "
                                f"test OOM-killed (memory limit "
                                f"{format_size(status.memory_limit)})"))
        report.user_properties.append(("isolate_oom_kills", n))


def _memory_file(name: str) -> Any:
    return os.fdopen(os.memfd_create(name, os.MFD_CLOEXEC), "w+b")


class ConfigProblem(Exception):
    """The container's Config could not be made; the message says why."""


def container_config(item: pytest.Item, settings: Settings) -> Any:
    """The runtime Config of a container for ``item`` with ``settings``: the settings'
    own, with the mounts the item needs, passed through the pytest_isolate_config hook.
    Raises :class:`ConfigProblem` naming what went wrong."""
    from .plugin import STATE, settings_to_config
    from .runtime import Config

    state = item.config.stash.get(STATE, None)
    try:
        cfg = settings_to_config(settings, _mounts(item, settings),
                                 state.support if state is not None else None)
    except Exception as e:
        raise ConfigProblem(f"invalid isolation settings: {e}") from None
    try:
        cfg = item.ihook.pytest_isolate_config(item=item, config=cfg)
    except Exception as e:
        raise ConfigProblem(f"the pytest_isolate_config hook failed: "
                            f"{type(e).__name__}: {e}") from None
    if not isinstance(cfg, Config):
        raise ConfigProblem("the pytest_isolate_config hook returned "
                            f"{type(cfg).__name__}, not a pytest_isolate.runtime.Config "
                            "(return dataclasses.replace(config, ...) or None)")
    return cfg


def _attach_usage(report: pytest.TestReport, status: ExitStatus | None, wall: float) -> None:
    """The container's usage, on the test's last report: as ``report.isolate_usage``
    (a dict, for other plugins) and as ``isolate_*`` user properties (junitxml)."""
    if status is None:
        return
    stats = status.stats or {}
    usage = {
        "memory_peak": stats.get("memory_peak"),
        "cpu_time": stats.get("cpu_usage"),
        "pids_peak": stats.get("pids_peak"),
        "wall_time": round(wall, 6),
        "memory_limit": status.memory_limit,
    }
    report.isolate_usage = usage  # type: ignore[attr-defined]
    for name, value in usage.items():
        if value is not None:
            report.user_properties.append((f"isolate_{name}", value))


class _Box:
    """One test's container and what came back from it."""

    def __init__(self, item: pytest.Item, state: IsolateState) -> None:
        self.item = item
        self.state = state
        self.reports: dict[str, pytest.TestReport] = {}
        self.started: list[str] = []
        self.protocol_error: str | None = None
        self.status: ExitStatus | None = None
        self.teardown_failure: str | None = None
        self.stop: tuple[str, str, int | None] | None = None  # pytest.exit / Ctrl-C inside
        self.container: Any = None
        self.extra_reports = 0
        self.may_stop_run = True
        self.refused_stop = False
        self.deadline: float | None = None
        self.start_time = 0.0
        self.wall_time = 0.0
        self.link_w = -1  # the host's end of the test's link (answers to its requests)
        self.go_w = -1  # a prepared container's payload starts the test when told here
        self.settings: Settings | None = None  # what a prepared container was made with
        self.process: Any = None
        # The test's stdout and stderr: host-owned, so what it printed survives a crash;
        # memory files, whose pages count against the container that writes them (a
        # flood, or fallocate, hits the test's memory limit, never the host's disk).
        self.out = _memory_file("isolate-stdout")
        self.err = _memory_file("isolate-stderr")
        self.hang = _memory_file("isolate-hang")  # stacks dumped just before a timeout

    def close(self) -> None:
        self.out.close()
        self.err.close()
        self.hang.close()
        if self.link_w >= 0:
            os.close(self.link_w)
            self.link_w = -1
        if self.go_w >= 0:
            os.close(self.go_w)
            self.go_w = -1

    def _answer(self, reply: dict[str, Any]) -> None:
        """Write one answer to the test's link; a test that stops reading is not
        waited for beyond its own deadline."""
        import select

        from .runtime.channel import KIND_JSON, frame

        data = memoryview(frame(KIND_JSON, json.dumps(reply).encode()))
        while data:
            wait = None if self.deadline is None else self.deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return
            _, ready, _ = select.select([], [self.link_w], [], wait)
            if not ready:
                return
            try:
                n = os.write(self.link_w, data)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # the test is gone
                return
            data = data[n:]

    # -- messages from the container ---------------------------------------------

    def on_message(self, msg: Any) -> None:
        try:
            self._handle(msg)
        except Exception as e:  # anything malformed: never trusted, never fatal
            if self.protocol_error is None:
                self.protocol_error = f"malformed message from the container: {type(e).__name__}"

    def _handle(self, msg: Any) -> None:
        kind = msg["kind"]
        if kind == "phase":
            when = msg["when"]
            if when not in ("setup", "call", "teardown"):
                raise ValueError(when)
            self.started.append(when)
        elif kind == "report":
            config = self.item.config
            extra = bool(msg.get("extra"))  # logged by another plugin (subtests ...)
            if extra:
                self.extra_reports += 1
                if self.extra_reports > MAX_EXTRA_REPORTS:
                    raise ValueError("too many reports")
            data = _checked_report_data(msg["data"], self.item)
            report = config.hook.pytest_report_from_serializable(config=config, data=data)
            if not isinstance(report, pytest.TestReport) or (
                    not extra and report.when in self.reports):
                raise ValueError("unexpected report")
            # JSON has no tuples; pytest expects them in these two places
            if isinstance(report.longrepr, list):
                report.longrepr = tuple(report.longrepr)
            # the host's own strings, not copies, in what pytest keeps of every report
            report.keywords = {sys.intern(k): v for k, v in report.keywords.items()}
            for name in msg.get("dropped", []):
                self.state.warn_once(f"dropped:{name}",
                                     f"report attribute {str(name)!r} set in an isolated test "
                                     "is not JSON-compatible and was dropped")
            if extra:
                _log(self.item, report)
                return
            if msg.get("failed_subtests"):
                internals.set_failed_subtests(config, report, int(msg["failed_subtests"]))
            self.reports[report.when] = report
            if report.when != "teardown":
                _log(self.item, report)
        elif kind == "warning":
            _reemit_warning(self.item, msg)
        elif kind == "coverage":
            _merge_coverage(msg)
        elif kind in ("exit", "interrupt") and not self.may_stop_run:
            self.refused_stop = True  # an untrusted test does not end the run
        elif kind == "exit":
            rc = msg.get("returncode")
            self.stop = ("exit", str(msg.get("reason", ""))[:1000],
                         int(rc) if isinstance(rc, int) and 0 <= rc <= 255 else None)
        elif kind == "interrupt":
            self.stop = ("interrupt", "", None)
        elif kind == "request":  # run_isolated / isolate_usage in the test
            from .sandbox import serve

            # a nested call ends a little before the test, so the test can still report
            nested_deadline = None if self.deadline is None else \
                self.deadline - min(1.0, 0.2 * (self.deadline - self.start_time))
            self._answer(serve(self.state, self.item, msg, self.container, nested_deadline))
        else:
            raise ValueError(kind)

    # -- running -----------------------------------------------------------------

    def _process(self, settings: Settings, link_r: int, go_r: int | None) -> Any:
        from .runtime import DEVNULL, Process

        nodeid = self.item.nodeid
        target: Any
        hang = self.hang.fileno()
        if go_r is None:
            target, args, extra = child.run_item, (nodeid, settings.timeout, 3, 4), \
                [link_r, hang]
        else:
            # its timeout comes with the word to start (pytest-timeout may change it)
            target, args, extra = child.run_item_when_told, (nodeid, 3, 4, 5), \
                [link_r, go_r, hang]
        return Process(target=target, args=args, env=dict(settings.env), stdin=DEVNULL,
                       stdout=self.out.fileno(), stderr=self.err.fileno(),
                       timeout=settings.timeout, on_message=self.on_message,
                       extra_files=extra, max_frame_size=MAX_FRAME,
                       max_result_size=MAX_CHANNEL, max_json_items=MAX_JSON_ITEMS)

    def prepare(self, settings: Settings) -> bool:
        """Start this test's container ahead of its turn (``Container.start(wait=False)``):
        it sets itself up while the test before runs, and its payload waits for the
        word (:meth:`run`). False, with nothing left, when that cannot be done; the test
        then starts its container when its turn comes."""
        from .runtime import IsolateError

        item = self.item
        try:
            cfg = container_config(item, settings)
        except ConfigProblem:
            return False  # reported when the test's turn comes
        link_r, link_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        container = None
        child.ITEMS[item.nodeid] = item
        try:
            process = self._process(settings, link_r, go_r)
            with trace.span("plugin:factory create"):
                container = self.state.factory.create(self.state.next_id(), cfg)
            container.start(process, wait=False)
        except BaseException as e:
            if container is not None:
                container.destroy()
            child.ITEMS.pop(item.nodeid, None)
            os.close(link_w)
            os.close(go_w)
            if isinstance(e, (IsolateError, ValueError, OSError, OverflowError)):
                return False
            raise
        finally:
            os.close(link_r)  # handed over: the container's init holds them now
            os.close(go_r)
        os.set_blocking(link_w, False)
        self.link_w, self.go_w, self.container = link_w, go_w, container
        self.process, self.settings = process, settings
        return True

    def discard(self) -> None:
        """A prepared container whose test does not come (the run stopped, the test
        came with other settings): destroyed unused."""
        container, self.container = self.container, None
        child.ITEMS.pop(self.item.nodeid, None)
        try:
            if container is not None:
                container.destroy()
        finally:
            self.close()

    def run(self, settings: Settings, nextitem: pytest.Item | None = None) -> None:
        from .runtime import IsolateError

        item = self.item
        self.may_stop_run = settings.may_stop_run
        container = self.container
        link_r = -1
        if container is None:
            problem = None
            try:
                with trace.span("plugin:settings to config"):
                    cfg = container_config(item, settings)
            except ConfigProblem as e:
                problem = str(e)
            if problem is not None:  # reported outside the except: no exception chain
                self._report_crash(problem, None)
                return
            link_r, self.link_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(self.link_w, False)
            try:
                process = self._process(settings, link_r, None)
            except BaseException:
                os.close(link_r)
                raise
            child.ITEMS[item.nodeid] = item
        status: ExitStatus | None = None
        failure: str | None = None
        started = self.start_time = time.monotonic()
        try:
            if container is None:
                with trace.span("plugin:factory create"):
                    container = self.state.factory.create(self.state.next_id(), cfg)
                self.container = container
                container.start(process)
                os.close(link_r)
                link_r = -1
            else:  # prepared while the test before ran: it only waits for the word
                self.process.timeout = settings.timeout  # counts from ready()
                with trace.span("plugin:prepared container ready"):
                    container.ready()
                os.write(self.go_w, json.dumps(settings.timeout).encode() + b"\n")
                os.close(self.go_w)
                self.go_w = -1
            if settings.timeout is not None:
                self.deadline = started + settings.timeout
            # the next test's container sets itself up while this test runs, and the
            # previous test's is finished off: the host would only wait otherwise
            prepare_next(self.state, item, nextitem)
            self.state.reap_retired()
            status = container.wait(reap=False)
        except (IsolateError, ValueError, OSError, OverflowError) as e:
            failure = f"could not run the test in a container: {e}"
        finally:
            self.wall_time = time.monotonic() - started
            if link_r >= 0:
                os.close(link_r)
            child.ITEMS.pop(item.nodeid, None)
            if container is not None:
                if status is not None:
                    self.state.retire(container)  # all killed; the rest is bookkeeping
                else:
                    with trace.span("plugin:destroy"):
                        container.destroy()
            self.container = None
        self.status = status
        if item.config.getoption("capture", "fd") == "no":
            self._echo_output()  # -s: the test's output went to host files; show it now
        if failure is None and status is not None:
            failure = self._diagnose(status, settings)
        if failure is not None:
            self._report_crash(failure, status)

    def _echo_output(self) -> None:
        for f, stream in ((self.out, sys.stdout), (self.err, sys.stderr)):
            text = _tail(f)
            if text:
                stream.write(text)
                stream.flush()

    def _diagnose(self, status: ExitStatus, settings: Settings) -> str | None:
        """None when every phase reported; else what went wrong, in words."""
        if self.protocol_error:
            return self.protocol_error
        if self.refused_stop:
            return ("the test tried to end the run (pytest.exit() or KeyboardInterrupt), "
                    "which a test of a profile that may not stop the run (untrusted) "
                    "cannot do: it failed instead")
        if self.stop is not None:
            return None  # the session stops, as after the same call in a plain run
        complete = "teardown" in self.reports
        if status.timed_out:
            return f"timed out after {settings.timeout:g} s"
        if status.oom_killed and not self.started and status.memory_limit is not None:
            from .runtime.units import format_size

            return (f"memory={format_size(status.memory_limit)} is below what the container "
                    "needs to start (the OOM killer ended it before the test began): raise "
                    "the limit")
        if status.oom_killed:
            return status.describe()  # "memory limit 64M exceeded (OOM kill), peak 63.9M"
        if status.result_error and "exited with status" not in status.result_error:
            # a garbled channel fails the test even if every phase got through
            return f"the test's result could not be read: {status.result_error}"
        if complete:
            return None
        if status.signal is not None:
            verb = "crashed with" if status.signal in _CRASH_SIGNALS else "killed by"
            return f"{verb} signal {status.signal} ({status.signal_name})"
        if status.exception is not None and status.exception.type not in ("SystemExit",):
            return f"the test's container failed: {status.exception}"
        return (f"the test process exited with status {status.exit_code} before reporting "
                "a result")

    def _report_crash(self, message: str, status: ExitStatus | None) -> None:
        item = self.item
        when = "setup"
        for phase in ("setup", "call", "teardown"):
            if phase in self.started and phase not in self.reports:
                when = phase
                break
        else:
            if "setup" in self.reports and self.reports["setup"].passed:
                when = "call" if "call" not in self.reports else "teardown"
        if when == "teardown":  # reported with the host's own teardown
            self.teardown_failure = message
            return
        internals.prime_xfail(item)
        report = _host_phase(item, when, _fail(message))
        # the phase took what the container's time shows, not the instant of the report
        # (a test that timed out after 5 s must be in --durations and junitxml as such)
        spent = self.wall_time - sum(r.duration for r in self.reports.values())
        if spent > report.duration:
            report.duration = spent
            report.stop = report.start + spent
        if getattr(report, "wasxfail", None) is not None:
            report.wasxfail = f"{report.wasxfail} ({message})"
        for name, f in (("stdout", self.out), ("stderr", self.err)):
            text = _tail(f)
            if text:
                report.sections.append((f"Captured {name} {when}", text))
        if status is not None and status.timed_out:
            text = _tail(self.hang)
            if text:
                report.sections.append((f"isolate: where it hung ({when})", text))
        _log(item, report)
        self.reports[when] = report


# What one test's container may send: a report (sections cut to 256K characters)
# fits a frame many times over; item-dense JSON is refused before it is parsed.
MAX_FRAME = 16 << 20
MAX_CHANNEL = 64 << 20
MAX_JSON_ITEMS = 3_000_000
MAX_EXTRA_REPORTS = 10_000  # reports other plugins may log for one test (subtests)
MAX_LONGREPR = 4 << 20  # characters of a failure's representation, as JSON
_REPORT_ATTRS = frozenset(dir(pytest.TestReport))


def _checked_report_data(data: Any, item: pytest.Item) -> dict[str, Any]:
    """A report as a container sent it, checked before pytest sees it: everything
    pytest, its terminal and junitxml later rely on has the shape they expect, so a
    forged report fails this test instead of the run. The location is the host's."""
    if not isinstance(data, dict) or data.get("nodeid") != item.nodeid:
        raise ValueError("report for another test")
    if data.get("outcome") not in ("passed", "failed", "skipped") or \
            data.get("when") not in ("setup", "call", "teardown"):
        raise ValueError("outcome")
    for key in data:
        if not isinstance(key, str) or (key in _REPORT_ATTRS and key not in (
                "nodeid", "location", "keywords", "outcome", "longrepr", "when",
                "user_properties", "sections", "duration", "start", "stop", "head_line",
                "caplog", "capstdout", "capstderr", "count_towards_summary", "failed",
                "passed", "skipped", "fspath", "longreprtext")) or key.startswith("__"):
            raise ValueError(f"report attribute {str(key)[:40]!r}")
    sections = data.get("sections", [])
    if not isinstance(sections, list) or not all(
            isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x)
            for x in sections):
        raise ValueError("sections")
    props = data.get("user_properties", [])
    if not isinstance(props, list) or not all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
            and (x[1] is None or isinstance(x[1], (str, int, float, bool))) for x in props):
        raise ValueError("user_properties")
    keywords = data.get("keywords", {})
    if not isinstance(keywords, dict) or not all(
            isinstance(v, (str, int, float, bool)) or v is None for v in keywords.values()):
        raise ValueError("keywords")
    for key in ("duration", "start", "stop"):
        if key in data and (isinstance(data[key], bool)
                            or not isinstance(data[key], (int, float))):
            raise ValueError(key)
    longrepr = data.get("longrepr")
    if longrepr is not None and not isinstance(longrepr, (str, list, dict)):
        raise ValueError("longrepr")
    if isinstance(longrepr, (list, dict)) and len(json.dumps(longrepr)) > MAX_LONGREPR:
        raise ValueError("longrepr too large")
    if isinstance(longrepr, str) and len(longrepr) > MAX_LONGREPR:
        data["longrepr"] = longrepr[:MAX_LONGREPR]
    # the host's own values (and strings: not copies in every report pytest keeps)
    data["location"] = item.location
    data["nodeid"] = item.nodeid
    return data


def _tail(f: Any) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - MAX_SECTION))
    data: bytes = f.read()
    text = data.decode("utf-8", "replace")
    if size > MAX_SECTION:
        text = f"[... {size - MAX_SECTION} earlier bytes not shown ...]\n" + text
    return text


def _hidden_homes() -> list[str]:
    """Home directories the ``untrusted`` profile hides: root's, the invoking user's
    (also through sudo) and every one under /home."""
    import pwd

    homes = {"/root", os.path.expanduser("~")}
    for name in (os.environ.get("SUDO_USER"), os.environ.get("USER")):
        if name:
            try:
                homes.add(pwd.getpwnam(name).pw_dir)
            except KeyError:
                pass
    if os.path.isdir("/home"):
        homes.update(os.path.join("/home", d) for d in os.listdir("/home"))
    return sorted(h for h in homes if h not in ("/", "") and os.path.isdir(h))


def _mounts(item: pytest.Item, settings: Settings) -> list[Any]:
    """Mounts a test needs on top of the defaults, in order.

    ``/tmp`` is private in a container, and ``untrusted`` hides home directories, so
    whatever of the interpreter, the project and ``sys.path`` lives there is bound
    back read-only. The run's base temporary directory (``tmp_path`` lives in it) is
    bound read-write; a test running as a non-root uid gets an empty tmpfs of its own
    there instead, owned by that uid and sized to its memory limit.
    """
    from .runtime import Mount

    hidden = ["/tmp/", "/dev/shm/"]
    mounts: list[Any] = []
    if settings.hide_home:
        for home in _hidden_homes():
            hidden.append(home.rstrip("/") + "/")
            # writable only by root inside (its mount points are made there), 64k at most
            mounts.append(Mount(home, "tmpfs", size="64k", mode=0o755))
    wanted: set[str] = set()
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, str(item.config.rootpath),
              *sys.path, *_editable_roots()):
        if p and os.path.isdir(p):
            real = os.path.realpath(p)
            if real.startswith(tuple(hidden)) or real + "/" in hidden:
                wanted.add(real)
    base = internals.basetemp(item.config)
    outermost: list[str] = []
    for p in sorted(wanted, key=len):
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in outermost):
            outermost.append(p)
    for p in outermost:  # as writable as the rest of the host root is
        mounts.append(Mount(p, source=p, readonly=settings.readonly))
    if base is not None:
        uid = _uid(settings.user)
        if uid:
            # another uid's test gets an empty base temporary directory of its own: a
            # tmpfs it owns, counted in its memory and gone with its container
            gid = int(str(settings.user).split(":")[1]) if ":" in str(settings.user) else uid
            mounts.append(Mount(base, "tmpfs", size=settings.memory, mode=0o700, uid=uid,
                                gid=gid))
        else:
            mounts.append(Mount(base, source=base))
    return mounts


@functools.lru_cache(maxsize=1)
def _editable_roots() -> tuple[str, ...]:
    """Where packages installed in editable mode live: their meta-path finders map
    them to source trees that are not on ``sys.path`` (setuptools' ``MAPPING``), and a
    fresh interpreter inside must import them from there (this plugin included)."""
    roots = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    for name, module in list(sys.modules.items()):
        mapping = getattr(module, "MAPPING", None) if name.startswith("__editable__") else None
        if isinstance(mapping, dict):
            roots.update(os.path.dirname(str(p)) for p in mapping.values())
    return tuple(sorted(roots))


def _uid(user: str | None) -> int:
    if not user:
        return 0
    return int(str(user).split(":")[0])


def _merge_coverage(msg: dict[str, Any]) -> None:
    """Add the lines (or arcs) a test ran in its container to the host's coverage
    data, so pytest-cov reports them; only numbers cross, checked for shape."""
    cov_mod = sys.modules.get("coverage")
    cov = cov_mod.Coverage.current() if cov_mod is not None else None
    if cov is None:
        return
    data = cov.get_data()
    if "arcs" in msg and data.has_arcs():
        arcs = {str(f): [(int(a), int(b)) for a, b in v] for f, v in msg["arcs"].items()}
        data.add_arcs(arcs)
    elif "lines" in msg and not data.has_arcs():
        data.add_lines({str(f): [int(n) for n in v] for f, v in msg["lines"].items()})


def _reemit_warning(item: pytest.Item, msg: dict[str, Any]) -> None:
    category: type[Warning] = UserWarning
    module, _, name = str(msg.get("category", "")).rpartition(".")
    mod = sys.modules.get(module or "builtins")
    candidate = getattr(mod, name, None) if mod is not None else None
    if isinstance(candidate, type) and issubclass(candidate, Warning):
        category = candidate
    try:
        message: Warning = category(str(msg.get("message", "")))
    except Exception:
        message = UserWarning(str(msg.get("message", "")))
        category = UserWarning
    wm = warnings.WarningMessage(message, category, str(msg.get("filename", "")),
                                 int(msg.get("lineno", 0)))
    item.ihook.pytest_warning_recorded.call_historic(kwargs=dict(
        warning_message=wm, nodeid=item.nodeid, when="runtest", location=None))
