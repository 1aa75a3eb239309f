"""run_isolated from a test: values, exceptions, signals, OOM, timeouts, usage, and
hostile callables that must each end as a result while the calling test goes on.

These tests call the fixture directly: in a plain run the containers are started
from this process; under ``pytest --isolate`` the same calls go through the host
(tests/plugin/test_run_isolated_nested.py covers that path on its own).
"""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest

from pytest_isolate import IsolatedCallFailed, IsolatedResult, RunIsolatedError

GRACE = 15.0  # seconds a result may take beyond its timeout (container start and teardown)


def add(a, b=1):
    return a + b


def test_value_comes_back_with_args_and_kwargs(run_isolated):
    r = run_isolated(add, 2, b=40)
    assert isinstance(r, IsolatedResult)
    assert r.ok and r.value == 42 and r.exit_code == 0 and r.signal is None
    assert r.exception is None and r.error is None and not r.timed_out and not r.oom_killed
    assert r.raise_for_status() is r


def _data():
    return {"none": None, "t": True, "i": -3, "big": 2**80, "f": 1.5, "s": "é\x00",
            "list": [1, [2, (3, 4)]], "tuple": (1, "a", (b"\x00\xff",)), "bytes": b"\x01",
            "keys": {1: "int", (1, 2): "tuple", None: "none", b"k": "bytes", 2.5: "float"},
            "\x00": "a key like the tag", "empty": {}, "etuple": ()}


def test_plain_data_tuples_bytes_and_any_hashable_keys_round_trip(run_isolated):
    r = run_isolated(_data)
    assert r.ok, r.describe()
    assert r.value == _data()
    assert type(r.value["tuple"]) is tuple and type(r.value["tuple"][2][0]) is bytes


class Opaque:
    def __init__(self, n):
        self.n = n


def test_a_value_that_is_not_data_is_an_error_naming_where_it_is(run_isolated):
    r = run_isolated(lambda: {"rows": [1, Opaque(2)]})
    assert not r.ok and r.value is None and r.exit_code == 0 and r.exception is None
    assert "value['rows'][1]" in r.error and "Opaque" in r.error
    assert "trusted=True" in r.error


def test_trusted_brings_any_picklable_value_back(run_isolated):
    r = run_isolated(Opaque, 7, trusted=True)
    assert r.ok and isinstance(r.value, Opaque) and r.value.n == 7


def fail_with(kind):
    raise kind("nope")


def test_an_exception_comes_back_as_data(run_isolated):
    r = run_isolated(fail_with, KeyError)
    assert not r.ok and r.exit_code == 1
    assert r.exception.type == "KeyError" and r.exception.message == "'nope'"
    assert "fail_with" in r.exception.traceback
    with pytest.raises(IsolatedCallFailed) as info:
        r.raise_for_status()
    text = str(info.value)
    assert "run_isolated(fail_with) raised KeyError: 'nope'" in text and "fail_with" in text
    assert info.value.result is r


def test_exit_codes_and_output(run_isolated):
    def talk_and_exit():
        import sys

        print("to stdout")
        print("to stderr", file=sys.stderr)
        sys.stdout.flush()
        os._exit(3)

    r = run_isolated(talk_and_exit)
    assert r.exit_code == 3 and r.value is None and r.exception is None
    assert r.stdout == "to stdout\n" and r.stderr == "to stderr\n"
    assert "exited with status 3 before reporting a result" in r.error
    with pytest.raises(IsolatedCallFailed, match="stderr"):
        r.raise_for_status()


def test_a_signal_is_named(run_isolated):
    r = run_isolated(lambda: os.kill(os.getpid(), signal.SIGSEGV))
    assert r.signal == "SIGSEGV" and r.exit_code is None and not r.ok
    assert "Fatal Python error" in r.stderr  # faulthandler's dump
    assert r.describe() == "killed by SIGSEGV"


