"""``run_isolated`` and ``isolate_usage``: containers and usage figures from inside a test.

One code path, two transports. A call is a *request* (the callable as cloudpickle
bytes, settings as plain values) and an *answer* (JSON data only):

* in a test running on the host, :func:`execute` runs the request right here;
* in an isolated test, the request goes to the host over the test's own result
  channel, the host runs it with :func:`execute` next to the test's container, and
  the answer comes back on a pipe the host handed in as fd 3 (the *link*).

Either way the callable is unpickled only inside the new container, the host
never unpickles anything, and the answer is rebuilt from JSON data. With
``trusted=True`` the value is pickled inside the container and unpickled by the
calling test (in its own container when it is isolated).

Inside an isolated test a nested container may not be looser than the test's:
limits are at most the test's, its timeout ends with the test's, and network,
seccomp, read-only root, capabilities, user and environment are kept or tightened.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import values
from .runtime.process import RemoteException

if TYPE_CHECKING:
    import pytest

    from .plugin import IsolateState
    from .settings import Settings

__all__ = [
    "IsolatedCallFailed",
    "IsolatedResult",
    "RunIsolated",
    "RunIsolatedError",
    "Usage",
    "UsageSnapshot",
]

DEFAULT_MAX_OUTPUT = 1 << 20
MAX_ANSWER = 512 * 2**20


class RunIsolatedError(Exception):
    """``run_isolated`` could not run the callable at all: bad settings, settings
    looser than the calling test's, or a container that could not start. Nothing the
    callable did ends up here; that is in the :class:`IsolatedResult`."""


class IsolatedCallFailed(AssertionError):
    """Raised by :meth:`IsolatedResult.raise_for_status`; ``.result`` is the result."""

    def __init__(self, message: str, result: IsolatedResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Usage:
    """What a container used. ``None`` where this host's cgroups do not tell."""

    memory_peak: int | None = None
    cpu_time: float | None = None
    wall_time: float = 0.0
    pids_peak: int | None = None
    memory_limit: int | None = None

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> Usage:
        return cls(memory_peak=_opt(int, d.get("memory_peak")),
                   cpu_time=_opt(float, d.get("cpu_time")),
                   wall_time=float(d.get("wall_time") or 0.0),
                   pids_peak=_opt(int, d.get("pids_peak")),
                   memory_limit=_opt(int, d.get("memory_limit")))


