"""Factory and container lifecycle: ids, state files, transitions, load, gc, hooks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pytest_isolate.runtime import (
    Config,
    ConfigError,
    ContainerExistsError,
    ContainerNotFoundError,
    Factory,
    Hook,
    HookError,
    Hooks,
    IllegalTransitionError,
    Mount,
    Process,
    SetupError,
    Status,
)


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "-x", "x" * 129, "a b", None])
def test_ids_are_validated(factory, bad):
    with pytest.raises(ConfigError) as ei:
        factory.create(bad)
    assert ei.value.field == "id"
    assert not any(n not in ("state",) for n in os.listdir(os.path.dirname(factory.root)))


def test_create_twice_and_load_missing(factory):
    factory.create("one")
    with pytest.raises(ContainerExistsError, match="'one' already exists"):
        factory.create("one")
    with pytest.raises(ContainerNotFoundError, match="no container 'two'"):
        factory.load("two")
    assert factory.list() == ["one"]
    factory.load("one").destroy()
    assert factory.list() == []


def test_state_file_through_the_lifecycle(factory):
    c = factory.create("life", Config(hostname="life", annotations={"k": "v"}))
    path = os.path.join(factory.root, "life", "state.json")
    st = json.load(open(path))
    assert st["status"] == "created" and st["init_pid"] is None
    assert st["config"]["hostname"] == "life" and st["annotations"] == {"k": "v"}
    c.start(Process(target=time.sleep, args=(60,)))
    st = json.load(open(path))
    assert st["status"] == "running"
    assert st["init_pid"] == c.state().init_pid and st["init_start_time"]
    assert set(st["namespace_paths"]) >= {"pid", "mnt", "net", "uts", "ipc"}
    assert st["owner_pid"] == os.getpid()
    c.signal(signal.SIGKILL)
    c.wait(timeout=10)
    st = json.load(open(path))
    assert st["status"] == "stopped" and st["exit"]["signal"] == signal.SIGKILL
    mounts = open("/proc/self/mountinfo").read()
    c.destroy()
    assert not os.path.exists(os.path.dirname(path))
    assert open("/proc/self/mountinfo").read() == mounts
    c.destroy()  # twice is harmless


def test_illegal_transitions_raise(factory):
    c = factory.create("t")
    with pytest.raises(IllegalTransitionError, match="'t' is created: cannot exec"):
        c.exec(Process(["true"]))
    with pytest.raises(IllegalTransitionError, match="cannot signal"):
        c.signal(signal.SIGTERM)
    c.run(Process(["true"]))
    assert c.status is Status.STOPPED
    with pytest.raises(IllegalTransitionError, match="'t' is stopped: cannot start"):
        c.start(Process(["true"]))
    with pytest.raises(IllegalTransitionError, match="stopped: cannot exec"):
        c.exec(Process(["true"]))
    with pytest.raises(IllegalTransitionError, match="stopped: cannot signal"):
        c.signal(signal.SIGTERM)
    c.destroy()


LOADER = textwrap.dedent("""
    import json, signal, sys
    from pytest_isolate.runtime import Factory
    c = Factory(sys.argv[1]).load(sys.argv[2])
    st = c.state()
    seen = {"status": st.status.value, "pid": st.init_pid, "pids": len(c.pids())}
    c.signal(signal.SIGTERM)
    print(json.dumps(seen))