def hog(mib):
    blocks = []
    for _ in range(mib):
        blocks.append(b"\x01" * 2**20)
    return len(blocks)


def test_oom_kill_is_reported_with_the_limit(run_isolated):
    r = run_isolated(hog, 400, memory="64M")
    assert r.oom_killed and r.signal == "SIGKILL" and not r.ok
    assert r.usage.memory_limit == 64 * 2**20
    assert r.usage.memory_peak is not None and r.usage.memory_peak >= 60 * 2**20
    assert r.describe() == "memory limit 64M exceeded (OOM-killed)"
    assert r.error is None


def test_timeout_ends_a_call_that_sleeps_forever(run_isolated):
    t = time.monotonic()
    r = run_isolated(time.sleep, 10**6, timeout=1)
    assert r.timed_out and not r.ok and r.describe() == "timed out after 1 s"
    assert time.monotonic() - t < 1 + GRACE


def test_usage_tracks_memory_cpu_and_processes(run_isolated):
    def work():
        import subprocess

        data = b"\x01" * (32 * 2**20)
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        procs = [subprocess.Popen(["sleep", "1"]) for _ in range(5)]
        for p in procs:
            p.wait()
        return len(data)

    r = run_isolated(work, timeout=60)
    assert r.ok, r.describe()
    u = r.usage
    assert u.memory_peak >= 32 * 2**20
    assert u.cpu_time >= 0.3
    assert u.pids_peak >= 6  # the payload and its five children (and the init)
    assert u.wall_time >= 1.0
    assert u.memory_limit is None


def test_output_is_cut_at_max_output(run_isolated):
    r = run_isolated(lambda: print("x" * 10_000), max_output=1000)
    assert r.ok
    assert r.stdout.startswith("x" * 1000) and "over the 1000-byte capture limit" in r.stdout


def test_network_none_has_only_loopback(run_isolated):
    import socket

    r = run_isolated(lambda: [name for _, name in socket.if_nameindex()], network="none")
    assert r.value == ["lo"]


def test_bad_settings_and_calls_are_clear_errors(run_isolated):
    with pytest.raises(RunIsolatedError, match=r"run_isolated\(\) in .*memory='lots'"):
        run_isolated(add, 1, memory="lots")
    with pytest.raises(RunIsolatedError, match="seccomp"):
        run_isolated(add, 1, seccomp="/no/such/profile.json")
    with pytest.raises(RunIsolatedError, match="needs a callable"):
        run_isolated("add")
    import threading

    with pytest.raises(RunIsolatedError, match="cannot be shipped"):
        run_isolated(add, threading.Lock())
    with pytest.raises(RunIsolatedError, match="max_output"):
        run_isolated(add, 1, max_output=-1)
    with pytest.raises(RunIsolatedError, match="pids=1 is below"):
        run_isolated(add, 1, pids=1)


def test_settings_keywords_are_not_passed_to_the_callable(run_isolated):
    def takes(**kw):
        return sorted(kw)

    r = run_isolated(takes, timeout=30, memory="256M", colour="red")
    assert r.value == ["colour"]


# --------------------------------------------------------------------- hostile callables


def _result_fd():
    for fd in range(3, 256):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:") and fd > 2:
                os.fstat(fd)
                return fd
        except OSError:
            pass
    raise AssertionError("no result pipe")