@dataclass(frozen=True)
class IsolatedResult:
    """How a ``run_isolated`` call ended.

    ``value`` is the return value (``None`` if there is none); ``exception`` what the
    callable raised (type name, message, traceback text: data, never the object);
    ``exit_code`` or ``signal`` (a name like ``"SIGKILL"``) how the process ended;
    ``error`` why no value came back although the process ended (the value was not
    plain data, the channel was garbled or exceeded its cap, the process exited
    first). ``stdout``/``stderr`` are the output, each cut at ``max_output`` bytes.
    """

    name: str
    value: Any = None
    exception: RemoteException | None = None
    exit_code: int | None = None
    signal: str | None = None
    oom_killed: bool = False
    timed_out: bool = False
    timeout: float | None = None
    stdout: str = ""
    stderr: str = ""
    usage: Usage = dataclasses.field(default_factory=Usage)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The callable returned a value and its process exited with status 0."""
        return (self.exit_code == 0 and self.exception is None and self.error is None
                and not self.timed_out and not self.oom_killed)

    def describe(self) -> str:
        """How it ended, in one line."""
        if self.timed_out:
            return f"timed out after {round(self.timeout, 2):g} s" if self.timeout else "timed out"
        if self.oom_killed:
            from .runtime.units import format_size

            text = "memory limit"
            if self.usage.memory_limit is not None:
                text += f" {format_size(self.usage.memory_limit)}"
            return text + " exceeded (OOM-killed)"
        if self.exception is not None:
            text = str(self.exception)
            if len(text) > 1000:
                text = text[:1000] + f" [... {len(text) - 1000} more characters]"
            return f"raised {_printable(text, newlines=False)}"
        if self.signal is not None:
            return f"killed by {self.signal}"
        if self.error is not None:
            return _printable(self.error, newlines=False)
        return f"returned (exit status {self.exit_code})"

    def raise_for_status(self) -> IsolatedResult:
        """Return ``self`` if :attr:`ok`, else raise :class:`IsolatedCallFailed` saying
        how it ended, with the remote traceback and the end of stderr."""
        __tracebackhide__ = True
        if self.ok:
            return self
        parts = [f"run_isolated({self.name}) {self.describe()}"]
        if self.exception is not None and self.exception.traceback:
            parts.append("traceback inside the container:\n"
                         + _printable(self.exception.traceback[-8000:].rstrip()))
        if self.stderr.strip():
            parts.append("stderr (end):\n" + _printable(self.stderr[-2000:].rstrip()))
        raise IsolatedCallFailed("\n".join(parts), self)


@dataclass(frozen=True)
class UsageSnapshot:
    """The calling isolated test's container right now: memory in bytes, CPU in
    seconds, limits ``None`` when unlimited (on cgroup v1 and v2 alike)."""

    memory_current: int | None
    memory_peak: int | None
    memory_limit: int | None
    cpu_time: float | None
    pids_current: int | None
    pids_limit: int | None
    cgroup_version: int | None


def _printable(text: str, newlines: bool = True) -> str:
    """Text from the container, safe to show: control characters (escape sequences,
    carriage returns, and newlines unless kept) written as escapes."""
    out = []
    for ch in text:
        if (ch == "\n" and newlines) or ch == "\t" or (
                ch.isprintable() and not 0x80 <= ord(ch) <= 0x9f):
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)


def _opt(kind: Callable[[Any], Any], v: Any) -> Any:
    return None if v is None else kind(v)


# ------------------------------------------------------------------ inside the new container


def _invoke(blob: bytes, mode: str) -> dict[str, Any]:
    """Runs in the new container: unpickle the call, run it, return the value as data
    (``{"json": tree}``, ``{"pickle": base64}`` or ``{"not_data": why}``)."""
    import cloudpickle

    fn, args, kwargs = cloudpickle.loads(blob)
    value = fn(*args, **kwargs)
    if mode == "pickle":
        try:
            data = cloudpickle.dumps(value)
        except Exception as e:
            return {"not_data": f"the return value ({type(value).__name__}) could not be "
                                f"pickled: {type(e).__name__}: {e}"}
        return {"pickle": base64.b64encode(data).decode("ascii")}
    try:
        return {"json": values.encode(value)}
    except (values.NotData, RecursionError) as e:
        why = str(e) if isinstance(e, values.NotData) else "the value is nested too deep"
        return {"not_data": f"{why}; return plain data, or pass trusted=True to get any "
                            "picklable object back (only for code you trust)"}


# ------------------------------------------------------------------ the host side


def resolve_call_settings(state: IsolateState, item: pytest.Item,
                          overrides: Mapping[str, Any]) -> Settings:
    """The settings of one call: the run's (and, for an isolated test, its marker's)
    with the call's keywords on top; inside an isolated test, never looser."""
    __tracebackhide__ = True  # errors point at the caller, not at us
    from .settings import SettingError, Settings, looser_than, resolve

    name = getattr(item, "name", "?")
    origin = f"run_isolated() in {item.nodeid}"
    parent = state.settings_for(item)
    layers = list(state.layers_for(item))
    try:
        settings = resolve([*layers, (origin, dict(overrides))], state.profiles)
    except SettingError as e:
        raise RunIsolatedError(str(e)) from None
    if isinstance(parent, Settings):
        # a call's timeout is cut to the test's anyway: only the rest is checked
        checked = settings if settings.timeout is not None else dataclasses.replace(
            settings, timeout=parent.timeout)
        bad = looser_than(parent, checked)
        if bad:
            raise RunIsolatedError(
                f"run_isolated() in the isolated test {name} cannot be looser than the "
                f"test's own container: {'; '.join(bad)}. Ask for at most what the test "
                "has, or loosen the test's own settings (its isolated marker or profile).")
    return settings


