"""Config values: human units, normalisation, and errors that name the setting."""

from __future__ import annotations

import json

import pytest

from pytest_isolate.runtime import (
    Config,
    ConfigError,
    Hook,
    Hooks,
    IDMap,
    Mount,
    Namespaces,
    Resources,
    Rlimit,
)
from pytest_isolate.runtime.units import format_size, parse_cpu, parse_size


@pytest.mark.parametrize("text, expected", [
    ("64M", 64 * 2**20), ("1.5G", int(1.5 * 2**30)), ("512k", 512 * 1024), ("100", 100),
    ("2GiB", 2 * 2**30), ("1 M", 2**20), (4096, 4096),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "-1M", "1X", "1.5.5M", True, None, 1.5, -5, "inf"])
def test_parse_size_rejects(bad):
    with pytest.raises(ConfigError) as ei:
        parse_size(bad, "memory")
    assert ei.value.field == "memory"
    assert "memory=" in str(ei.value)


def test_format_size():
    assert format_size(64 * 2**20) == "64M"
    assert format_size(3 * 2**29) == "1.5G"
    assert format_size(None) == "unlimited"
    assert format_size(100) == "100B"


@pytest.mark.parametrize("text, expected", [
    (0.5, 0.5), ("0.5", 0.5), ("150%", 1.5), ("500m", 0.5), (2, 2.0),
])
def test_parse_cpu(text, expected):
    assert parse_cpu(text) == expected


@pytest.mark.parametrize("bad", [0, -1, "x", "nan", "0%", False])
def test_parse_cpu_rejects(bad):
    with pytest.raises(ConfigError, match="cpu="):
        parse_cpu(bad)


def test_defaults_are_hermetic():
    c = Config()
    assert c.namespaces.enabled() == ("pid", "mount", "uts", "ipc")
    assert c.network == "none"
    assert {m.destination for m in c.mounts} == {"/proc", "/tmp", "/dev/shm"}
    assert "/proc/kcore" in c.masked_paths and "/proc/sys" in c.readonly_paths
    assert c.no_new_privs is True
    assert c.validate() == []


def test_units_normalised_on_creation():
    r = Resources(memory="64M", cpu="50%", memory_swap="0")
    assert (r.memory, r.cpu, r.memory_swap) == (64 * 2**20, 0.5, 0)
    m = Mount("/scratch", "tmpfs", size="1M")
    assert m.size == 2**20
    assert Rlimit("rlimit_nofile", 100).name == "NOFILE"
    assert Rlimit("nofile", 100).hard == 100


@pytest.mark.parametrize("make, field", [
    (lambda: Config(hostname="bad host!"), "hostname"),
    (lambda: Config(network="bridge"), "network"),
    (lambda: Config(cwd="relative/dir"), "cwd"),
    (lambda: Config(env={"A=B": "x"}), "env"),
    (lambda: Config(env={"A": 1}), "env[A]"),
    (lambda: Config(user="root"), "user"),
    (lambda: Config(readonly="yes"), "readonly"),
    (lambda: Config(rootfs="/definitely/not/here"), "rootfs"),
    (lambda: Resources(pids=-1), "pids"),
    (lambda: Resources(pids=0), "pids"),
    (lambda: Resources(memory="lots"), "memory"),
    (lambda: Resources(cpuset="a-b"), "cpuset"),
    (lambda: Resources(cpu_weight=0), "cpu_weight"),
    (lambda: Rlimit("NOPE", 1), "rlimits"),
    (lambda: Rlimit("NOFILE", 10, 5), "rlimits.NOFILE"),
    (lambda: Rlimit("NOFILE", -1), "rlimits.NOFILE.soft"),
    (lambda: Mount("tmp", "tmpfs"), "mounts.destination"),
    (lambda: Mount("/x", "overlay"), "mounts[/x].type"),
    (lambda: Mount("/x", "bind"), "mounts[/x].source"),
    (lambda: Mount("/x", "proc", size="1M"), "mounts[/x].size"),
    (lambda: IDMap(0, -1), "idmap.host_id"),
    (lambda: IDMap(0, 0, 0), "idmap.size"),
    (lambda: Hook(), "hooks"),
    (lambda: Hook(path="/bin/true", timeout=-1), "hooks.timeout"),
    (lambda: Hooks(prestart=("/bin/true",)), "hooks.prestart"),
    (lambda: Config(hostname="h", namespaces=Namespaces(uts=False)), "hostname"),
    (lambda: Config(namespaces=Namespaces(mount=False)), "namespaces.mount"),
    (lambda: Config(uid_mappings=(IDMap(0, 1000),)), "uid_mappings"),
    (lambda: Config(rlimits=(Rlimit("NOFILE", 1), Rlimit("nofile", 2))), "rlimits"),
])
def test_bad_values_name_the_setting(make, field):
    with pytest.raises(ConfigError) as ei:
        make()
    assert ei.value.field == field
    assert str(ei.value).startswith(f"{field}=")


def test_warnings_for_surprising_settings():
    c = Config(namespaces=Namespaces(pid=False), network="host")
    warns = c.validate()
    assert any("outlive" in w for w in warns)
    assert any("every host process" in w for w in warns)
    assert any("network='host'" in w for w in warns)


def test_round_trips_through_json():
    c = Config(hostname="h1", readonly=True, env={"A": "1"},
               mounts=(Mount("/data", "bind", source="/etc", readonly=True),),
               rlimits=(Rlimit("NOFILE", 64, 128),),
               resources=Resources(memory="1G", pids=10),
               namespaces=Namespaces(user=True), uid_mappings=(IDMap(0, 100000, 65536),),
               hooks=Hooks(poststop=(Hook(path="/bin/true", args=("true", "x")),)))
    again = Config.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c


def test_callable_hooks_are_kept_by_name_only():
    c = Config(hooks=Hooks(prestart=(Hook(callable=print),)))
    d = c.to_dict()
    assert d["hooks"]["prestart"][0]["callable"] == "print"
    assert Config.from_dict(json.loads(json.dumps(d))).hooks.prestart == ()


def test_more_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="env="):
        Config(env=["A=1"])
    with pytest.raises(ConfigError, match="the root is not a mount target"):
        Mount("/", "tmpfs")
    with pytest.raises(ConfigError, match="memory="):
        Resources(memory="99999999999999999999G")


def test_tmpfs_owner_is_checked():
    from pytest_isolate.runtime import ConfigError, Mount

    assert Mount("/x", "tmpfs", uid=1000, gid=1000).uid == 1000
    with pytest.raises(ConfigError, match="only a tmpfs mount has an owner"):
        Mount("/x", source="/y", uid=1)
    with pytest.raises(ConfigError, match="mounts\\[/x\\].gid"):
        Mount("/x", "tmpfs", gid=-1)
