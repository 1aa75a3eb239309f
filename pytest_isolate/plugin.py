"""The pytest plugin: ``--isolate``, ``@pytest.mark.isolated`` and running items in
containers. Registered as the ``isolate`` entry point of ``pytest11``."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import pytest

from . import child
from .settings import (
    BUILTIN_PROFILES,
    SETTINGS,
    SettingError,
    Settings,
    check_setting,
    resolve,
)
from .support import POLICIES, Support, policy_for, without

STATE = pytest.StashKey["IsolateState"]()
OTHER_TIMEOUT = pytest.StashKey[float]()
SETTINGS_KEY = pytest.StashKey["Settings | SettingError | None"]()
MARKER_LAYER_KEY = pytest.StashKey["tuple[str, dict[str, Any]]"]()
SHM_SIZE = 64 * 2**20  # /dev/shm in a test's container, as Docker's default

_MARKER_HELP = (
    "isolated(enabled=True, **settings): run this test in its own container; "
    f"settings: {', '.join(SETTINGS)}. isolated(False) opts out under --isolate."
)


class IsolateWarning(UserWarning):
    """Something about isolation that did not stop the run."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolate", "run tests in throwaway Linux containers")
    group.addoption("--isolate", action="store_true", default=None,
                    help="run every test in its own container (ini: isolate = true)")
    for name, text in SETTINGS.items():
        if name == "env":
            group.addoption("--isolate-env", action="append", metavar="NAME=VALUE",
                            help=f"{text} (ini: isolate_env)")
        else:
            group.addoption(f"--isolate-{name}", metavar=name.upper(),
                            help=f"{text} (ini: isolate_{name})")
    group.addoption("--isolate-stats", nargs="?", const=10, default=None, type=_stats_count,
                    metavar="N",
                    help="at the end, list the N isolated tests (default 10; 0 for all) "
                         "with the highest peak memory and CPU time")
    group.addoption("--isolate-prepare", type=int, choices=(0, 1, 2), default=None,
                    metavar="N",
                    help="fork and set up the containers of the next N tests (0-2) while "
                         "a test runs, where the next test needs nothing the pytest "
                         "process has not set up yet; faster, but those tests see the "
                         "pytest process as it was before the test that runs (see the "
                         "README). Default 0 (ini: isolate_prepare)")
    group.addoption("--isolate-unsupported", choices=POLICIES, default=None,
                    help="when this host cannot give a test what it asks for (no "
                         "namespaces, no cpu cgroup, no seccomp): error (stop before any "
                         "test), warn (run without it) or skip; default: error for what "
                         "you asked for, warn for a profile's defaults "
                         "(ini: isolate_unsupported)")
    parser.addini("isolate", "run every test in its own container (true/false)",
                  type="string", default="false")
    parser.addini("isolate_unsupported", "error, warn or skip: see --isolate-unsupported",
                  type="string", default=None)
    parser.addini("isolate_prepare", "0, 1 or 2: see --isolate-prepare", type="string",
                  default="0")
    for name, text in SETTINGS.items():
        if name == "env":
            parser.addini("isolate_env", text, type="linelist", default=[])
        else:
            parser.addini(f"isolate_{name}", text, type="string", default=None)


def _stats_count(text: str) -> int:
    import argparse

    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a count: write --isolate-stats=N (N a number, 0 for all), "
            "or --isolate-stats after the test paths")
    return int(text)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)
    if child.in_container():
        return
    try:
        state = IsolateState(config)
    except SettingError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[STATE] = state
    config.pluginmanager.register(child.InContainer(config), child.IN_CONTAINER)
    _sigterm_interrupts(config)
    n = config.getoption("isolate_stats", None)
    if n is not None:
        from .stats import UsageStats

        config.pluginmanager.register(UsageStats(n), "isolate-usage-stats")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE, None)
    if state is not None and not child.in_container():
        state.apply_unsupported_policy(items)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: the workers get this process's probe instead of probing again."""
    state = node.config.stash.get(STATE, None)
    if state is not None:
        node.workerinput["isolate_support"] = state.support.to_json()


def _unsupported_policy(config: pytest.Config) -> str | None:
    cli = config.getoption("isolate_unsupported", None)
    value = cli or config.getini("isolate_unsupported")
    if value in (None, ""):
        return None
    if value not in POLICIES:
        if cli:
            raise SettingError("--isolate-unsupported", value, "command line",
                               "error, warn or skip")
        raise SettingError("isolate_unsupported", value, "ini file", "error, warn or skip")
    return str(value)