def _within_host_support(state: IsolateState, settings: Settings) -> Settings:
    """The ``isolate_unsupported`` policy, for one call as for a test: a limit this
    host cannot give is an error when asked for (``RunIsolatedError``), a warning when
    a profile's default (the call runs without it), or skips the calling test. Without
    namespaces a call is always an error: it would run unsandboxed."""
    __tracebackhide__ = True  # errors point at the caller, not at us
    import pytest

    from .support import policy_for, without

    for gap in state.support.gaps(settings):
        policy = "error" if gap.key == "namespaces" else policy_for(gap, state.unsupported)
        if policy == "error":
            raise RunIsolatedError(f"run_isolated(): {gap.message()}. Or run it without: "
                                   "--isolate-unsupported=warn")
        if policy == "skip":
            raise pytest.skip.Exception(f"isolate: {gap.what}, which this host cannot give "
                                        f"({gap.cause})")
        state.warn_once(f"unsupported:{gap.key}", gap.message() +
                        ". Tests and calls run without it (--isolate-unsupported=warn)")
        settings = without(settings, gap)
    return settings


def execute(state: IsolateState, item: pytest.Item, request: Mapping[str, Any],
            deadline: float | None = None) -> dict[str, Any]:
    """Run one request in a fresh container on this host and return the answer
    (JSON data). ``deadline`` (monotonic) is when the calling test's own container is
    killed: the call's timeout ends then at the latest."""
    __tracebackhide__ = True  # errors point at the caller, not at us
    from .runner import ConfigProblem, container_config
    from .runtime import DEVNULL, PIPE, IsolateError, Process

    settings = _within_host_support(state, resolve_call_settings(state, item,
                                                                 request["settings"]))
    timeout = settings.timeout
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0.05:
            raise RunIsolatedError("the calling test's own timeout is up")
        if timeout is None or timeout > left:
            timeout = left
    try:
        cfg = container_config(item, settings)
        fresh = request.get("fresh")
        if fresh is None:  # code nobody vouches for must not see the caller's memory
            fresh = settings.hide_home
        process = Process(target=_invoke, args=(request["blob"], request["mode"]),
                          env=dict(settings.env), stdin=DEVNULL, stdout=PIPE, stderr=PIPE,
                          timeout=timeout, max_output=int(request["max_output"]),
                          max_result_size=MAX_ANSWER // 2, fresh=bool(fresh))
    except (ConfigProblem, IsolateError, ValueError, OSError) as e:
        raise RunIsolatedError(f"run_isolated(): {e}") from None
    container = None
    started = time.monotonic()
    try:
        container = state.factory.create(state.next_id(), cfg)
        container.start(process)
        status = container.wait()
    except (IsolateError, OSError) as e:
        raise RunIsolatedError(f"run_isolated() could not start its container: {e}") from None
    finally:
        wall = time.monotonic() - started
        if container is not None:
            container.destroy()
    stats = status.stats or {}
    answer: dict[str, Any] = {
        "exit_code": status.exit_code,
        "signal": status.signal_name,
        "oom_killed": status.oom_killed,
        "timed_out": status.timed_out,
        "timeout": timeout,
        "stdout": (status.stdout or b"").decode("utf-8", "replace"),
        "stderr": (status.stderr or b"").decode("utf-8", "replace"),
        "usage": {"memory_peak": stats.get("memory_peak"), "cpu_time": stats.get("cpu_usage"),
                  "wall_time": wall, "pids_peak": stats.get("pids_peak"),
                  "memory_limit": settings.memory},
        "exception": None if status.exception is None else {
            "type": status.exception.type, "message": status.exception.message,
            "traceback": status.exception.traceback},
        "error": status.result_error,
        "value": None,
    }
    v = status.value
    # Only the form the caller asked for is passed on: a forged {"pickle": ...} for a
    # call that asked for data must never reach an unpickler.
    expected = {"pickle" if request["mode"] == "pickle" else "json", "not_data"}
    if status.has_result and status.exception is None and status.result_error is None:
        if isinstance(v, dict) and len(v) == 1 and set(v) <= expected:
            key = next(iter(v))
            if key == "not_data":
                answer["error"] = f"the return value is not plain data: {v[key]}"
            else:
                answer["value"] = {key: v[key]}
        else:
            answer["error"] = "the container sent a value run_isolated did not make"
    if status.oom_killed and answer["error"] and "before reporting" in answer["error"]:
        answer["error"] = None  # the OOM kill says it
    return answer


# ------------------------------------------------------------------ the calling test's side


_UNSET: Any = object()


class RunIsolated:
    """The ``run_isolated`` fixture's value: call it to run a callable in a fresh
    container. See the README's "run_isolated" section."""

    def __init__(self, transport: Callable[[dict[str, Any]], dict[str, Any]],
                 decide_fresh: Callable[[dict[str, Any]], bool] = lambda overrides: False,
                 ) -> None:
        self._transport = transport
        self._decide_fresh = decide_fresh

    def __call__(self, func: Callable[..., Any], /, *args: Any,
                 memory: Any = _UNSET, pids: Any = _UNSET, cpu: Any = _UNSET,
                 timeout: Any = _UNSET, network: Any = _UNSET, seccomp: Any = _UNSET,
                 readonly: Any = _UNSET, hostname: Any = _UNSET, env: Any = _UNSET,
                 capabilities: Any = _UNSET, user: Any = _UNSET, profile: Any = _UNSET,
                 trusted: bool = False, max_output: int = DEFAULT_MAX_OUTPUT,
                 fresh: bool | None = None, **kwargs: Any) -> IsolatedResult:
        __tracebackhide__ = True  # errors point at the caller, not at us

        if not callable(func):
            raise RunIsolatedError(f"run_isolated() needs a callable first, got "
                                   f"{type(func).__name__}")
        if not isinstance(trusted, bool):
            raise RunIsolatedError(f"run_isolated(trusted={trusted!r}): True or False")
        if fresh is not None and not isinstance(fresh, bool):
            raise RunIsolatedError(f"run_isolated(fresh={fresh!r}): True, False or None "
                                   "(None: fresh under a profile that hides home directories)")
        if isinstance(max_output, bool) or not isinstance(max_output, int) or not (
                0 <= max_output <= 64 * 2**20):
            raise RunIsolatedError(f"run_isolated(max_output={max_output!r}): a byte count "
                                   "from 0 to 64M")
        name = getattr(func, "__qualname__", None) or type(func).__name__
        _check_for_typos(name, kwargs)
        given = dict(memory=memory, pids=pids, cpu=cpu, timeout=timeout, network=network,
                     seccomp=seccomp, readonly=readonly, hostname=hostname, env=env,
                     capabilities=capabilities, user=user, profile=profile)
        overrides = {k: _plain(v) for k, v in given.items() if v is not _UNSET}
        if fresh is None:
            fresh = self._decide_fresh(overrides)
        try:
            blob = _pickle_call((func, args, kwargs), by_value=bool(fresh))
        except Exception as e:
            raise RunIsolatedError(f"run_isolated({name}): {_culprit(func, args, kwargs)} "
                                   f"cannot be shipped into a container: "
                                   f"{type(e).__name__}: {e}. Pass what it needs to build "
                                   "the object instead (a path, a number, a string), or "
                                   "create it inside the callable") from None
        request = {"blob": blob, "mode": "pickle" if trusted else "json",
                   "settings": overrides, "max_output": max_output, "fresh": fresh}
        answer = self._transport(request)
        return _result(name, answer, trusted)


_OWN_KEYWORDS = ("memory", "pids", "cpu", "timeout", "network", "seccomp", "readonly",
                 "hostname", "env", "capabilities", "user", "profile", "trusted",
                 "max_output", "fresh")


def _check_for_typos(name: str, kwargs: Mapping[str, Any]) -> None:
    """A keyword for the callable spelled almost like one of run_isolated's own
    (``memroy="64M"``) is a mistake, not an argument: it would run without the limit."""
    import difflib

    __tracebackhide__ = True
    for key in kwargs:
        close = difflib.get_close_matches(key, _OWN_KEYWORDS, n=1, cutoff=0.75)
        if close:
            raise RunIsolatedError(
                f"run_isolated({name}): {key}= is not one of run_isolated's settings; "
                f"did you mean {close[0]}=? (Keywords that are not settings go to the "
                f"callable: to pass {key}= to it, use functools.partial({name}, "
                f"{key}=...).)")


def _culprit(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """Which part of a call cannot be pickled, in words."""
    import cloudpickle

    parts = [("the callable", func)]
    parts += [(f"argument {i + 1} ({type(a).__name__})", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k}= ({type(v).__name__})", v) for k, v in kwargs.items()]
    for what, obj in parts:
        try:
            cloudpickle.dumps(obj)
        except Exception:
            return what
    return "the call"


_PICKLE_LOCK = threading.Lock()


def _pickle_call(call: tuple[Any, ...], by_value: bool) -> bytes:
    """The call as cloudpickle bytes. For a fresh interpreter (``by_value``), the
    modules that are not installed (test modules, conftest, the project's helpers: any
    file outside the interpreter's prefixes and site-packages) travel by value, so the
    sandbox needs neither to read their files nor to run their top-level code again;
    the standard library and installed packages are imported there by name."""
    import cloudpickle

    if not by_value:
        data: bytes = cloudpickle.dumps(call)
        return data
    installed = tuple({os.path.realpath(p) + os.sep
                       for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    with _PICKLE_LOCK:
        registered = []
        try:
            for name, module in list(sys.modules.items()):
                path = getattr(module, "__file__", None)
                if (not path or name.split(".")[0] in ("pytest_isolate", "__main__")
                        or "-packages" + os.sep in path
                        or os.path.realpath(path).startswith(installed)):
                    continue
                try:
                    cloudpickle.register_pickle_by_value(module)
                except ValueError:
                    continue
                registered.append(module)
            data = cloudpickle.dumps(call)
        finally:
            for module in registered:
                try:
                    cloudpickle.unregister_pickle_by_value(module)
                except ValueError:
                    pass
    return data


def _plain(v: Any) -> Any:
    """Setting values as JSON data (they may travel to the host as a message)."""
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _result(name: str, answer: Mapping[str, Any], trusted: bool) -> IsolatedResult:
    import cloudpickle

    error = answer.get("error")
    value = None
    carried = answer.get("value")
    if isinstance(carried, dict):
        try:
            if trusted and "pickle" in carried:
                value = cloudpickle.loads(base64.b64decode(carried["pickle"]))
            else:
                value = values.decode(carried["json"])
        except Exception as e:
            error = f"the return value could not be rebuilt: {type(e).__name__}: {e}"
    exc = answer.get("exception")
    return IsolatedResult(
        name=name, value=value,
        exception=None if exc is None else RemoteException(
            str(exc["type"]), str(exc["message"]), str(exc["traceback"])),
        exit_code=answer.get("exit_code"), signal=answer.get("signal"),
        oom_killed=bool(answer.get("oom_killed")), timed_out=bool(answer.get("timed_out")),
        timeout=answer.get("timeout"), stdout=str(answer.get("stdout", "")),
        stderr=str(answer.get("stderr", "")), usage=Usage.from_data(answer.get("usage") or {}),
        error=None if error is None else str(error))


def snapshot_from_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "memory_current": stats.get("memory_current"),
        "memory_peak": stats.get("memory_peak"),
        "memory_limit": stats.get("memory_limit"),
        "cpu_time": stats.get("cpu_usage"),
        "pids_current": stats.get("pids_current"),
        "pids_limit": stats.get("pids_limit"),
        "cgroup_version": stats.get("version"),
    }


class IsolateUsage:
    """The ``isolate_usage`` fixture's value, in an isolated test."""

    def __init__(self, ask: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._ask = ask

    def snapshot(self) -> UsageSnapshot:
        """Usage of this test's container now (the test and everything it started)."""
        __tracebackhide__ = True
        answer = self._ask({"op": "usage"})
        return UsageSnapshot(**{f.name: answer.get(f.name)
                                for f in dataclasses.fields(UsageSnapshot)})


# ------------------------------------------------------------------ the link (isolated tests)


class Link:
    """The isolated test's end: requests out as messages, answers in on fd 3."""

    def __init__(self, fd: int) -> None:
        from .runtime.channel import FrameReader

        self.fd = fd
        self.reader = FrameReader(MAX_ANSWER)
        self.lock = threading.Lock()
        self.counter = 0

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        __tracebackhide__ = True  # errors point at the caller, not at us
        import json

        from .runtime import emit

        with self.lock:
            self.counter += 1
            rid = self.counter
            msg = dict(request)
            if "blob" in msg:
                msg["blob"] = base64.b64encode(msg["blob"]).decode("ascii")
            emit({"kind": "request", "id": rid, **msg})
            while True:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    raise RunIsolatedError("the host closed the link to this test")
                frames = self.reader.feed(chunk)
                if self.reader.error:
                    raise RunIsolatedError(f"bad answer from the host: {self.reader.error}")
                if frames:
                    break
        reply = json.loads(frames[0][1])
        if reply.get("id") != rid:
            raise RunIsolatedError("answer for another request from the host")
        if "raise" in reply:
            raise RunIsolatedError(reply["raise"])
        if "skip" in reply:
            import pytest

            pytest.skip(str(reply["skip"]))
        answer: dict[str, Any] = reply["answer"]
        return answer


def serve(state: IsolateState, item: pytest.Item, msg: Mapping[str, Any],
          container: Any, deadline: float | None) -> dict[str, Any]:
    """The host's answer to one request from an isolated test (``{"id", "answer"}``
    or ``{"id", "raise"}``); never raises for what the request holds."""
    import pytest

    rid = msg.get("id")
    try:
        op = msg.get("op", "run")
        if op == "usage":
            if container is None or container._manager() is None:
                raise RunIsolatedError("isolate_usage: this test's container has no cgroups "
                                       "on this host, so there is no usage to report")
            return {"id": rid, "answer": snapshot_from_stats(container.stats())}
        if op != "run":
            raise RunIsolatedError(f"unknown request {str(op)[:40]!r}")
        blob = base64.b64decode(str(msg["blob"]), validate=True)
        mode = msg["mode"] if msg.get("mode") in ("json", "pickle") else "json"
        settings = msg.get("settings")
        if not isinstance(settings, dict):
            raise RunIsolatedError("malformed request: settings")
        mo = msg.get("max_output", DEFAULT_MAX_OUTPUT)
        max_output = mo if isinstance(mo, int) and 0 <= mo <= 64 * 2**20 \
            else DEFAULT_MAX_OUTPUT
        fresh = msg.get("fresh") if msg.get("fresh") in (True, False, None) else None
        answer = execute(state, item, {"blob": blob, "mode": mode, "settings": settings,
                                       "max_output": max_output, "fresh": fresh}, deadline)
        return {"id": rid, "answer": answer}
    except RunIsolatedError as e:
        return {"id": rid, "raise": str(e)}
    except pytest.skip.Exception as e:
        return {"id": rid, "skip": str(e.msg)}
    except Exception as e:
        return {"id": rid, "raise": f"run_isolated failed on the host: {type(e).__name__}: {e}"}
