"""Loading an OCI runtime-spec config.json: every mapped field, units, warnings, errors,
and one spec actually run."""

from __future__ import annotations

import copy
import json
import os
import socket

import pytest

from pytest_isolate.runtime import (
    PIPE,
    Config,
    ConfigError,
    Factory,
    Hook,
    IDMap,
    Mount,
    Namespaces,
    Process,
    Rlimit,
)
from pytest_isolate.runtime.oci import OciResult, config_from_oci
from pytest_isolate.runtime.units import format_size

CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
          "/proc/scsi"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# What `runc spec` writes (runc 1.1), by hand.
RUNC_SPEC = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"],
        "cwd": "/",
        "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                       {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": MASKED,
        "readonlyPaths": READONLY,
    },
}


def spec(**changes):
    """A copy of the runc default spec; ``changes`` are dotted paths -> values
    (``None`` deletes the key)."""
    s = copy.deepcopy(RUNC_SPEC)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = s
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return s


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(RUNC_SPEC, indent=2))
    return tmp_path


def load(s, bundle_dir) -> OciResult:
    return config_from_oci(s, bundle=str(bundle_dir))


# ------------------------------------------------------------- the default spec

def test_runc_default_spec_maps_every_field(bundle):
    res = config_from_oci(str(bundle / "config.json"))
    cfg = res.config
    assert isinstance(res, OciResult) and isinstance(cfg, Config)

    assert cfg.rootfs == str(bundle / "rootfs") and cfg.readonly is True
    assert cfg.hostname == "runc"
    assert cfg.namespaces == Namespaces(pid=True, mount=True, uts=True, ipc=True,
                                        user=False, cgroup=False)
    assert cfg.network == "none"
    assert cfg.mounts == (
        Mount("/proc", "proc"),
        Mount("/dev", "tmpfs", size=65536 * 1024, mode=0o755),
        Mount("/dev/shm", "tmpfs", size=64 * 2**20, mode=0o1777),
        Mount("/sys", "sysfs", readonly=True),
    )
    assert cfg.masked_paths == tuple(MASKED)
    assert cfg.readonly_paths == tuple(READONLY)
    assert dict(cfg.env) == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                     "/sbin:/bin", "TERM": "xterm"}
    assert cfg.cwd == "/"
    assert cfg.user == "0:0"
    assert cfg.rlimits == (Rlimit("NOFILE", 1024, 1024),)
    assert cfg.capabilities == tuple(CAPS)
    assert cfg.no_new_privs is True
    assert cfg.uid_mappings == () and cfg.gid_mappings == ()
    assert cfg.seccomp == "unconfined"
    assert cfg.annotations is None
    assert not any(cfg.hooks.__dict__.values())
    assert not cfg.resources.any()

    proc = res.process
    assert isinstance(proc, Process)
    assert proc.argv == ["sh"] and proc.env == dict(cfg.env) and proc.cwd == "/"

    w = "\n".join(res.warnings)
    assert "process.terminal" in w
    for skipped in ("/dev/pts", "/dev/mqueue", "/sys/fs/cgroup"):
        assert any(skipped in x and "skipped" in x for x in res.warnings), skipped
    assert any("devpts mounts are not supported" in x for x in res.warnings)
    assert any("/dev)" in x and "no /dev/null" in x for x in res.warnings)
    assert any(x.startswith("linux.resources.devices:") for x in res.warnings)
    # proc/sysfs/tmpfs always get nosuid,nodev (and proc/sysfs noexec): no warning for those
    assert "mounts[3] (/dev/shm): mount options noexec are not supported, ignored" in w
    assert not any(x.startswith(("mounts[1] (/dev): mount options", "mounts[5]"))
                   for x in res.warnings)
    assert not any("unknown key" in x for x in res.warnings)


def test_a_bundle_directory_and_a_parsed_spec_load_the_same(bundle, monkeypatch):
    by_file = config_from_oci(bundle / "config.json")
    by_dir = config_from_oci(str(bundle))
    by_dict = config_from_oci(RUNC_SPEC, bundle=str(bundle))
    assert by_file.config == by_dir.config == by_dict.config
    assert by_file.warnings == by_dir.warnings == by_dict.warnings
    monkeypatch.chdir(bundle)  # a parsed spec without bundle= is relative to the cwd
    assert config_from_oci(RUNC_SPEC).config.rootfs == str(bundle / "rootfs")