def _prepare_depth(config: pytest.Config) -> int:
    cli = config.getoption("isolate_prepare", None)
    if cli is not None:
        return int(cli)
    value = str(config.getini("isolate_prepare")).strip()
    if value not in ("0", "1", "2"):
        raise SettingError("isolate_prepare", value, "ini file", "0, 1 or 2")
    return int(value)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")


def _isolate_ini(config: pytest.Config) -> bool:
    """The ini key ``isolate``: a truth value, or a usage error naming the key."""
    value = str(config.getini("isolate")).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise pytest.UsageError(f"ini file: isolate={config.getini('isolate')!r} is invalid: "
                            "write isolate = true (or false)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    import warnings

    child.BASE_FILTERS = list(warnings.filters)  # for containers prepared ahead


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The last tests' containers are finished off before anything looks at the host."""
    state = session.config.stash.get(STATE, None)
    if state is not None:
        state.discard_prepared()
        state.reap_retired()


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.close()
    previous = config.stash.get(SIGTERM_KEY, None)
    if previous is not None:
        import signal

        signal.signal(signal.SIGTERM, previous)


SIGTERM_KEY = pytest.StashKey[Any]()


def _sigterm_interrupts(config: pytest.Config) -> None:
    """``SIGTERM`` (a CI job cancelled, ``timeout``) ends the run as Ctrl-C does:
    containers destroyed, summary printed, exit status 2. Only where nothing else
    handles it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends it at once
        raise KeyboardInterrupt("SIGTERM")

    config.stash[SIGTERM_KEY] = signal.signal(signal.SIGTERM, interrupt)


@pytest.hookimpl(trylast=True)
def pytest_isolate_config(item: pytest.Item, config: Any) -> Any:
    return config


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout would arm its timer in this process around a whole isolated
    test; the container's deadline takes it over instead (the smaller one wins). With
    ``timeout_func_only`` its timer is armed inside the container, as usual."""
    if child.in_container():
        return None
    state = item.config.stash.get(STATE, None)
    if state is None or not isinstance(state.settings_for(item), Settings):
        return None
    if settings.timeout:
        item.stash[OTHER_TIMEOUT] = float(settings.timeout)
    return True


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    if child.in_container() or OTHER_TIMEOUT not in item.stash:
        return None
    return True


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE, None)
    return None if state is None else state.header()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if child.in_container():
        return None
    state = item.config.stash.get(STATE, None)
    if state is None:
        return None
    settings = state.settings_for(item)
    if settings is None:
        # a test that runs here finds the finished containers of the tests before it
        # gone (their inits reaped, cgroups and state removed), not pending
        state.reap_retired()
        return None
    from .runner import run_isolated

    other = item.stash.get(OTHER_TIMEOUT, None)
    if isinstance(settings, Settings) and other is not None and (
            settings.timeout is None or other < settings.timeout):
        settings = dataclasses.replace(settings, timeout=other)
    run_isolated(item, nextitem, settings, state)
    return True


@pytest.fixture
def run_isolated(request: pytest.FixtureRequest) -> Any:
    """``run_isolated(func, *args, memory=..., pids=..., timeout=..., trusted=False,
    **kwargs)`` runs ``func(*args, **kwargs)`` in a fresh container and returns an
    :class:`~pytest_isolate.IsolatedResult`. Works in isolated tests and others."""
    from .sandbox import RunIsolated, RunIsolatedError, execute, resolve_call_settings

    state = request.config.stash.get(STATE, None)  # in a container: the host's, as forked
    if state is None:
        raise RunIsolatedError("run_isolated: the pytest-isolate plugin is not configured "
                               "in this process")
    item = request.node

    def decide_fresh(overrides: dict[str, Any]) -> bool:
        """fresh=None: fresh when the call's settings hide home directories."""
        try:
            return resolve_call_settings(state, item, overrides).hide_home
        except RunIsolatedError:
            return False  # the host reports what is wrong with the settings

    if child.in_container():
        link = child.link()
        if link is None:
            raise RunIsolatedError("run_isolated: this test's container has no link to the "
                                   "host")

        def via_host(req: dict[str, Any]) -> dict[str, Any]:
            __tracebackhide__ = True
            answer: dict[str, Any] = link.ask({"op": "run", **req})
            return answer

        return RunIsolated(via_host, decide_fresh)
    def on_host(req: dict[str, Any]) -> dict[str, Any]:
        __tracebackhide__ = True
        if child.in_container():  # a fixture value kept from a test that ran here
            raise RunIsolatedError(
                f"run_isolated: this fixture value belongs to {item.nodeid}, which ran in "
                "the pytest process, and cannot be used inside an isolated test: request "
                "the run_isolated fixture in the isolated test itself")
        return execute(state, item, req)

    return RunIsolated(on_host, decide_fresh)


