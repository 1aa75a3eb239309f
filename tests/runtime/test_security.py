"""Capabilities, no_new_privs and rlimits as the payload sees them."""

from __future__ import annotations

import errno
import resource

import pytest

from pytest_isolate.runtime import PIPE, Config, ConfigError, Process, Rlimit
from pytest_isolate.runtime.capabilities import DOCKER_DEFAULT, current


def _status():
    with open("/proc/self/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f)
                if k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs")}


def _names(mask):
    from pytest_isolate.runtime.capabilities import CAPABILITIES

    return sorted(n for n, bit in CAPABILITIES.items() if int(mask, 16) >> bit & 1)


def _bind_80():
    import socket

    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 80))
        return "bound"
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        s.close()


def test_default_is_dockers_capability_set(run):
    st = run(_status)
    v = st.value
    for key in ("CapBnd", "CapEff", "CapPrm", "CapInh"):
        assert _names(v[key]) == sorted(DOCKER_DEFAULT), key
    assert _names(v["CapAmb"]) == []
    assert v["NoNewPrivs"] == "1"
    assert "CAP_SYS_ADMIN" in current().effective  # the host keeps its own


def test_no_capabilities(run):
    st = run(lambda: (_status(), _bind_80()), Config(capabilities=[]))
    status, bind = st.value
    assert {status[k] for k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb")} == \
        {"0000000000000000"}
    assert bind == "EACCES"


def test_one_capability(run):
    st = run(lambda: (_status(), _bind_80()), Config(capabilities=["net_bind_service"]))
    status, bind = st.value
    assert _names(status["CapEff"]) == ["CAP_NET_BIND_SERVICE"]
    assert _names(status["CapBnd"]) == ["CAP_NET_BIND_SERVICE"]
    assert bind == "bound"


def test_a_non_root_user_keeps_its_capabilities_through_exec(run):
    # The exec'd shell is an ordinary file: a non-root uid keeps only ambient caps.
    st = run(["sh", "-c", "id -u; grep -E '^Cap(Eff|Amb)' /proc/self/status"],
             Config(capabilities=["NET_BIND_SERVICE"]), user="1000:1000", stdout=PIPE)
    uid, _, eff, _, amb = st.stdout.decode().split()
    assert uid == "1000"
    assert _names(eff) == _names(amb) == ["CAP_NET_BIND_SERVICE"]


def test_unknown_capability_is_a_config_error():
    with pytest.raises(ConfigError) as ei:
        Config(capabilities=["CAP_NET_BIND_SERVIC"])
    assert ei.value.field == "capabilities"
    assert "CAP_NET_BIND_SERVICE" in str(ei.value)  # the close match is suggested
    with pytest.raises(ConfigError, match="capabilities="):
        Config(capabilities="CAP_KILL")


def test_caps_the_host_lacks_are_warned_about_once(factory):
    held = current().bounding
    from pytest_isolate.runtime.capabilities import CAPABILITIES

    lacking = sorted(set(CAPABILITIES) - held)
    if not lacking:
        pytest.skip("this host holds every capability, so none can be missing")
    cfg = Config(capabilities=["ALL"])
    from pytest_isolate.runtime import container

    container._warned_caps.clear()  # once per process: an earlier test may have seen it
    with pytest.warns(RuntimeWarning, match=lacking[0]), factory.create("a", cfg) as c:
        st = c.run(Process(target=_status))
    assert lacking[0] not in _names(st.value["CapEff"])


def test_rlimits_visible_inside(run):
    cfg = Config(rlimits=(Rlimit("NOFILE", 64, 128), Rlimit("CORE", 0),
                          Rlimit("FSIZE", 1 << 20)))
    st = run(lambda: [resource.getrlimit(r) for r in (
        resource.RLIMIT_NOFILE, resource.RLIMIT_CORE, resource.RLIMIT_FSIZE)], cfg)
    assert st.value == [[64, 128], [0, 0], [1 << 20, 1 << 20]]


def test_process_rlimits_override_the_configs(run):
    cfg = Config(rlimits=(Rlimit("NOFILE", 64),))
    st = run(lambda: resource.getrlimit(resource.RLIMIT_NOFILE), cfg,
             rlimits=(Rlimit("NOFILE", 32),))
    assert st.value == [32, 32]


def test_no_new_privs_can_be_turned_off(run):
    assert run(_status, Config(no_new_privs=False)).value["NoNewPrivs"] == "0"