def test_loaded_config_round_trips_through_to_dict(bundle):
    cfg = config_from_oci(bundle).config
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_no_process_section_keeps_the_runtime_process_defaults(bundle):
    res = load(spec(process=None), bundle)
    assert res.process is None
    cfg = res.config
    assert cfg.env is None and cfg.cwd is None and cfg.user is None
    assert cfg.rlimits == () and cfg.capabilities is None and cfg.no_new_privs is True
    assert not any(x.startswith("process.") for x in res.warnings)


def test_left_out_sections_are_off_not_the_runtime_defaults(bundle):
    minimal = {"ociVersion": "1.2.0", "root": {"path": "rootfs"},
               "process": {"args": ["true"], "cwd": "/"}}
    with pytest.raises(ConfigError, match='add {"type": "mount"}') as ei:
        load(minimal, bundle)
    assert ei.value.field == "linux.namespaces"
    res = load({**minimal, "linux": {"namespaces": [{"type": "mount"}]}}, bundle)
    cfg = res.config
    assert cfg.readonly is False and cfg.hostname is None
    assert cfg.mounts == () and cfg.masked_paths == () and cfg.readonly_paths == ()
    assert cfg.namespaces == Namespaces(False, True, False, False, False, False)
    assert cfg.network == "host"
    assert cfg.env == {} and res.process is not None and res.process.env == {}
    assert cfg.no_new_privs is False  # OCI's default, not the runtime's
    assert any(x.startswith("process.capabilities: not set") for x in res.warnings)


# ------------------------------------------------------------------------ root

@pytest.mark.parametrize("root", [{"path": "/"}, {"path": "/", "readonly": True}, None])
def test_host_root(bundle, root):
    cfg = load(spec(root=root), bundle).config
    assert cfg.rootfs is None
    assert cfg.readonly is bool(root and root.get("readonly"))


def test_root_path_relative_to_bundle_or_absolute(bundle, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert load(spec(root={"path": "../elsewhere"}), bundle / "rootfs").config.rootfs == \
        str(other)
    assert load(spec(root={"path": str(other)}), "/nonexistent").config.rootfs == str(other)
    with pytest.raises(ConfigError) as ei:
        load(spec(root={"path": "missing"}), bundle)
    assert ei.value.field == "root.path" and "existing directory" in str(ei.value)


# ---------------------------------------------------------------------- mounts

def test_bind_mounts(bundle, tmp_path):
    (bundle / "data").mkdir()
    mounts = [
        {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]},
        {"destination": "/flat", "type": "none", "source": "/etc", "options": ["bind"]},
        {"destination": "opt/x", "source": "/usr", "options": ["rbind", "rw", "nosuid"]},
    ]
    res = load(spec(mounts=mounts), bundle)
    cfg = res.config
    assert cfg.mounts == (
        Mount("/data", "bind", source=str(bundle / "data"), readonly=True, recursive=True),
        Mount("/flat", "bind", source="/etc", recursive=False),
        Mount("/opt/x", "bind", source="/usr", recursive=True),
    )
    assert [x for x in res.warnings if x.startswith("mounts")] == [
        "mounts[2] (/opt/x): mount options nosuid are not supported, ignored"]


def test_tmpfs_options(bundle):
    mounts = [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["size=1g", "mode=1777", "ro"]},
              {"destination": "/run", "type": "tmpfs", "options": ["size=50%"]}]
    res = load(spec(mounts=mounts), bundle)
    assert res.config.mounts == (Mount("/tmp", "tmpfs", size="1G", mode=0o1777, readonly=True),
                                 Mount("/run", "tmpfs"))
    assert format_size(res.config.mounts[0].size) == "1G"
    assert any("mounts[1] (/run)" in x and "size=50%" in x for x in res.warnings)


@pytest.mark.parametrize(("mount", "field"), [
    ({"destination": 5, "type": "tmpfs"}, "mounts[0].destination"),
    ({"destination": "/x", "type": "bind", "options": ["rbind"]}, "mounts[0].source"),
    ({"destination": "/x", "type": "tmpfs", "options": ["mode=rwx"]},
     "mounts[0].options[mode]"),
    ({"destination": "/x", "type": "tmpfs", "options": ["size=lots"]},
     "mounts[0].options[size]"),
    ({"destination": "/x", "type": "tmpfs", "options": "ro"}, "mounts[0].options"),
    ("/x", "mounts[0]"),
])
def test_bad_mounts_name_the_json_path(bundle, mount, field):
    with pytest.raises(ConfigError) as ei:
        load(spec(mounts=[mount]), bundle)
    assert ei.value.field == field


# ------------------------------------------------------------------ namespaces

