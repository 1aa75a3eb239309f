"""Capability sets, applied for real in a forked child and read back from the kernel.

Each test that changes capabilities forks; the child applies the sets, reports what
``/proc/self/status`` says (its own, and that of a program it executes) as JSON over a
pipe and leaves with ``os._exit``; the parent asserts. The apply tests run once per
backend: python-prctl and ctypes must give the same result.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from pytest_isolate.runtime import ConfigError, SetupError, linux
from pytest_isolate.runtime.capabilities import (
    BACKEND_ENV,
    CAPABILITIES,
    DOCKER_DEFAULT,
    CapabilitySets,
    apply,
    backend_name,
    current,
    get_backend,
    parse_capabilities,
    prepare_uid_change,
)

pytestmark = pytest.mark.host

try:
    import prctl  # type: ignore[import-untyped]  # noqa: F401
    HAVE_PRCTL = True
except ImportError:
    HAVE_PRCTL = False

NO_PRCTL = ("python-prctl not installed "
            "(pip install 'pytest-isolate-container[prctl]', needs libcap-dev)")
needs_prctl = pytest.mark.skipif(not HAVE_PRCTL, reason=NO_PRCTL)

NBS = "CAP_NET_BIND_SERVICE"
PR_GET_KEEPCAPS = 7
CAT = shutil.which("cat") or "/bin/cat"
SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


@pytest.fixture(params=["ctypes", pytest.param("prctl", marks=needs_prctl)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def in_child(fn: Callable[[], Any]) -> Any:
    """fn() in a forked child; its JSON-able return value, or its traceback as a failure."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            try:
                payload = {"value": fn()}
            except BaseException:
                payload = {"error": traceback.format_exc()}
            with os.fdopen(w, "w") as f:
                json.dump(payload, f)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    result = json.loads(data)
    if "error" in result:
        pytest.fail("in the child:\n" + result["error"], pytrace=False)
    return result["value"]


def _names(mask: int) -> list[str]:
    return sorted(name for name, n in CAPABILITIES.items() if mask >> n & 1)


def status_sets(text: str) -> dict[str, list[str]]:
    """The five sets from a /proc/<pid>/status text, as sorted names."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    keys = {"bounding": "CapBnd", "effective": "CapEff", "permitted": "CapPrm",
            "inheritable": "CapInh", "ambient": "CapAmb"}
    return {label: _names(int(fields[key], 16)) for label, key in keys.items()}


def exec_status() -> dict[str, list[str]]:
    """The sets of a freshly executed program (cat, no file capabilities)."""
    out = subprocess.run([CAT, "/proc/self/status"], capture_output=True, text=True,
                         check=True).stdout
    return status_sets(out)


def bind_port_80() -> int:
    """0 if binding TCP port 80 works, else the errno."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", 80))
        except OSError as e:
            return e.errno or -1
    return 0


def fresh_netns() -> None:
    # Port 80 of a new, empty network namespace is free; 0.0.0.0 needs no interface up.
    linux.unshare(linux.CLONE_NEWNET)


def all_sets(names: list[str]) -> dict[str, list[str]]:
    return {label: names for label in SETS}


def held_by_host() -> frozenset[str]:
    """What this process can grant: in its bounding and permitted sets."""
    me = current()
    return me.bounding & me.permitted


# --- names and parsing ---------------------------------------------------------------

def test_the_table_covers_every_cap_of_the_running_kernel():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES[NBS] == 10
    assert CAPABILITIES["CAP_SYS_RESOURCE"] == 24
    assert sorted(CAPABILITIES.values()) == list(range(min(last, 40) + 1))
    if last >= 40:
        assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40


@needs_prctl
def test_the_table_agrees_with_python_prctl():
    import prctl

    theirs = {f"CAP_{n.upper()}": getattr(prctl, f"CAP_{n.upper()}")
              for n in prctl.ALL_CAP_NAMES if n != "last_cap"}  # 1.8.1 names cap 40 "last_cap"
    assert {k: v for k, v in CAPABILITIES.items() if k in theirs} == theirs


def test_docker_default_set():
    assert len(DOCKER_DEFAULT) == 14
    assert set(CAPABILITIES) >= DOCKER_DEFAULT
    assert "CAP_SYS_ADMIN" not in DOCKER_DEFAULT and NBS in DOCKER_DEFAULT