""")


def test_load_from_a_second_process_sees_and_signals_the_container(factory):
    c = factory.create("shared")
    c.start(Process(target=time.sleep, args=(60,)))
    out = subprocess.run([sys.executable, "-c", LOADER, factory.root, "shared"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {"status": "running", "pid": c.state().init_pid, "pids": 2}
    st = c.wait(timeout=10)
    assert st.signal == signal.SIGTERM
    loaded = factory.load("shared")
    assert loaded.status is Status.STOPPED
    loaded.destroy()
    assert factory.list() == []


def test_a_loaded_container_reports_stopped_when_its_init_is_gone(factory):
    c = factory.create("gone")
    c.start(Process(target=time.sleep, args=(60,)))
    other = factory.load("gone")
    assert other.status is Status.RUNNING
    os.kill(c.state().init_pid, signal.SIGKILL)
    c.wait(timeout=10)
    assert other.status is Status.STOPPED
    with pytest.raises(IllegalTransitionError):
        other.signal(signal.SIGTERM)
    c.destroy()


ORPHANER = textwrap.dedent("""
    import sys, time
    from pytest_isolate.runtime import Factory, Process
    c = Factory(sys.argv[1]).create("orphan")
    c.start(Process(["sleep", "300"]))
    print(c.state().init_pid, flush=True)
    time.sleep(300)
""")


def test_owner_killed_then_gc_collects(factory):
    owner = subprocess.Popen([sys.executable, "-c", ORPHANER, factory.root],
                             stdout=subprocess.PIPE, text=True)
    init_pid = int(owner.stdout.readline())
    assert factory.load("orphan").status is Status.RUNNING
    owner.kill()
    owner.wait()
    owner.stdout.close()
    # the parent-death signal takes the container down with its owner
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{init_pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert factory.load("orphan").status is Status.STOPPED
    assert factory.gc() == ["orphan"]
    assert factory.list() == []


def test_gc_keeps_containers_of_live_owners(factory):
    c = factory.create("mine")
    assert factory.gc() == []
    c.destroy()


def test_a_failing_setup_step_names_itself_and_leaves_nothing(factory):
    cfg = Config(mounts=(*Config().mounts, Mount("/tmp/x", source="/no/such/source")))
    c = factory.create("bad", cfg)
    with pytest.raises(SetupError) as ei:
        c.start(Process(["true"]))
    assert ei.value.step == "open bind source /no/such/source"
    assert ei.value.errno == 2
    assert "open bind source /no/such/source" in str(ei.value)
    assert factory.list() == []


HOOK = textwrap.dedent("""\
    #!/bin/sh
    echo "$1 $(cat)" >> "$2"
    exit "${3:-0}"