def test_namespace_with_a_path_is_refused(bundle):
    s = spec()
    s["linux"]["namespaces"][1] = {"type": "network", "path": "/var/run/netns/x"}
    with pytest.raises(ConfigError, match="joining an existing namespace is not supported") \
            as ei:
        load(s, bundle)
    assert ei.value.field == "linux.namespaces[1].path"


def test_no_network_namespace_means_host_network(bundle):
    s = spec()
    s["linux"]["namespaces"] = [ns for ns in s["linux"]["namespaces"]
                                if ns["type"] != "network"] + [{"type": "cgroup"}]
    cfg = load(s, bundle).config
    assert cfg.network == "host" and cfg.namespaces.cgroup


def test_user_namespace_and_mappings(bundle):
    s = spec()
    s["linux"]["namespaces"].append({"type": "user"})
    s["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536},
                                 {"containerID": 65536, "hostID": 5, "size": 1}]
    s["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg = load(s, bundle).config
    assert cfg.namespaces.user
    assert cfg.uid_mappings == (IDMap(0, 100000, 65536),)
    assert cfg.gid_mappings == (IDMap(0, 100000, 65536), IDMap(65536, 5, 1))
    assert cfg.user == "1000:1000"


def test_mappings_without_user_namespace_are_an_error(bundle):
    s = spec()
    s["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    with pytest.raises(ConfigError, match="user namespace") as ei:
        load(s, bundle)
    assert ei.value.field == "linux.uidMappings"


# ------------------------------------------------------------------- resources

@pytest.mark.parametrize(("memory", "expect"), [
    ({"limit": 67108864}, (67108864, 0)),
    ({"limit": 67108864, "swap": 67108864}, (67108864, 0)),
    ({"limit": 67108864, "swap": 134217728}, (67108864, 67108864)),
    ({"limit": 67108864, "swap": -1}, (67108864, None)),
    ({"limit": -1}, (None, 0)),
    ({"swap": -1}, (None, None)),
])
def test_memory_and_swap(bundle, memory, expect):
    res = load(spec(linux__resources={"memory": memory}), bundle)
    r = res.config.resources
    assert (r.memory, r.memory_swap) == expect
    assert format_size(r.memory) in ("64M", "unlimited")
    no_swap_warning = any("memory.swap: not set" in x for x in res.warnings)
    assert no_swap_warning == ("swap" not in memory and memory["limit"] != -1)


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000),
                                                (512, 20)])
def test_cpu_shares_convert_to_weight_like_runc(bundle, shares, weight):
    r = load(spec(linux__resources={"cpu": {"shares": shares}}), bundle).config.resources
    assert r.cpu_weight == weight


def test_cpu_pids_cpuset(bundle):
    res = {"cpu": {"quota": 50000, "period": 100000, "cpus": "0-1"}, "pids": {"limit": 16}}
    r = load(spec(linux__resources=res), bundle).config.resources
    assert (r.cpu, r.cpuset, r.pids) == (0.5, "0-1", 16)
    r = load(spec(linux__resources={"cpu": {"quota": 150000}}), bundle).config.resources
    assert r.cpu == 1.5  # period defaults to 100000 us
    r = load(spec(linux__resources={"cpu": {"quota": -1}, "pids": {"limit": -1}}),
             bundle).config.resources
    assert r.cpu is None and r.pids is None


def test_unsupported_resources_warn(bundle):
    res = load(spec(linux__resources={"memory": {"limit": 1 << 26, "swap": 1 << 26,
                                                 "reservation": 1 << 25},
                                      "blockIO": {"weight": 10},
                                      "cpu": {"mems": "0"}}), bundle)
    w = res.warnings
    for key in ("linux.resources.memory.reservation", "linux.resources.blockIO",
                "linux.resources.cpu.mems"):
        assert any(x.startswith(key + ": not supported") for x in w), key


