"""Processes in a container: values, exceptions, signals, output, timeouts, exec."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pytest_isolate.runtime import (
    PIPE,
    Config,
    ConfigError,
    ContainerError,
    Process,
    ProcessError,
    Rlimit,
    SetupError,
    WaitTimeout,
)


class ApiError(Exception):
    def __init__(self, msg, status):  # unpicklable on purpose: __init__ takes 2 args
        super().__init__(msg)
        self.status = status


def _raise_api_error():
    raise ApiError("upstream failed", 503)


def test_callable_value_comes_back_as_data(run):
    st = run(lambda a, b=0: {"sum": a + b, "list": [1, "x", None], "t": (1, 2)},
             args=(2,), kwargs={"b": 3})
    assert st.ok and st.exit_code == 0 and st.has_result
    assert st.value == {"sum": 5, "list": [1, "x", None], "t": [1, 2]}


def test_exception_comes_back_as_data_never_unpickled(run):
    st = run(_raise_api_error)
    assert st.exit_code == 1 and not st.ok
    assert st.exception.type == f"{__name__}.ApiError"
    assert st.exception.message == "upstream failed"
    assert "_raise_api_error" in st.exception.traceback
    assert str(st.exception) == f"{__name__}.ApiError: upstream failed"


def test_system_exit_sets_the_exit_code(run):
    st = run(lambda: exit(3))
    assert st.exit_code == 3 and st.exception.type == "SystemExit"


def test_a_50mb_result_does_not_deadlock(run):
    t = time.monotonic()
    st = run(lambda: "x" * 50_000_000)
    assert st.ok and len(st.value) == 50_000_000
    assert time.monotonic() - t < 60


def test_non_json_value_is_refused_unless_trusted(run):
    untrusted = run(lambda: {1, 2})
    assert untrusted.value is None and "not JSON-compatible" in untrusted.result_error
    assert "trusted=True" in untrusted.result_error
    trusted = run(lambda: {1, 2}, trusted=True)
    assert trusted.value == {1, 2}


def _forge_pickle_frame():
    import os
    import pickle

    from pytest_isolate.runtime.channel import KIND_PICKLE, write_frame

    for fd in range(3, 64):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                write_frame(fd, KIND_PICKLE, pickle.dumps(os.getpid))
        except OSError:
            pass
    os._exit(0)


def test_a_pickled_frame_from_an_untrusted_process_is_refused(run):
    st = run(_forge_pickle_frame)
    assert "refused" in st.result_error and st.value is None


def _write_garbage():
    import os

    for fd in range(3, 64):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                os.write(fd, b"\x80garbage that is not a frame" * 100)
        except OSError:
            pass
    return "never seen"


def test_garbage_on_the_result_channel_is_an_error_not_a_hang(run):
    st = run(_write_garbage, timeout=30)
    assert not st.timed_out
    assert "malformed frame" in st.result_error and st.value is None


def _truncated_frame():
    import os
    import struct

    for fd in range(3, 64):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                os.write(fd, struct.pack(">2scxI", b"PI", b"J", 1000) + b"{")
        except OSError:
            pass
    os._exit(0)


def test_result_channel_closed_mid_frame(run):
    st = run(_truncated_frame)
    assert "closed early" in st.result_error


def test_oversized_result_is_refused(run):
    st = run(lambda: "y" * 5000, max_result_size=1000)
    assert "exceeds the cap of 1000" in st.result_error and st.value is None


def test_exit_without_result(run):
    st = run(lambda: os._exit(0))
    assert st.exit_code == 0 and not st.ok
    assert st.result_error == "the process exited with status 0 before reporting a result"


def _crash_after_print():
    import ctypes

    print("before the crash")
    ctypes.string_at(0)


def test_output_printed_before_sigsegv_is_kept(run, tmp_path):
    out, err = tmp_path / "out", tmp_path / "err"
    st = run(_crash_after_print, stdout=str(out), stderr=str(err))
    assert st.signal == signal.SIGSEGV
    assert st.describe() == "killed by signal 11 (SIGSEGV)"
    assert out.read_text() == "before the crash\n"
    assert "Segmentation fault" in err.read_text()
    assert "_crash_after_print" in err.read_text()  # faulthandler's traceback


def test_pipe_capture_and_its_limit(run):
    st = run(["sh", "-c", "printf out; printf err >&2; head -c 5000 /dev/zero"],
             stdout=PIPE, stderr=PIPE, max_output=100)
    assert st.stderr == b"err"
    assert st.stdout.startswith(b"out" + b"\0" * 97)
    assert b"4903 more bytes of stdout dropped" in st.stdout


def test_payload_killing_itself_with_sigterm_dies(run):
    # The payload is not PID 1, so SIGTERM has its default action.
    st = run(lambda: os.kill(os.getpid(), signal.SIGTERM), timeout=10)
    assert st.signal == signal.SIGTERM and not st.timed_out


def test_signal_dispositions_are_a_fresh_interpreters(run):
    def view():
        import signal

        return [os.getpid() != 1, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()]

    signal.signal(signal.SIGUSR1, lambda *a: None)  # a host handler must not leak in
    try:
        assert run(view).value == [True, True, True, True]
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_sigterm_from_the_host_is_forwarded_to_the_payload(factory):
    c = factory.create("t")
    c.start(Process(target=time.sleep, args=(60,)))
    c.signal(signal.SIGTERM)
    st = c.wait(timeout=10)
    assert st.signal == signal.SIGTERM
    assert c.status.value == "stopped"
    c.destroy()


def test_signal_all_reaches_every_process(factory, tmp_path):
    c = factory.create("t")
    c.start(Process(["sh", "-c", "sleep 60 & sleep 61 & wait"]))
    deadline = time.monotonic() + 5
    while len(c.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(c.pids()) == 4  # init, sh, two sleeps
    c.signal(signal.SIGTERM, all=True)
    st = c.wait(timeout=10)
    assert st.signal == signal.SIGTERM
    c.destroy()


def _leave_a_grandchild(marker):
    import subprocess

    subprocess.Popen(["bash", "-c", f"exec -a {marker} sleep 300"], start_new_session=True)
    subprocess.Popen(["true"])  # a zombie for the init to reap
    return "left"


def _host_processes_named(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(marker.encode()):
                    found.append(pid)
        except OSError:
            pass
    return found


def test_a_grandchild_left_running_dies_with_the_container(factory):
    marker = f"isolate-orphan-{os.getpid()}"
    c = factory.create("g")
    c.start(Process(target=_leave_a_grandchild, args=(marker,)))
    st = c.wait(timeout=30)
    assert st.value == "left"
    assert _host_processes_named(marker) == []
    c.destroy()


def test_a_grandchild_is_running_while_the_container_runs(factory):
    marker = f"isolate-alive-{os.getpid()}"
    c = factory.create("g")
    c.start(Process(["bash", "-c", f"(exec -a {marker} sleep 300) & sleep 300"]))
    deadline = time.monotonic() + 5
    while not _host_processes_named(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_host_processes_named(marker)) == 1
    c.destroy()
    assert _host_processes_named(marker) == []


def test_timeout_kills_the_whole_container(run):
    t = time.monotonic()
    st = run(["sh", "-c", "sleep 100 & sleep 100"], timeout=0.5)
    assert st.timed_out and st.describe() == "timed out after 0.5 s"
    assert time.monotonic() - t < 10


def test_wait_timeout_leaves_the_container_running(factory):
    c = factory.create("w")
    c.start(Process(target=time.sleep, args=(60,)))
    with pytest.raises(WaitTimeout):
        c.wait(timeout=0.2)
    assert c.status.value == "running"
    c.destroy()
    assert factory.list() == []


def test_env_rlimits_cwd_and_no_new_privs_inside(run):
    def view():
        import resource

        with open("/proc/self/status") as f:
            nnp = next(line.split()[1] for line in f if line.startswith("NoNewPrivs"))
        return {"env": dict(os.environ), "nofile": list(resource.getrlimit(
            resource.RLIMIT_NOFILE)), "cwd": os.getcwd(), "nnp": nnp}

    cfg = Config(env={"A": "1", "PATH": "/usr/bin:/bin"}, cwd="/etc",
                 rlimits=(Rlimit("NOFILE", 64, 128),))
    st = run(view, cfg, env={"B": "2"})
    assert st.value == {"env": {"A": "1", "PATH": "/usr/bin:/bin", "B": "2"},
                        "nofile": [64, 128], "cwd": "/etc", "nnp": "1"}


def test_host_environment_is_inherited_by_default(run, monkeypatch):
    monkeypatch.setenv("ISOLATE_PROBE", "seen")
    assert run(lambda: os.environ.get("ISOLATE_PROBE")).value == "seen"


def test_no_host_descriptor_reaches_the_container(run, tmp_path):
    held = open(tmp_path / "held", "w")  # kept open on purpose
    try:
        def fds():
            out = {}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    out[fd] = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    pass
            return out

        st = run(fds, stdout=PIPE, stderr=PIPE)
        targets = st.value
        assert not any("held" in t for t in targets.values())
        pipes = [fd for fd, t in targets.items() if t.startswith("pipe:")]
        assert sorted(pipes, key=int)[:2] == ["1", "2"] and len(pipes) == 3  # + result
        others = {t for fd, t in targets.items() if int(fd) > 2 and not t.startswith("pipe:")}
        assert others <= {"/dev/null"} | {t for t in others if t.startswith("/proc/")}
    finally:
        held.close()


def test_exec_runs_a_second_process_inside(factory):
    c = factory.create("e", Config(hostname="exec-box"))
    c.start(Process(target=time.sleep, args=(60,)))
    p = c.exec(Process(["sh", "-c", "hostname; readlink /proc/self/ns/pid; echo $$"],
                       stdout=PIPE))
    st = p.wait(timeout=10)
    name, ns, pid = st.stdout.decode().split()
    assert name == "exec-box"
    assert ns == os.readlink(f"/proc/{c.state().init_pid}/ns/pid")
    assert int(pid) > 2
    value = c.exec(Process(target=lambda: os.getppid() != 1 and os.getpid())).wait(10)
    assert isinstance(value.value, int) and value.value > 2
    c.destroy()


def test_exec_of_a_missing_program_raises(factory):
    c = factory.create("e")
    c.start(Process(target=time.sleep, args=(60,)))
    with pytest.raises(SetupError) as ei:
        c.exec(Process(["/no/such/program"]))
    assert "No such file or directory" in str(ei.value)
    c.destroy()


def test_start_of_a_missing_program_cleans_up(factory):
    c = factory.create("e")
    with pytest.raises(SetupError) as ei:
        c.start(Process(["/no/such/program"]))
    assert ei.value.step == "payload" and "/no/such/program" in str(ei.value)
    assert factory.list() == []


def test_unpicklable_target_is_a_clear_error(factory):
    import threading

    lock = threading.Lock()
    c = factory.create("p")
    with pytest.raises(ProcessError, match="cannot ship"):
        c.start(Process(target=lambda: lock))
    assert c.status.value == "created"
    c.destroy()


def test_process_arguments_are_validated():
    from pytest_isolate.runtime import ConfigError

    with pytest.raises(ConfigError, match="process="):
        Process()
    with pytest.raises(ConfigError, match="process.argv="):
        Process("echo hi")
    with pytest.raises(ConfigError, match="process.timeout="):
        Process(["true"], timeout=0)
    with pytest.raises(ConfigError, match="process.cwd="):
        Process(["true"], cwd="rel")


def test_a_process_cannot_be_started_twice(factory):
    p = Process(["true"])
    with factory.create("a") as c:
        c.run(p)
    with factory.create("b") as c, pytest.raises(ProcessError, match="already started"):
        c.start(p)


def test_wait_before_start(factory):
    with factory.create("a") as c, pytest.raises(ContainerError):
        c.wait()


def _emit_then_crash():
    import ctypes

    from pytest_isolate.runtime import emit

    emit({"phase": "setup", "n": 1})
    emit(["call"])
    ctypes.string_at(0)


def test_messages_emitted_before_a_crash_reach_the_host(run):
    got = []
    st = run(_emit_then_crash, on_message=got.append)
    assert got == [{"phase": "setup", "n": 1}, ["call"]]
    assert st.signal == signal.SIGSEGV


@pytest.mark.host  # under pytest --isolate, a test *is* a payload
def test_emit_outside_a_payload_is_an_error():
    from pytest_isolate.runtime import emit

    with pytest.raises(RuntimeError, match="only available inside"):
        emit(1)


def test_a_failing_message_callback_is_raised_from_wait(run):
    def boom(data):
        raise KeyError(data)

    with pytest.raises(KeyError):
        run(_emit_then_crash, on_message=boom)


def test_the_result_channel_total_is_capped(run):
    def many():
        from pytest_isolate.runtime import emit

        for _ in range(100):
            emit("z" * 1000)

    st = run(many, max_result_size=10_000)
    assert "carried more than 10000 bytes" in st.result_error


def test_a_hidden_host_cwd_falls_back_to_root_but_an_explicit_one_fails(factory, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # under /tmp: invisible inside
    with factory.create("cwd") as c:
        assert c.run(Process(target=os.getcwd)).value == "/"
    with factory.create("cwd2", Config(cwd=str(tmp_path))) as c, \
            pytest.raises(SetupError, match="chdir"):
        c.start(Process(["true"]))


def _deeply_nested_frame():
    import os
    import struct

    body = b'{"t": "value", "value": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    for fd in range(3, 64):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                os.write(fd, struct.pack(">2scxI", b"PI", b"J", len(body)) + body)
        except OSError:
            pass
    os._exit(0)


def test_a_frame_nested_too_deep_to_decode_is_an_error_not_a_crash(run):
    st = run(_deeply_nested_frame, timeout=30)
    assert "malformed result frame" in st.result_error and st.value is None


def test_extra_files_are_fds_3_and_up_for_a_program(run):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        st = run(["sh", "-c", "echo one >&3; echo two >&4"], extra_files=[w1, w2])
        os.close(w1)
        os.close(w2)
        w1 = w2 = -1
        assert st.exit_code == 0
        assert os.read(r1, 100) == b"one\n" and os.read(r2, 100) == b"two\n"
    finally:
        for fd in (r1, r2, w1, w2):
            if fd >= 0:
                os.close(fd)


def _read_fd3_and_list_children_fds():
    import subprocess

    data = os.read(3, 100).decode()
    # not inherited by a callable's children
    child = subprocess.run(["sh", "-c", "ls /proc/$$/fd"], capture_output=True, text=True)
    return [data, sorted(int(x) for x in child.stdout.split())]


def test_extra_files_reach_a_callable_but_not_its_children(run):
    r, w = os.pipe()
    try:
        os.write(w, b"hello")
        os.close(w)
        w = -1
        st = run(_read_fd3_and_list_children_fds, extra_files=[r], timeout=30)
        assert st.ok, st
        data, child_fds = st.value
        assert data == "hello"
        assert child_fds == [0, 1, 2]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_extra_files_are_checked():
    with pytest.raises(ConfigError, match="extra_files"):
        Process(["true"], extra_files=["x"])
    with pytest.raises(ConfigError, match="at most 16"):
        Process(["true"], extra_files=list(range(17)))