""")


@pytest.fixture
def hook_script(tmp_path):
    path = tmp_path / "hook.sh"
    path.write_text(HOOK)
    path.chmod(0o755)
    return str(path)


def _hook(script, kind, log, code=0):
    return Hook(path=script, args=("hook", kind, str(log), str(code)))


def test_hooks_run_in_order_with_the_state_on_stdin(factory, hook_script, tmp_path):
    log = tmp_path / "hooks.log"
    seen = []
    hooks = Hooks(
        prestart=(_hook(hook_script, "prestart", log),),
        create_runtime=(_hook(hook_script, "create_runtime", log),
                        Hook(callable=lambda st: seen.append(("create_runtime", st.status)))),
        poststart=(_hook(hook_script, "poststart", log),),
        poststop=(_hook(hook_script, "poststop", log),),
    )
    c = factory.create("hooked", Config(hooks=hooks))
    c.run(Process(["true"]))
    init_pid = c.state().init_pid
    c.destroy()
    lines = log.read_text().splitlines()
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == ["prestart", "create_runtime", "poststart", "poststop"]
    states = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert all(s["id"] == "hooked" and s["pid"] == init_pid for s in states)
    assert [s["status"] for s in states] == ["created", "created", "running", "stopped"]
    assert seen == [("create_runtime", Status.CREATED)]


def test_a_failing_prestart_hook_aborts_and_is_named(factory, hook_script, tmp_path):
    log = tmp_path / "hooks.log"
    hooks = Hooks(prestart=(_hook(hook_script, "first", log),
                            _hook(hook_script, "second", log, code=3)))
    c = factory.create("hooked", Config(hooks=hooks))
    with pytest.raises(HookError) as ei:
        c.start(Process(["sleep", "60"]))
    assert (ei.value.kind, ei.value.index) == ("prestart", 1)
    assert "prestart hook #1" in str(ei.value) and "exit status 3" in str(ei.value)
    assert factory.list() == []


def test_a_hanging_hook_times_out(factory, tmp_path):
    hooks = Hooks(create_runtime=(Hook(path="/bin/sleep", args=("sleep", "30"), timeout=0.3),))
    c = factory.create("slow", Config(hooks=hooks))
    with pytest.raises(HookError, match="timed out after 0.3 s"):
        c.start(Process(["true"]))


def test_a_failing_poststop_hook_is_reported_not_fatal(factory, hook_script, tmp_path):
    log = tmp_path / "hooks.log"
    hooks = Hooks(poststop=(_hook(hook_script, "poststop", log, code=1),))
    c = factory.create("hooked", Config(hooks=hooks))
    c.run(Process(["true"]))
    with pytest.warns(RuntimeWarning, match="poststop hook #0"):
        c.destroy()
    assert len(c.hook_errors) == 1
    assert factory.list() == []


def test_destroy_kills_a_running_container(factory):
    c = factory.create("d")
    c.start(Process(["sleep", "300"]))
    pid = c.state().init_pid
    c.destroy()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert factory.list() == []


def test_context_manager_destroys(factory):
    with factory.create("cm") as c:
        c.run(Process(["true"]))
    assert factory.list() == []


def test_default_root(monkeypatch):
    from pytest_isolate.runtime import default_root

    assert default_root() == ("/run/pytest-isolate" if os.geteuid() == 0
                              else default_root())
    f = Factory()
    assert os.path.isdir(f.root)


def _leave_a_sleeper(path):
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)  # not waited for
    with open(path, "w") as f:
        f.write(str(proc.pid))
    return 7


def _host_pids_of_ns(ns):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    found.append(int(name))
            except OSError:
                pass
    return found


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (it may vanish while we look)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_wait_without_reaping_returns_at_the_payloads_end_with_the_rest_killed(factory):
    """wait(reap=False): the payload's status and result at once; every other process
    of the container already has SIGKILL pending (the init sends it before reporting),
    and destroy() finishes the end: init reaped, cgroups and state removed."""
    c = factory.create("noreap", Config(cgroups="required"))
    c.start(Process(target=_leave_a_sleeper, args=("/tmp/sleeper.pid",)))
    ns = os.readlink(f"/proc/{c.state().init_pid}/ns/pid")
    st = c.wait(reap=False)
    assert st.ok and st.value == 7, st.describe()
    assert st.stats is not None and st.stats["pids_peak"] >= 3  # init, payload, sleeper
    assert c.state().status is Status.STOPPED
    # what is left of the namespace is dying: no process of it gets to run again
    end = time.monotonic() + 10
    while time.monotonic() < end:
        alive = [p for p in _host_pids_of_ns(ns) if _running(p)]
        if not alive:
            break
        time.sleep(0.01)
    assert not alive, f"still running after the payload ended: {alive}"
    paths = c.state().cgroup_paths
    c.destroy()
    assert factory.list() == [] and not any(os.path.exists(p) for p in paths.values())
    assert not _host_pids_of_ns(ns)


def _answer_after(seconds: float) -> str:
    time.sleep(seconds)
    return "answered"


def test_start_without_waiting_sets_up_while_the_host_works(factory):
    """start(wait=False) returns before the container is set up; the container's
    processes go on by themselves (no round trip with the host) and ready() or wait()
    finish the start. The payload's timeout counts from ready()."""
    with factory.create("early", Config(cgroups="required")) as c:
        # runs 2 s; the timeout of 1.5 s would end it if it counted from start()
        proc = Process(target=_answer_after, args=(2.0,), timeout=1.5)
        c.start(proc, wait=False)
        assert c.status is Status.CREATED  # not running yet, as far as the host knows
        time.sleep(1.0)
        c.ready()
        assert c.status is Status.RUNNING
        assert c.state().init_pid is not None and c.state().cgroup_paths
        st = c.wait()
    assert st.ok and not st.timed_out, st.describe()
    assert st.value == "answered"