@pytest.mark.parametrize(("resources", "field"), [
    ({"memory": {"limit": "64M"}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": 1 << 26, "swap": 1 << 25}}, "linux.resources.memory.swap"),
    ({"memory": {"swap": 1 << 26}}, "linux.resources.memory.swap"),
    ({"memory": []}, "linux.resources.memory"),
    ({"pids": {"limit": 1.5}}, "linux.resources.pids.limit"),
    ({"cpu": {"shares": 1}}, "linux.resources.cpu.shares"),
    ({"cpu": {"quota": 1000, "period": 0}}, "linux.resources.cpu.period"),
    ({"cpu": {"quota": "half"}}, "linux.resources.cpu.quota"),
    ({"cpu": {"cpus": "all"}}, "linux.resources.cpu.cpus"),
])
def test_bad_resources_name_the_json_path(bundle, resources, field):
    with pytest.raises(ConfigError) as ei:
        load(spec(linux__resources=resources), bundle)
    assert ei.value.field == field
    assert field in str(ei.value)


# --------------------------------------------------------------------- process

def test_process_fields(bundle):
    proc = {"args": ["python3", "-c", "pass"], "cwd": "/srv",
            "env": ["A=1", "B=x=y", "EMPTY="],
            "user": {"uid": 1000, "gid": 100, "additionalGids": [5]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 128},
                        {"type": "RLIMIT_CORE", "soft": 0, "hard": 18446744073709551615}],
            "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                             "permitted": ["cap_setuid"], "ambient": ["CAP_KILL"]},
            "apparmorProfile": "docker-default"}
    res = load(spec(process=proc), bundle)
    cfg = res.config
    assert dict(cfg.env) == {"A": "1", "B": "x=y", "EMPTY": ""}
    assert cfg.cwd == "/srv" and cfg.user == "1000:100"
    assert cfg.rlimits == (Rlimit("NOFILE", 64, 128), Rlimit("CORE", 0, None))
    assert cfg.capabilities == ("CAP_CHOWN", "CAP_KILL", "CAP_SETUID")
    assert cfg.no_new_privs is False
    assert res.process is not None
    assert res.process.argv == ["python3", "-c", "pass"] and res.process.cwd == "/srv"
    w = res.warnings
    for key in ("process.user.additionalGids", "process.capabilities.ambient",
                "process.apparmorProfile"):
        assert any(x.startswith(key + ":") for x in w), key
    assert not any(x.startswith("process.terminal") for x in w)


@pytest.mark.parametrize(("process", "field"), [
    ({"args": []}, "process.args"),
    ({"args": "sh"}, "process.args"),
    ({"args": ["sh", 1]}, "process.args[1]"),
    ({"args": ["sh"], "env": ["NOEQUALS"]}, "process.env[0]"),
    ({"args": ["sh"], "env": {"A": "1"}}, "process.env"),
    ({"args": ["sh"], "cwd": "relative"}, "process.cwd"),
    ({"args": ["sh"], "user": {"uid": "root"}}, "process.user.uid"),
    ({"args": ["sh"], "rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]},
     "process.rlimits[0].type"),
    ({"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 2, "hard": 1}]},
     "process.rlimits[0]"),
    ({"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": -1, "hard": 1}]},
     "process.rlimits[0].soft"),
    ({"args": ["sh"], "capabilities": {"bounding": "CAP_KILL"}},
     "process.capabilities.bounding"),
    ({"args": ["sh"], "noNewPrivileges": "true"}, "process.noNewPrivileges"),
])
def test_bad_process_names_the_json_path(bundle, process, field):
    with pytest.raises(ConfigError) as ei:
        load(spec(process=process), bundle)
    assert ei.value.field == field


@pytest.mark.parametrize(("changes", "field"), [
    ({"hostname": "not a hostname"}, "hostname"),
    ({"hostname": 7}, "hostname"),
    ({"root": {"path": "rootfs", "readonly": "yes"}}, "root.readonly"),
    ({"linux__maskedPaths": ["relative"]}, "linux.maskedPaths"),
    ({"linux__namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "pidns"}]},
     "linux.namespaces[2].type"),
    ({"linux__namespaces": [{"type": "pid"}, {"type": "mount"}]}, "hostname"),
    ({"linux__uidMappings": [{"containerID": 0, "hostID": 0, "size": 0}]},
     "linux.uidMappings[0]"),
    ({"linux__gidMappings": [{"containerID": 0, "hostID": -1, "size": 1}]},
     "linux.gidMappings[0]"),
    ({"annotations": {"a": 1}}, "annotations[a]"),
    ({"linux": "yes"}, "linux"),
])
def test_bad_values_elsewhere_name_the_json_path(bundle, changes, field):
    with pytest.raises(ConfigError) as ei:
        load(spec(**changes), bundle)
    assert ei.value.field == field


def test_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        config_from_oci(tmp_path / "nope.json")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config_from_oci(bad)
    bad.write_text("[]")
    with pytest.raises(ConfigError, match="JSON object at the top level"):
        config_from_oci(bad)


# ---------------------------------------------------------- hooks, annotations

def test_hooks_mapping(bundle):
    hooks = {
        "prestart": [{"path": "/usr/bin/fix-mounts", "args": ["fix-mounts", "arg1", "arg2"],
                      "env": ["key1=value1"]}],
        "createRuntime": [{"path": "/usr/bin/setup-network"}],
        "poststart": [{"path": "/usr/bin/notify-start", "timeout": 5}],
        "poststop": [{"path": "/usr/sbin/cleanup.sh", "args": ["cleanup.sh", "-f"]}],
        "createContainer": [{"path": "/usr/bin/inside"}],
    }
    res = load(spec(hooks=hooks), bundle)
    h = res.config.hooks
    assert h.prestart == (Hook("/usr/bin/fix-mounts", ("fix-mounts", "arg1", "arg2"),
                               ("key1=value1",)),)
    assert h.create_runtime == (Hook("/usr/bin/setup-network"),)
    assert h.poststart == (Hook("/usr/bin/notify-start", timeout=5),)
    assert h.poststop == (Hook("/usr/sbin/cleanup.sh", ("cleanup.sh", "-f")),)
    assert any(x.startswith("hooks.createContainer: not supported") for x in res.warnings)


@pytest.mark.parametrize(("hook", "field"), [
    ({"path": "relative/hook"}, "hooks.poststop[0].path"),
    ({"args": ["x"]}, "hooks.poststop[0].path"),
    ({"path": "/bin/true", "timeout": 0}, "hooks.poststop[0].timeout"),
    ({"path": "/bin/true", "timeout": "5s"}, "hooks.poststop[0].timeout"),
    ({"path": "/bin/true", "env": "A=1"}, "hooks.poststop[0].env"),
])
def test_bad_hooks_name_the_json_path(bundle, hook, field):
    with pytest.raises(ConfigError) as ei:
        load(spec(hooks={"poststop": [hook]}), bundle)
    assert ei.value.field == field


def test_annotations(bundle):
    cfg = load(spec(annotations={"org.example.key": "v", "b": ""}), bundle).config
    assert dict(cfg.annotations) == {"org.example.key": "v", "b": ""}


# --------------------------------------------------------- warnings, seccomp

def test_unknown_and_unsupported_keys_warn_not_fail(bundle):
    s = spec(futureThing={"a": 1}, domainname="example.org", linux__sysctl={"a.b": "1"},
             linux__someNewKnob=True, linux__cgroupsPath="/x")
    res = load(s, bundle)
    w = res.warnings
    assert "futureThing: unknown key, ignored" in w
    assert "linux.someNewKnob: unknown key, ignored" in w
    for key in ("domainname", "linux.sysctl", "linux.cgroupsPath"):
        assert f"{key}: not supported by this runtime, ignored" in w


def test_inline_seccomp_warns_and_writes_nothing(bundle):
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
    before = sorted(os.listdir(bundle))
    res = load(spec(linux__seccomp=seccomp), bundle)
    assert res.config.seccomp == "unconfined"
    assert any(x.startswith("linux.seccomp: inline OCI seccomp profiles are not supported")
               for x in res.warnings)
    assert sorted(os.listdir(bundle)) == before
    assert not any(x.startswith("linux.seccomp") for x in load(spec(), bundle).warnings)
    with pytest.raises(ConfigError) as ei:
        load(spec(linux__seccomp="default"), bundle)
    assert ei.value.field == "linux.seccomp"


# ---------------------------------------------------------------- end to end

@pytest.mark.host  # starts a container itself
def test_a_loaded_spec_runs(tmp_path):
    host = socket.gethostname()
    s = {
        "ociVersion": "1.2.0",
        "root": {"path": "/", "readonly": True},
        "hostname": "oci-box",
        "process": {"args": ["sh", "-c", "hostname; echo $FROM_SPEC; pwd"], "cwd": "/",
                    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FROM_SPEC=yes"],
                    "user": {"uid": 0, "gid": 0},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                    "options": ["mode=1777", "size=16m"]}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts",
                                                        "mount")],
                  "maskedPaths": MASKED, "readonlyPaths": READONLY},
    }
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(s))
    res = config_from_oci(tmp_path / "bundle" / "config.json")
    assert res.config.rootfs is None and res.process is not None
    p = res.process
    container = Factory(tmp_path / "state").create("oci", res.config)
    try:
        status = container.run(Process(p.argv, env=p.env, cwd=p.cwd, stdout=PIPE,
                                       stderr=PIPE, timeout=30))
    finally:
        container.destroy()
    assert status.ok, (status.describe(), status.stderr)
    assert status.stdout.decode().split() == ["oci-box", "yes", "/"]
    assert socket.gethostname() == host