@pytest.fixture
def isolate_usage(request: pytest.FixtureRequest) -> Any:
    """``isolate_usage.snapshot()``: memory, CPU and pids of this isolated test's
    container now, with its limits."""
    from .sandbox import IsolateUsage

    link = child.link() if child.in_container() else None
    if link is None:
        pytest.fail("isolate_usage needs an isolated test: run with --isolate, or mark the "
                    "test @pytest.mark.isolated (it reads the test's own container)",
                    pytrace=False)
    return IsolateUsage(link.ask)


class IsolateState:
    """Session-wide state of the plugin in the host pytest process."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.isolate_all = bool(config.getoption("isolate")) or _isolate_ini(config)
        self.profiles = _load_profiles(config)
        self.layers = self._option_layers()
        # check run-wide values now: a bad one is a usage error before anything runs
        self.base = resolve(self.layers, self.profiles)
        self._factory: Any = None
        self._counter = 0
        self._warned: set[str] = set()
        self.retired: list[Any] = []
        # the next tests' containers, set up while the current test runs (runner.py),
        # when asked for (--isolate-prepare); one ahead at most under xdist
        self.prepared: list[Any] = []
        self.prepare_depth = _prepare_depth(config)
        if os.environ.get("PYTEST_XDIST_WORKER"):
            self.prepare_depth = min(self.prepare_depth, 1)
        self.item_index: dict[int, int] | None = None
        self._support: Support | None = None
        self.unsupported = _unsupported_policy(config)
        _remove_dead_workdirs()
        self.workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-",
                                        dir=fast_tmpdir())

    def _option_layers(self) -> list[tuple[str, Mapping[str, Any]]]:
        ini: dict[str, Any] = {}
        cli: dict[str, Any] = {}
        for name in SETTINGS:
            value = self.config.getini(f"isolate_{name}")
            if value not in (None, [], ""):
                ini[name] = value
            opt = self.config.getoption(f"isolate_{name}")
            if opt is not None:
                cli[name] = opt
        return [("ini file", ini), ("command line", cli)]

    @property
    def factory(self) -> Any:
        if self._factory is None:
            from .runtime import Factory

            # this run's containers' state, in memory (see fast_tmpdir); an earlier
            # run's that was killed is collected by _remove_dead_workdirs
            self._factory = Factory(os.path.join(self.workdir, "containers"))
        return self._factory

    @property
    def support(self) -> Support:
        """What this host gives isolated tests: probed once per session (an xdist
        worker gets its controller's probe)."""
        if self._support is None:
            given = getattr(self.config, "workerinput", {}).get("isolate_support")
            if given is not None:
                self._support = Support.from_json(given)
            else:
                from .runtime.probe import probe

                self._support = Support.from_probe(probe())
        return self._support

    def apply_unsupported_policy(self, items: list[pytest.Item]) -> None:
        """Decide, before any test runs, what becomes of isolated tests that ask for
        what this host cannot give (see ``support``): one message per capability."""
        if not any(isinstance(self.settings_for(i), Settings) for i in items):
            return  # nothing isolated: no need to probe the host
        errors: dict[str, tuple[Any, int]] = {}
        for item in items:
            settings = self.settings_for(item)
            if not isinstance(settings, Settings):
                continue
            gaps = self.support.gaps(settings)
            for gap in gaps:
                policy = policy_for(gap, self.unsupported)
                if policy == "error":
                    errors[gap.key] = (gap, errors.get(gap.key, (gap, 0))[1] + 1)
                elif policy == "skip":
                    item.add_marker(pytest.mark.skip(
                        reason=f"isolate: {gap.what}, which this host cannot give "
                               f"({gap.cause})"))
                    item.stash[SETTINGS_KEY] = None  # skipped by pytest, no container
                    break
                else:
                    self.warn_once(f"unsupported:{gap.key}", gap.message() +
                                   ". Tests run without it (--isolate-unsupported=warn)")
                    if gap.key == "namespaces":
                        item.stash[SETTINGS_KEY] = None  # runs without isolation
                        break
                    settings = without(settings, gap)
                    item.stash[SETTINGS_KEY] = settings
        if errors:
            lines = ["pytest-isolate: this host cannot give isolated tests what they ask for:"]
            for gap, count in errors.values():
                lines.append(f"- {gap.message()} ({count} test{'s' if count > 1 else ''})")
            lines.append("Or run them anyway: --isolate-unsupported=warn (without it) or "
                         "=skip. 'pytest-isolate doctor' shows what this host supports.")
            raise pytest.UsageError("\n".join(lines))

    def discard_prepared(self) -> None:
        """A container prepared for a test that did not come (the run stopped)."""
        from .runner import discard_prepared

        discard_prepared(self)

    def retire(self, container: Any) -> None:
        """A container whose payload has ended, to be destroyed a little later (see
        ``Container.wait(reap=False)``): its processes are already killed."""
        self.retired.append(container)

    def reap_retired(self) -> None:
        """Destroy the retired containers (their init reaped, cgroups and state
        removed). Called while the next test runs, and at the end of the session."""
        if not self.retired:
            return
        from .runtime import trace

        while self.retired:
            container = self.retired[-1]  # kept until done: Ctrl-C here retries it later
            with trace.span("plugin:destroy"):  # deferred, so mostly bookkeeping
                try:
                    container.destroy()
                except Exception as e:  # reported; never the next test's failure
                    self.warn_once(f"destroy:{type(e).__name__}",
                                   f"removing a finished test's container failed: {e}")
            self.retired.pop()

    def next_id(self) -> str:
        self._counter += 1
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        return f"pytest-{os.getpid()}-{worker}-{self._counter}"

    def settings_for(self, item: pytest.Item) -> Settings | SettingError | None:
        """None when the item is not isolated; a SettingError for a bad marker."""
        if SETTINGS_KEY in item.stash:
            return item.stash[SETTINGS_KEY]
        result: Settings | SettingError | None
        marks = list(item.iter_markers("isolated"))
        enabled = self.isolate_all
        kwargs: dict[str, Any] = {}
        origin = f"@pytest.mark.isolated on {item.nodeid}"
        for mark in marks:
            if len(mark.args) > 1 or (mark.args and not isinstance(mark.args[0], bool)):
                err = SettingError("isolated", mark.args, origin,
                                   "the only positional argument is True or False")
                item.stash[SETTINGS_KEY] = err
                return err
            if mark.args and mark.args[0] is False and mark.kwargs:
                err = SettingError("isolated", mark.kwargs, origin,
                                   "isolated(False) opts out: it takes no settings")
                item.stash[SETTINGS_KEY] = err
                return err
        for mark in reversed(marks):  # farthest first, the closest wins
            if mark.args:
                enabled = bool(mark.args[0])
            elif mark.kwargs.get("enabled") is not None:
                enabled = bool(mark.kwargs["enabled"])
            else:
                enabled = True
            kwargs.update({k: v for k, v in mark.kwargs.items() if k != "enabled"})
        if not enabled:
            result = None
        elif not kwargs:  # the run's settings: one object shared by every such test
            result = self.base
        else:
            try:
                for name, value in kwargs.items():
                    if name not in SETTINGS:
                        check_setting(name, value, origin)  # raises: unknown setting
                result = resolve([*self.layers, (origin, kwargs)], self.profiles)
            except SettingError as e:
                result = e
            item.stash[MARKER_LAYER_KEY] = (origin, kwargs)
        item.stash[SETTINGS_KEY] = result
        return result

    def layers_for(self, item: pytest.Item) -> list[tuple[str, Mapping[str, Any]]]:
        """The raw settings layers of an item: the run's, then (for an isolated test)
        its marker's."""
        self.settings_for(item)
        marker = item.stash.get(MARKER_LAYER_KEY, None)
        return [*self.layers, marker] if marker is not None else list(self.layers)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(IsolateWarning(message), stacklevel=2)

    def header(self) -> list[str]:
        s = self.base
        scope = "every test (--isolate)" if self.isolate_all else "tests marked isolated"
        lines = [f"isolate: {scope}; profile {s.profile}; network {s.network}; "
                 f"seccomp {s.seccomp}; readonly root {'yes' if s.readonly else 'no'}"]
        try:
            from .runtime.capabilities import backend_name

            caps = "Docker default" if s.capabilities is None else (
                ",".join(s.capabilities) or "none")
            lines.append(f"isolate: namespaces pid,mount,uts,ipc,net; capabilities {caps} "
                         f"(via {backend_name()})")
        except Exception as e:  # the header must never break a run
            lines.append(f"isolate: capabilities unavailable ({e})")
        try:
            from .runtime.cgroups import MANAGED_CONTROLLERS, detect

            layout = detect()
            ctrls = [f"{c}(v{layout.version(c)})" for c in MANAGED_CONTROLLERS
                     if layout.can_use(c)]
            lines.append(f"isolate: cgroups {layout.mode}: "
                         f"{', '.join(ctrls) or 'no usable controller'}")
        except Exception as e:
            lines.append(f"isolate: cgroups unavailable ({e})")
        if self.isolate_all or os.geteuid() != 0:
            try:
                lines += self.support.header()
            except Exception as e:  # the header must never break a run
                lines.append(f"isolate: the host probe failed ({e})")
        return lines

    def close(self) -> None:
        import shutil

        self.discard_prepared()
        self.reap_retired()
        shutil.rmtree(self.workdir, ignore_errors=True)


WORKDIR_PREFIX = "pytest-isolate-"


def fast_tmpdir() -> str:
    """Where a run keeps its work directory and its containers' state files, written
    and removed several times per test: a tmpfs (``/run`` where it is one, as runc's
    state is, else ``/dev/shm``; ``$XDG_RUNTIME_DIR`` first for an ordinary user),
    since on a disk file system each rename and unlink costs a journal commit (0.2-0.6
    ms each, measured on ext4). The temporary directory where there is no tmpfs."""
    try:
        with open("/proc/self/mounts") as f:
            tmpfs = {line.split()[1] for line in f if line.split()[2:3] == ["tmpfs"]}
    except OSError:
        tmpfs = set()
    candidates = ["/run", "/dev/shm"] if os.geteuid() == 0 else \
        [os.environ.get("XDG_RUNTIME_DIR", ""), "/dev/shm"]
    for d in candidates:
        if d in tmpfs and os.access(d, os.W_OK | os.X_OK):
            return d
    return tempfile.gettempdir()


def _remove_dead_workdirs() -> None:
    """Work directories of earlier runs whose pytest process was killed (``SIGKILL``
    gives no chance to clean up): what their containers left (cgroups, processes) is
    destroyed, then the directory removed, by the next run."""
    import re
    import shutil

    from .runtime import Factory

    pattern = re.compile(re.escape(WORKDIR_PREFIX) + r"(\d+)-")
    for tmp in dict.fromkeys((fast_tmpdir(), tempfile.gettempdir())):
        try:
            names = os.listdir(tmp)
        except OSError:
            continue
        for name in names:
            m = pattern.match(name)
            if m is None or os.path.exists(f"/proc/{m.group(1)}"):
                continue
            path = os.path.join(tmp, name)
            try:
                st = os.lstat(path)
                if st.st_uid != os.geteuid() or not os.path.isdir(path) or \
                        os.path.islink(path):
                    continue
                containers = os.path.join(path, "containers")
                if os.path.isdir(containers):
                    Factory(containers).gc()
            except Exception:  # whatever is left of it, the directory goes
                pass
            shutil.rmtree(path, ignore_errors=True)


def _load_profiles(config: pytest.Config) -> dict[str, dict[str, Any]]:
    """``[tool.pytest-isolate.profiles.NAME]`` tables of the rootdir's pyproject.toml."""
    path = os.path.join(str(config.rootpath), "pyproject.toml")
    if not os.path.isfile(path):
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, ValueError) as e:
        raise pytest.UsageError(f"{path}: cannot read [tool.pytest-isolate]: {e}") from None
    section = data.get("tool", {}).get("pytest-isolate", {})
    unknown = set(section) - {"profiles"}
    if unknown:
        raise pytest.UsageError(f"{path}: [tool.pytest-isolate] has unknown keys "
                                f"{', '.join(sorted(unknown))}; profiles go in "
                                "[tool.pytest-isolate.profiles.NAME]")
    profiles = section.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise pytest.UsageError(f"{path}: [tool.pytest-isolate.profiles.NAME] must be tables")
    out: dict[str, dict[str, Any]] = {}
    for name, values in profiles.items():
        values = dict(values)
        if "profile" in values:
            raise pytest.UsageError(f"{path}: profile {name!r}: use extends = \"...\" to "
                                    "build on another profile, not profile = ...")
        if name in BUILTIN_PROFILES:
            # a built-in's name adjusts the built-in: it never drops its protections
            values = {**BUILTIN_PROFILES[name], **values}
            values.pop("extends", None)
        out[str(name)] = values
    if "untrusted" in out:
        from .settings import looser_than

        builtin = resolve([("", {"profile": "untrusted"})], {})
        try:
            adjusted = resolve([("", {"profile": "untrusted"})], out)
        except SettingError as e:
            raise pytest.UsageError(f"{path}: {e}") from None
        dropped = looser_than(builtin, adjusted, limits_may_grow=True)
        if dropped:
            raise pytest.UsageError(
                f"{path}: [tool.pytest-isolate.profiles.untrusted] adjusts the built-in "
                f"profile but may not drop its protections: {'; '.join(dropped)}. Change "
                "its limits only, or define a profile of your own name with "
                "extends = \"untrusted\" (what that loosens is then yours to say).")
    return out