def test_a_quick_payload_may_end_before_ready(factory):
    """Finished late, the start finds a container whose payload already ended: the
    result is there all the same, and the init's pid is never taken for another."""
    with factory.create("quick", Config(cgroups="required")) as c:
        c.start(Process(target=os.getpid), wait=False)
        time.sleep(0.5)
        st = c.wait()
    assert st.ok and st.value == 2, st.describe()  # the payload is pid 2, after the init


def test_destroying_a_start_that_was_never_made_ready_leaves_nothing(factory):
    c = factory.create("abandoned", Config(cgroups="required"))
    c.start(Process(argv=["sleep", "60"]), wait=False)
    time.sleep(0.2)
    c.destroy()
    assert factory.list() == []
    assert not any("abandoned" in d for ctl in ("memory", "pids")
                   for _, dirs, _ in os.walk(f"/sys/fs/cgroup/{ctl}") for d in dirs)


def test_a_failed_set_up_surfaces_in_ready(factory, tmp_path):
    missing = str(tmp_path / "missing")
    c = factory.create("badmount", Config(mounts=(Mount("/mnt/x", source=missing),)))
    c.start(Process(target=os.getpid), wait=False)
    with pytest.raises(SetupError) as ei:
        c.ready()
    assert "missing" in str(ei.value) or ei.value.step.startswith("mount")
    assert factory.list() == []


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_without_a_user_namespace_the_init_is_the_hosts_own_child(factory):
    """No bootstrap in between: the host forks the init into a new PID namespace, then
    its own children are born in its own PID namespace again."""
    own = os.readlink("/proc/self/ns/pid")
    with factory.create("direct", Config()) as c:
        c.start(Process(argv=["sleep", "60"]))
        init = c.state().init_pid
        assert _parent_of(init) == os.getpid()
        assert os.readlink(f"/proc/{init}/ns/pid") != own
        assert os.readlink("/proc/self/ns/pid_for_children") == own
        after = subprocess.run(["sh", "-c", "readlink /proc/self/ns/pid"],
                               capture_output=True, text=True).stdout.strip()
        assert after == own
        c.signal(signal.SIGKILL)
        st = c.wait()
    assert st.signal == signal.SIGKILL


def test_with_a_user_namespace_a_bootstrap_forks_the_init(factory):
    from pytest_isolate.runtime import Namespaces

    with factory.create("viaboot", Config(namespaces=Namespaces(user=True))) as c:
        c.start(Process(argv=["sleep", "60"]))
        init = c.state().init_pid
        boot = _parent_of(init)
        assert boot != os.getpid() and _parent_of(boot) == os.getpid()
        assert open(f"/proc/{boot}/comm").read().strip() == "isolate-boot"


def test_a_set_up_failing_before_the_host_hands_the_process_over_is_named(factory,
                                                                         monkeypatch):
    """The container may fail its set-up (and close its socket) before the host has
    written the process to it: the host's write breaks, and the start still raises the
    container's own SetupError naming the step."""
    from pytest_isolate.runtime.container import Container

    real = Container._hand_over

    def late(self, run, pending):
        time.sleep(0.3)  # the init has failed and exited by now
        return real(self, run, pending)

    monkeypatch.setattr(Container, "_hand_over", late)
    cfg = Config(mounts=(*Config().mounts, Mount("/tmp/x", source="/no/such/source")))
    c = factory.create("early-fail", cfg)
    with pytest.raises(SetupError) as ei:
        c.start(Process(["true"]))
    assert ei.value.step == "open bind source /no/such/source"
    assert factory.list() == []