def test_none_means_docker_default_and_empty_means_none():
    assert parse_capabilities(None) == DOCKER_DEFAULT
    assert parse_capabilities([]) == frozenset()


@pytest.mark.parametrize("spelling", ["CAP_NET_BIND_SERVICE", "net_bind_service",
                                      "NET_BIND_SERVICE", " cap_net_bind_service "])
def test_names_with_or_without_prefix_in_any_case(spelling):
    assert parse_capabilities([spelling, NBS]) == {NBS}


@pytest.mark.parametrize("spelling", ["ALL", "all"])
def test_all_is_every_known_cap(spelling):
    assert parse_capabilities(["CAP_KILL", spelling]) == frozenset(CAPABILITIES)


def test_unknown_name_names_field_close_match_and_man_page():
    with pytest.raises(ConfigError) as info:
        parse_capabilities(["CAP_CHOWN", "net_bind_servce"], field="isolated.capabilities")
    e = info.value
    assert e.field == "isolated.capabilities" and e.value == "net_bind_servce"
    assert "did you mean CAP_NET_BIND_SERVICE?" in str(e)
    assert "capabilities(7)" in str(e)


def test_a_string_instead_of_a_list_is_an_error():
    with pytest.raises(ConfigError) as info:
        parse_capabilities("CAP_NET_BIND_SERVICE")  # type: ignore[arg-type]
    assert info.value.field == "capabilities"
    assert "list" in str(info.value) and "['CAP_NET_BIND_SERVICE']" in str(info.value)


@pytest.mark.parametrize("bad", [42, [7], [None]])
def test_other_wrong_types_are_errors(bad):
    with pytest.raises(ConfigError, match="capabilit"):
        parse_capabilities(bad, field="caps")


def test_uniform_sets_ambient_only_for_a_non_root_uid():
    root = CapabilitySets.uniform({NBS})
    assert root.bounding == root.effective == root.permitted == root.inheritable == {NBS}
    assert root.ambient == frozenset()
    user = CapabilitySets.uniform({NBS}, uid=1000)
    assert user.ambient == {NBS}
    assert user.as_dict()["ambient"] == [NBS]


def test_sets_reject_unknown_names():
    with pytest.raises(ConfigError) as info:
        CapabilitySets(effective=frozenset({"CAP_NOPE"}))
    assert info.value.field == "capabilities.effective"


# --- backends ---------------------------------------------------------------------------

def test_backends_read_what_proc_shows(backend):
    be = get_backend(backend)
    me = current()
    eff, prm, inh = be.get()
    assert (_names(eff), _names(prm), _names(inh)) == (
        sorted(me.effective), sorted(me.permitted), sorted(me.inheritable))
    assert {n for n, c in CAPABILITIES.items() if be.bounding_has(c)} == me.bounding