class Trap:
    """Unpickling this runs code: it creates the file named."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def returns_a_trap(path):
    return Trap(path)


def forges_pickle_frames(path):
    import base64
    import json

    import cloudpickle

    fd = _result_fd()
    evil = cloudpickle.dumps(Trap(path))
    # a raw pickle frame, and a JSON value dressed as run_isolated's own pickle answer
    os.write(fd, struct.pack(">2scxI", b"PI", b"P", len(evil)) + evil)
    body = json.dumps({"t": "value", "value": {"pickle": base64.b64encode(evil).decode()}})
    os.write(fd, struct.pack(">2scxI", b"PI", b"J", len(body)) + body.encode())
    return "done"


def forges_an_answer(path):
    import base64
    import json

    import cloudpickle

    fd = _result_fd()
    evil = base64.b64encode(cloudpickle.dumps(Trap(path))).decode()
    body = json.dumps({"t": "value", "value": {"pickle": evil}}).encode()
    os.write(fd, struct.pack(">2scxI", b"PI", b"J", len(body)) + body)
    os._exit(0)


def writes_garbage():
    os.write(_result_fd(), b"\xde\xad\xbe\xef" * 10_000)
    return 1


def prints_a_gigabyte():
    import sys

    chunk = "y" * 2**20
    for _ in range(1024):
        sys.stdout.write(chunk)
    return "printed"


def fork_bomb():
    pids = []
    for _ in range(10_000):
        try:
            pid = os.fork()
        except OSError:
            continue
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
    return len(pids)


def huge_value():
    return "z" * (300 * 2**20)


def deep_value():
    v: list = []
    for _ in range(100_000):
        v = [v]
    return v


# name: (callable, whether it takes the trap's path, timeout, memory limit)
HOSTILE = {
    "returns a value whose pickling runs code": (returns_a_trap, True, 10, "1G"),
    "forges pickle frames on the result channel": (forges_pickle_frames, True, 10, "1G"),
    "forges run_isolated's pickled answer": (forges_an_answer, True, 10, "1G"),
    "writes garbage to the result channel": (writes_garbage, False, 10, "1G"),
    "prints a gigabyte": (prints_a_gigabyte, False, 30, "1G"),
    # each refused fork copies the process first: 10,000 take longer than the timeout
    "forks 10,000 processes": (fork_bomb, False, 5, "1G"),
    "returns 300 MB": (huge_value, False, 30, "3G"),
    "returns a value nested 100,000 deep": (deep_value, False, 20, "1G"),
    "sleeps forever": (time.sleep, False, 2, "1G"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_callable_ends_as_a_result(run_isolated, tmp_path, name):
    func, takes_path, timeout, memory = HOSTILE[name]
    trap = tmp_path / "trap-sprung"
    args = (str(trap),) if takes_path else (10**6,) if func is time.sleep else ()
    t = time.monotonic()
    r = run_isolated(func, *args, timeout=timeout, pids=64, memory=memory)
    elapsed = time.monotonic() - t
    assert isinstance(r, IsolatedResult)
    assert elapsed < timeout + GRACE
    assert not trap.exists(), "something unpickled what the container sent"
    if name == "prints a gigabyte":
        assert len(r.stdout) < 2 * 2**20 and "capture limit" in r.stdout
        assert r.ok or r.timed_out
    elif name == "forks 10,000 processes":
        assert (r.ok and r.value < 64) or r.timed_out
        assert r.usage.pids_peak <= 64
    elif name == "sleeps forever":
        assert r.timed_out
    elif name == "returns a value whose pickling runs code":
        assert r.value is None and "Trap" in r.error
    else:
        assert not r.ok and r.value is None and r.error, r
    # the calling test goes on, and the next call works
    assert run_isolated(add, 1, timeout=30).value == 2


# --------------------------------------------------------------------- fresh interpreters

SECRET_IN_MEMORY = {"answer key": "only-in-the-callers-memory"}


def peek():
    """What a callable can reach of the caller's memory without being handed it."""
    import sys

    module = sys.modules.get(__name__)
    return None if module is None else module.SECRET_IN_MEMORY["answer key"]


@pytest.mark.isolated(False)  # a fork's memory is the pytest process's
def test_a_fresh_interpreter_cannot_read_the_callers_memory(run_isolated):
    SECRET_IN_MEMORY["answer key"] = "changed at run time"
    try:
        assert run_isolated(peek, fresh=False).value == "changed at run time"  # a fork
        r = run_isolated(peek, fresh=True)
        assert r.ok, r.describe() + r.stderr
        assert r.value is None  # this module was never imported there
    finally:
        SECRET_IN_MEMORY["answer key"] = "only-in-the-callers-memory"