def _address_space() -> int:
    """Bytes this process maps (VmSize)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def settings_to_config(settings: Settings, mounts: list[Any],
                       support: Support | None = None) -> Any:
    """The runtime Config for one test's settings; ``mounts`` come after the default
    ones (binds of the run's temporary directory and the like). ``support``: what
    this host gives (rootless: a user namespace; limits without a cgroup: rlimits)."""
    from .runtime import DEFAULT_MOUNTS, Config, IDMap, Mount, Namespaces, Resources, Rlimit
    from .runtime.config import parse_user

    # /tmp and /dev/shm are tmpfs whose pages count against the memory limit; their
    # size makes filling them an ENOSPC rather than an OOM kill or a full host.
    shm = SHM_SIZE if settings.memory is None else min(SHM_SIZE, settings.memory)
    sized = {"/tmp": settings.memory, "/dev/shm": shm}
    defaults = tuple(Mount(m.destination, "tmpfs", mode=m.mode, size=sized[m.destination])
                     if m.type == "tmpfs" and m.destination in sized else m
                     for m in DEFAULT_MOUNTS)
    if settings.network == "none":
        # a sysfs of its own, read-only, as runc mounts one: the container's network
        # devices (lo) instead of the host's, and no view of the host's cgroup tree
        defaults += (Mount("/sys", "sysfs", readonly=True),)
    env = None
    if settings.env_allow is not None:
        env = {k: os.environ[k] for k in settings.env_allow if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["HOME"] = "/tmp"
    memory, pids = settings.memory, settings.pids
    rlimits: list[Any] = []
    rootless: dict[str, Any] = {}
    if support is not None:
        if memory is not None and support.enforced_by("memory") == "rlimit":
            # the test is a fork of this process: it may map what this one maps now,
            # plus the limit
            rlimits.append(Rlimit("AS", _address_space() + memory))
            memory = None
        if pids is not None and support.enforced_by("pids") == "rlimit":
            rlimits.append(Rlimit("NPROC", pids))  # counted per user namespace
            pids = None
        if support.rootless:
            # the invoking user is the one id of the user namespace: root inside, or
            # the test's own user
            uid, gid = parse_user(settings.user) if settings.user else (0, 0)
            gid = uid if gid is None else gid
            rootless = dict(namespaces=Namespaces(user=True),
                            uid_mappings=(IDMap(uid, support.uid),),
                            gid_mappings=(IDMap(gid, support.gid),))
    return Config(
        hostname=settings.hostname,
        readonly=settings.readonly,
        network=settings.network,  # type: ignore[arg-type]
        env=env,
        user=settings.user,
        capabilities=settings.capabilities,
        resources=Resources(memory=memory, pids=pids, cpu=settings.cpu),
        rlimits=tuple(rlimits),
        mounts=(*defaults, *mounts),
        seccomp=settings.seccomp,
        **rootless,
        # one parent per pytest process (xdist worker): its creator is the one to remove it
        cgroup_parent=f"pytest-isolate-{os.getpid()}",
    )