def test_default_backend_is_prctl_when_installed(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert backend_name() == ("python-prctl" if HAVE_PRCTL else "ctypes")


def test_default_backend_is_ctypes_without_prctl(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "prctl", None)  # import prctl -> ImportError
    assert backend_name() == "ctypes"
    monkeypatch.setenv(BACKEND_ENV, "prctl")
    with pytest.raises(ConfigError, match="libcap-dev") as info:
        get_backend()
    assert info.value.field == BACKEND_ENV


def test_env_var_forces_ctypes(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "ctypes")
    assert backend_name() == "ctypes"
    assert get_backend("ctypes").name == "ctypes"


@needs_prctl
def test_env_var_forces_prctl_and_an_explicit_name_wins(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "prctl")
    assert backend_name() == "python-prctl"
    assert get_backend("ctypes").name == "ctypes"
    assert get_backend("python-prctl").name == "python-prctl"


def test_env_var_with_an_unknown_backend(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "libcap")
    with pytest.raises(ConfigError) as info:
        backend_name()
    assert info.value.field == BACKEND_ENV and info.value.value == "libcap"


# --- applying, as root ------------------------------------------------------------------

def test_docker_default_is_what_the_kernel_shows(backend):
    def child():
        missing = apply(CapabilitySets.uniform(DOCKER_DEFAULT), backend)
        return {"missing": sorted(missing), "self": current().as_dict(),
                "exec": exec_status()}

    got = in_child(child)
    granted = sorted(DOCKER_DEFAULT & held_by_host())
    assert got["missing"] == sorted(DOCKER_DEFAULT - held_by_host())
    assert got["self"] == {"bounding": granted, "effective": granted, "permitted": granted,
                           "inheritable": granted, "ambient": []}
    # root after execve: permitted = inheritable | bounding, effective = permitted
    assert got["exec"]["effective"] == got["exec"]["permitted"] == granted


def test_no_capabilities_at_all(backend):
    def child():
        fresh_netns()
        missing = apply(CapabilitySets.uniform(parse_capabilities([])), backend)
        status = current().as_dict()
        return {"missing": sorted(missing), "self": status, "bind": bind_port_80(),
                "exec": exec_status(), "uid": os.getuid()}

    got = in_child(child)
    assert got["uid"] == 0 and got["missing"] == []
    assert got["self"] == all_sets([])
    assert got["exec"]["effective"] == got["exec"]["bounding"] == []
    assert got["bind"] == errno.EACCES


def test_one_capability_gives_exactly_that_bit(backend):
    def child():
        fresh_netns()
        missing = apply(CapabilitySets.uniform(parse_capabilities(["net_bind_service"])),
                        backend)
        return {"missing": sorted(missing), "self": current().as_dict(),
                "bind": bind_port_80(), "exec": exec_status()}

    got = in_child(child)
    assert got["missing"] == []
    assert got["self"] == {"bounding": [NBS], "effective": [NBS], "permitted": [NBS],
                           "inheritable": [NBS], "ambient": []}
    assert got["bind"] == 0
    assert got["exec"]["effective"] == [NBS]


def test_non_root_keeps_its_caps_through_execve_via_ambient(backend):
    def child():
        fresh_netns()
        prepare_uid_change(backend)
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)
        missing = apply(CapabilitySets.uniform({NBS}, uid=1000), backend)
        return {"missing": sorted(missing), "uid": os.getuid(), "self": current().as_dict(),
                "keepcaps": linux.prctl(PR_GET_KEEPCAPS), "bind": bind_port_80(),
                "exec": exec_status()}

    got = in_child(child)
    assert got["uid"] == 1000 and got["missing"] == []
    assert got["self"] == all_sets([NBS])
    assert got["keepcaps"] == 0  # a later setuid in the payload drops caps as usual
    assert got["bind"] == 0
    assert got["exec"] == all_sets([NBS])


def test_non_root_without_ambient_loses_its_caps_on_execve(backend):
    # Why uniform() puts the caps in the ambient set for a non-root uid.
    def child():
        prepare_uid_change(backend)
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)
        apply(CapabilitySets.uniform({NBS}), backend)
        return {"self": current().as_dict(), "exec": exec_status()}

    got = in_child(child)
    assert got["self"]["effective"] == [NBS]
    assert got["exec"]["effective"] == got["exec"]["permitted"] == []


def test_uid_change_without_prepare_is_a_setup_error(backend):
    def child():
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)  # permitted set lost: the bounding set can no longer be reduced
        try:
            apply(CapabilitySets.uniform({NBS}, uid=1000), backend)
        except SetupError as e:
            return {"step": e.step, "errno": e.errno, "message": str(e)}
        return None

    got = in_child(child)
    assert got is not None, "apply() succeeded without CAP_SETPCAP"
    assert got["step"] == "capabilities" and got["errno"] == errno.EPERM
    assert "prepare_uid_change()" in got["message"]


def test_a_cap_the_caller_lacks_is_reported_not_fatal(backend):
    lacking = "CAP_SYS_RESOURCE"

    def child():
        # Make sure the caller lacks it, whatever the host's bounding set is.
        apply(CapabilitySets.uniform(held_by_host() - {lacking}), backend)
        missing = apply(CapabilitySets.uniform({lacking, NBS}, uid=0), backend)
        return {"missing": sorted(missing), "self": current().as_dict()}

    got = in_child(child)
    assert got["missing"] == [lacking]
    assert got["self"] == {"bounding": [NBS], "effective": [NBS], "permitted": [NBS],
                           "inheritable": [NBS], "ambient": []}


def test_all_is_every_cap_the_caller_holds(backend):
    def child():
        missing = apply(CapabilitySets.uniform(parse_capabilities(["ALL"])), backend)
        return {"missing": sorted(missing), "self": current().as_dict()}

    got = in_child(child)
    held = held_by_host()
    assert got["missing"] == sorted(frozenset(CAPABILITIES) - held)
    assert got["self"]["effective"] == got["self"]["bounding"] == sorted(held)