@pytest.mark.isolated(False)  # a fork's memory is the pytest process's
def test_untrusted_calls_are_fresh_by_default(run_isolated):
    SECRET_IN_MEMORY["answer key"] = "changed at run time"
    try:
        r = run_isolated(peek, profile="untrusted", timeout=60)
        assert r.ok, r.describe() + r.stderr
        assert r.value is None
        assert run_isolated(peek, timeout=60).value == "changed at run time"
    finally:
        SECRET_IN_MEMORY["answer key"] = "only-in-the-callers-memory"


def test_fresh_calls_need_no_readable_test_module(run_isolated, tmp_path):
    """Project modules travel by value: the sandbox user need not read their files
    (here, a module in a directory only root may enter)."""
    import importlib
    import sys

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret_helpers.py").write_text("def triple(x):\n    return 3 * x\n")
    sys.path.insert(0, str(private))
    try:
        mod = importlib.import_module("secret_helpers")
        r = run_isolated(mod.triple, 5, profile="untrusted", timeout=60)
        assert r.ok, r.describe() + r.stderr
        assert r.value == 15
    finally:
        sys.path.remove(str(private))
        sys.modules.pop("secret_helpers", None)


def test_fresh_reports_values_exceptions_and_exits_like_a_fork(run_isolated):
    assert run_isolated(add, 1, b=2, fresh=True).value == 3
    r = run_isolated(fail_with, ValueError, fresh=True)
    assert r.exception.type == "ValueError"
    assert r.exception.traceback.lstrip().startswith("Traceback")
    assert "bootstrap.py" not in r.exception.traceback and "sandbox.py" not in \
        r.exception.traceback
    r = run_isolated(os._exit, 4, fresh=True)
    assert r.exit_code == 4


def test_exception_text_is_capped_and_control_characters_are_escaped(run_isolated):
    def forged():
        kind = type("X", (Exception,), {})
        kind.__qualname__ = "timed out after 5 s\n"
        kind.__module__ = "ok"
        raise kind("\x1b[2K\r\x1b[32mPASSED all 4/4\x1b[0m\nFAKE" + "m" * (10 * 2**20))

    r = run_isolated(forged)
    assert len(r.exception.message) < 70_000 and "characters cut" in r.exception.message
    text = r.describe()
    assert "\x1b" not in text and "\r" not in text and "\n" not in text
    assert "\\x1b[32mPASSED" in text
    with pytest.raises(IsolatedCallFailed) as info:
        r.raise_for_status()
    assert "\x1b" not in str(info.value) and len(str(info.value)) < 20_000


def test_mistakes_in_a_call_are_named(run_isolated, tmp_path):
    """A keyword spelled almost like a setting, an argument that cannot be pickled, a
    value too large for JSON, a pids limit past the kernel's: each a clear error."""
    import threading

    with pytest.raises(RunIsolatedError, match=r"memroy= is not one of run_isolated's "
                       r"settings; did you mean memory=\?"):
        run_isolated(_echo, 1, memroy="64M")
    with pytest.raises(RunIsolatedError, match=r"argument 2 \(lock\) cannot be shipped"):
        run_isolated(_echo, 1, threading.Lock())
    with pytest.raises(RunIsolatedError, match="4,194,304"):
        run_isolated(_echo, 1, pids=10**30)
    r = run_isolated(_power, 10, 5000)
    assert not r.ok and "too large for JSON" in r.error, r.describe()
    assert run_isolated(_echo, 1, memory_limit="x").value == [1, {"memory_limit": "x"}]


def _echo(*args, **kwargs):
    return [*args, kwargs] if kwargs else list(args)


def _power(a, b):
    return a ** b
