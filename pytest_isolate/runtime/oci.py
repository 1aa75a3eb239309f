"""Load an OCI runtime-spec ``config.json`` into a :class:`~.config.Config`.

    result = config_from_oci("bundle/config.json")
    result.config      # the Config
    result.process     # a Process from the spec's ``process`` section, or None
    result.warnings    # what the spec asks for that this runtime does not do

The spec is authoritative: what it leaves out is off (no mounts, no masked paths,
no hostname, ``noNewPrivileges`` false), not this runtime's defaults. Two exceptions,
both reported as warnings: an absent ``linux.resources.memory.swap`` keeps the
runtime's default of no swap, and an absent ``process.capabilities`` gives the
runtime's default capability set (runc would keep every capability). A spec without
a ``process`` section says nothing about the process: ``env``, ``cwd``, ``user``,
``capabilities`` and ``no_new_privs`` then keep the runtime's defaults.

Settings this runtime cannot honour are never dropped silently: each becomes a
warning, and one that would *weaken* the container if ignored (joining an existing
namespace) is an error. Wrong types raise :class:`~.errors.ConfigError` naming the
JSON path (``linux.resources.memory.limit``) and what to write instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .config import (
    Config,
    Hook,
    Hooks,
    IDMap,
    Mount,
    MountType,
    Namespaces,
    Resources,
    Rlimit,
)
from .errors import ConfigError
from .process import Process
from .units import parse_size

__all__ = ["OciResult", "config_from_oci"]

# Keys this module reads, or knows and deliberately ignores (with a warning saying so).
_TOP_KEYS = {"ociVersion", "root", "mounts", "process", "hostname", "hooks",
             "annotations", "linux"}
_TOP_UNSUPPORTED = {"domainname", "solaris", "windows", "vm", "zos"}
_LINUX_KEYS = {"namespaces", "uidMappings", "gidMappings", "maskedPaths", "readonlyPaths",
               "resources", "seccomp"}
_LINUX_UNSUPPORTED = {"timeOffsets", "devices", "netDevices", "cgroupsPath", "sysctl",
                      "rootfsPropagation", "mountLabel", "intelRdt", "personality",
                      "memoryPolicy"}
_PROCESS_KEYS = {"terminal", "args", "env", "cwd", "user", "rlimits", "capabilities",
                 "noNewPrivileges"}
_PROCESS_UNSUPPORTED = {"consoleSize", "commandLine", "apparmorProfile", "oomScoreAdj",
                        "scheduler", "selinuxLabel", "ioPriority", "execCPUAffinity"}
_HOOK_KINDS = {"prestart": "prestart", "createRuntime": "create_runtime",
               "poststart": "poststart", "poststop": "poststop"}
_HOOK_UNSUPPORTED = {"createContainer", "startContainer"}
_NAMESPACE_TYPES = ("pid", "mount", "uts", "ipc", "user", "cgroup", "network", "time")
_CAP_SETS = ("bounding", "effective", "permitted")
# Mount options that only say "the default" or are implied by how we mount.
_HARMLESS_OPTIONS = {"rw", "bind", "rbind", "relatime", "strictatime", "private", "rprivate",
                     "defaults"}
# Flags bootstrap always sets on the filesystems it mounts itself (not on binds), so a
# spec asking for them is already served.
_IMPLIED_OPTIONS = {"proc": {"nosuid", "nodev", "noexec"}, "sysfs": {"nosuid", "nodev", "noexec"},
                    "tmpfs": {"nosuid", "nodev"}, "bind": set()}
_RLIM_INFINITY = 2**64 - 1
_UINT32_MAX = 2**32 - 1
# Config's own field names -> where the value came from in config.json, so that an
# error raised while building the Config still names the JSON the user wrote.
_CONFIG_FIELD_PATHS = {
    "rootfs": "root.path",
    "readonly": "root.readonly",
    "hostname": "hostname",
    "uid_mappings": "linux.uidMappings",
    "gid_mappings": "linux.gidMappings",
    "env": "process.env",
    "cwd": "process.cwd",
    "user": "process.user",
    "rlimits": "process.rlimits",
    "masked_paths": "linux.maskedPaths",
    "readonly_paths": "linux.readonlyPaths",
    "annotations": "annotations",
    "no_new_privs": "process.noNewPrivileges",
}


@dataclass(frozen=True)
class OciResult:
    """What :func:`config_from_oci` read.

    ``process`` is ``None`` when the spec has no ``process`` section; otherwise it is
    ``Process(args, env=..., cwd=...)`` with the host's stdio (build a new ``Process``
    from its ``argv``/``env``/``cwd`` to capture output). ``warnings`` lists, in spec
    order, each setting that was ignored or only partly honoured.
    """

    config: Config
    process: Process | None
    warnings: tuple[str, ...]


def config_from_oci(spec: Mapping[str, Any] | str | os.PathLike[str], *,
                    bundle: str | os.PathLike[str] | None = None) -> OciResult:
    """Translate an OCI runtime spec into a :class:`Config` (and its :class:`Process`).

    ``spec`` is a parsed ``config.json``, or the path of one, or of a bundle directory
    holding one. ``bundle`` is the directory relative paths (``root.path``, bind-mount
    sources) are resolved against; it defaults to the file's directory, or to the
    current directory for a parsed spec, as with ``runc run``.
    """
    if isinstance(spec, Mapping):
        data: Any = spec
        base = os.path.abspath(bundle if bundle is not None else os.getcwd())
    else:
        path = os.fspath(spec)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise ConfigError("config.json", path,
                              f"cannot be read ({e.strerror}): give the path of an OCI "
                              "config.json or of a bundle directory") from None
        except ValueError as e:
            raise ConfigError("config.json", path, f"is not valid JSON: {e}") from None
        base = os.path.abspath(bundle if bundle is not None else os.path.dirname(path))
    return _Reader(base).read(data)


# ---------------------------------------------------------------- type checks

def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, value, "must be a JSON object ({...}) or left out")
    return value


def _list(value: Any, path: str, what: str = "entries") -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, value, f"must be a JSON array of {what} or left out")
    return value


def _str(value: Any, path: str, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise ConfigError(path, value, f"must be {what}")
    return value


def _strings(value: Any, path: str, what: str = "strings") -> list[str]:
    items = _list(value, path, what)
    for i, item in enumerate(items):
        _str(item, f"{path}[{i}]")
    return items


def _int(value: Any, path: str, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(path, value, f"must be {what}")
    return value


def _bool(value: Any, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(path, value, "must be true or false (a JSON boolean, not a string)")
    return value


@contextmanager
def _at(path: str) -> Iterator[None]:
    """Re-raise a ConfigError from a Config part under the JSON path it came from."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(path, e.value, e.allowed) from e


def _config_path(field: str) -> str:
    head = field.split("[", 1)[0]
    for key, path in _CONFIG_FIELD_PATHS.items():
        if field == key or head == key:
            return path
    return field


def _shares_to_weight(shares: int) -> int:
    # runc's ConvertCPUSharesToCgroupV2Value: [2, 262144] maps linearly onto [1, 10000].
    return 1 + ((shares - 2) * 9999) // 262142


class _Reader:
    """One pass over a spec; collects warnings as it goes."""

    def __init__(self, bundle: str) -> None:
        self.bundle = bundle
        self.warnings: list[str] = []
        self.namespace_types: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def check_keys(self, obj: Mapping[str, Any], prefix: str, known: set[str],
                   unsupported: set[str]) -> None:
        for key in obj:
            where = f"{prefix}{key}"
            if key in unsupported:
                if obj[key] not in (None, [], {}, ""):
                    self.warn(f"{where}: not supported by this runtime, ignored")
            elif key not in known:
                self.warn(f"{where}: unknown key, ignored")

    # ------------------------------------------------------------ the whole spec

    def read(self, data: Any) -> OciResult:
        if not isinstance(data, Mapping):
            raise ConfigError("config.json", data, "must be a JSON object at the top level")
        self.check_keys(data, "", _TOP_KEYS, _TOP_UNSUPPORTED)
        if "ociVersion" in data:
            _str(data["ociVersion"], "ociVersion", "a version string like '1.2.0'")
        linux = _obj(data.get("linux"), "linux")
        self.check_keys(linux, "linux.", _LINUX_KEYS, _LINUX_UNSUPPORTED)

        kw: dict[str, Any] = {}
        kw.update(self.root(_obj(data.get("root"), "root")))
        hostname = data.get("hostname")
        kw["hostname"] = None if hostname in (None, "") else _str(hostname, "hostname")
        kw["mounts"] = tuple(self.mounts(_list(data.get("mounts"), "mounts", "mount objects")))
        kw.update(self.namespaces(_list(linux.get("namespaces"), "linux.namespaces",
                                        "namespace objects")))
        for key, name in (("uidMappings", "uid_mappings"), ("gidMappings", "gid_mappings")):
            kw[name] = tuple(self.id_mappings(linux.get(key), f"linux.{key}"))
        kw["masked_paths"] = tuple(_strings(linux.get("maskedPaths"), "linux.maskedPaths",
                                            "absolute paths"))
        kw["readonly_paths"] = tuple(_strings(linux.get("readonlyPaths"),
                                              "linux.readonlyPaths", "absolute paths"))
        kw["resources"] = self.resources(_obj(linux.get("resources"), "linux.resources"))
        kw["seccomp"] = "unconfined"  # an OCI spec without linux.seccomp has no filter
        if linux.get("seccomp") is not None:
            _obj(linux["seccomp"], "linux.seccomp")
            self.warn("linux.seccomp: inline OCI seccomp profiles are not supported yet and "
                      "were not applied; set Config.seccomp to a profile name or the path "
                      "of a JSON profile file instead")
        kw["hooks"] = self.hooks(_obj(data.get("hooks"), "hooks"))
        annotations = _obj(data.get("annotations"), "annotations")
        for key, value in annotations.items():
            _str(value, f"annotations[{key}]")
        kw["annotations"] = dict(annotations) or None

        process: Process | None = None
        if data.get("process") is not None:  # else Config's process defaults stay
            proc_kw, argv = self.process(_obj(data["process"], "process"))
            kw.update(proc_kw)
            with _at("process"):
                process = Process(argv, env=kw["env"], cwd=kw["cwd"])

        try:
            config = Config(**kw)
        except ConfigError as e:
            if e.field == "namespaces.mount":
                raise ConfigError("linux.namespaces", self.namespace_types,
                                  "root, mounts and masked/readonly paths need a mount "
                                  "namespace: add {\"type\": \"mount\"}") from e
            raise ConfigError(_config_path(e.field), e.value, e.allowed) from e
        return OciResult(config, process, tuple(self.warnings))

    # ------------------------------------------------------------------ sections

    def root(self, root: Mapping[str, Any]) -> dict[str, Any]:
        self.check_keys(root, "root.", {"path", "readonly"}, set())
        path = root.get("path")
        rootfs: str | None = None
        if path is not None:
            _str(path, "root.path", "a directory, absolute or relative to the bundle")
            if path == "":
                raise ConfigError("root.path", path,
                                  "must name a directory (\"/\" for the host root)")
            full = os.path.normpath(os.path.join(self.bundle, path))
            rootfs = None if full == "/" else full
            if rootfs is not None and not os.path.isdir(rootfs):
                raise ConfigError("root.path", path,
                                  f"must be an existing directory ({full} is not one)")
        return {"rootfs": rootfs, "readonly": _bool(root.get("readonly"), "root.readonly")}

    def mounts(self, items: list[Any]) -> Iterator[Mount]:
        for i, item in enumerate(items):
            where = f"mounts[{i}]"
            m = _obj(item, where)
            self.check_keys(m, f"{where}.", {"destination", "type", "source", "options"},
                            {"uidMappings", "gidMappings"})
            dest = _str(m.get("destination"), f"{where}.destination",
                        "the mount point inside the container, like '/data'")
            dest = os.path.normpath(os.path.join("/", dest))
            mtype = m.get("type")
            if mtype is not None:
                _str(mtype, f"{where}.type", "a filesystem type like 'tmpfs' or 'bind'")
            options = _strings(m.get("options"), f"{where}.options", "mount options")
            source = m.get("source")
            if source is not None:
                _str(source, f"{where}.source")
            label = f"{where} ({dest})"

            # The spec: a mount is a bind mount when its options say bind or rbind.
            kind: MountType
            if "bind" in options or "rbind" in options or mtype == "bind":
                kind = "bind"
            elif mtype == "tmpfs" or mtype == "proc" or mtype == "sysfs":
                kind = mtype
            else:
                self.warn(f"{label}: {mtype or 'untyped'} mounts are not supported by this "
                          "runtime, skipped")
                continue

            readonly = "ro" in options
            size: str | None = None
            mode: int | None = None
            ignored: list[str] = []
            for opt in options:
                name, _, value = opt.partition("=")
                if opt == "ro" or opt in _HARMLESS_OPTIONS or opt in _IMPLIED_OPTIONS[kind]:
                    continue
                if kind == "tmpfs" and name == "size" and value:
                    if value.endswith("%"):
                        ignored.append(opt)
                    else:
                        with _at(f"{where}.options[size]"):
                            parse_size(value)
                        size = value
                elif kind == "tmpfs" and name == "mode" and value:
                    try:
                        mode = int(value, 8)
                    except ValueError:
                        raise ConfigError(f"{where}.options[mode]", value,
                                          "an octal permission like mode=1777") from None
                else:
                    ignored.append(opt)
            if ignored:
                self.warn(f"{label}: mount options {', '.join(ignored)} are not supported, "
                          "ignored")

            src: str | None = None
            if kind == "bind":
                if not source:
                    raise ConfigError(f"{where}.source", source,
                                      "a bind mount needs a source path (absolute or "
                                      "relative to the bundle)")
                src = os.path.normpath(os.path.join(self.bundle, source))
            elif kind == "tmpfs" and dest == "/dev":
                self.warn(f"{label}: runc fills /dev with device nodes; this runtime does "
                          "not, so a tmpfs on /dev leaves it empty (no /dev/null)")
            with _at(where):
                yield Mount(dest, kind, source=src, readonly=readonly, size=size, mode=mode,
                            recursive="bind" not in options or "rbind" in options)

    def namespaces(self, items: list[Any]) -> dict[str, Any]:
        seen: dict[str, bool] = {}
        for i, item in enumerate(items):
            where = f"linux.namespaces[{i}]"
            ns = _obj(item, where)
            self.check_keys(ns, f"{where}.", {"type", "path"}, set())
            kind = ns.get("type")
            if kind not in _NAMESPACE_TYPES:
                raise ConfigError(f"{where}.type", kind,
                                  f"one of {', '.join(_NAMESPACE_TYPES)}")
            if ns.get("path"):
                raise ConfigError(f"{where}.path", ns["path"],
                                  "joining an existing namespace is not supported: remove "
                                  "the path to get a new namespace, or leave the "
                                  f"{kind} namespace out to share the host's")
            if kind in seen:
                raise ConfigError(f"{where}.type", kind, "each namespace type at most once")
            seen[kind] = True
            self.namespace_types.append(kind)
        if seen.pop("time", False):
            self.warn("linux.namespaces: time namespaces are not supported, the container "
                      "shares the host's clocks")
        network = "none" if seen.pop("network", False) else "host"
        return {"namespaces": Namespaces(**{k: k in seen for k in
                                            ("pid", "mount", "uts", "ipc", "user", "cgroup")}),
                "network": network}

    def id_mappings(self, value: Any, path: str) -> Iterator[IDMap]:
        for i, item in enumerate(_list(value, path, "{containerID, hostID, size} objects")):
            where = f"{path}[{i}]"
            m = _obj(item, where)
            self.check_keys(m, f"{where}.", {"containerID", "hostID", "size"}, set())
            ids = [_int(m.get(key), f"{where}.{key}", "a non-negative 32-bit integer")
                   for key in ("containerID", "hostID", "size")]
            with _at(where):
                yield IDMap(*ids)

    def resources(self, res: Mapping[str, Any]) -> Resources:
        self.check_keys(res, "linux.resources.", {"memory", "cpu", "pids"},
                        {"devices", "blockIO", "hugepageLimits", "network", "rdma",
                         "unified"})
        kw: dict[str, Any] = {}

        mem = _obj(res.get("memory"), "linux.resources.memory")
        self.check_keys(mem, "linux.resources.memory.", {"limit", "swap"},
                        {"reservation", "kernel", "kernelTCP", "swappiness",
                         "disableOOMKiller", "useHierarchy", "checkBeforeUpdate"})
        limit = swap = None
        bytes_or_unlimited = "an integer number of bytes, or -1 for unlimited"
        if mem.get("limit") is not None:
            limit = _int(mem["limit"], "linux.resources.memory.limit", bytes_or_unlimited)
            if limit < -1:
                raise ConfigError("linux.resources.memory.limit", limit, bytes_or_unlimited)
            limit = None if limit in (0, -1) else limit  # runc: 0 is "not set"
            kw["memory"] = limit
        if mem.get("swap") is not None:
            # OCI's swap is memory+swap together (cgroup v1's memsw), ours is swap alone.
            swap = _int(mem["swap"], "linux.resources.memory.swap",
                        "memory+swap in bytes (at least the memory limit), or -1 for "
                        "unlimited swap")
            if swap == -1:
                kw["memory_swap"] = None
            elif limit is None:
                raise ConfigError("linux.resources.memory.swap", swap,
                                  "a swap limit needs a memory limit: set "
                                  "linux.resources.memory.limit too, or swap to -1")
            elif swap < limit:
                raise ConfigError("linux.resources.memory.swap", swap,
                                  f"is memory+swap, so it must be at least memory.limit "
                                  f"({limit}), or -1 for unlimited swap")
            else:
                kw["memory_swap"] = swap - limit
        elif limit is not None:
            self.warn("linux.resources.memory.swap: not set, the container gets no swap "
                      "(set it to -1 for unlimited swap)")

        pids = _obj(res.get("pids"), "linux.resources.pids")
        self.check_keys(pids, "linux.resources.pids.", {"limit"}, set())
        if pids.get("limit") is not None:
            n = _int(pids["limit"], "linux.resources.pids.limit",
                     "a number of processes, or 0 or -1 for unlimited")
            kw["pids"] = n if n > 0 else None

        cpu = _obj(res.get("cpu"), "linux.resources.cpu")
        self.check_keys(cpu, "linux.resources.cpu.", {"quota", "period", "shares", "cpus"},
                        {"mems", "realtimeRuntime", "realtimePeriod", "burst", "idle"})
        if cpu.get("quota") is not None:
            quota = _int(cpu["quota"], "linux.resources.cpu.quota",
                         "microseconds of CPU time per period, or -1 for unlimited")
            period = 100_000
            if cpu.get("period") is not None:
                period = _int(cpu["period"], "linux.resources.cpu.period",
                              "a period in microseconds, like 100000")
                if period <= 0:
                    raise ConfigError("linux.resources.cpu.period", period,
                                      "a positive period in microseconds, like 100000")
            if quota > 0:
                kw["cpu"] = quota / period
            elif quota not in (0, -1):
                raise ConfigError("linux.resources.cpu.quota", quota,
                                  "microseconds of CPU time per period, or -1 for unlimited")
        elif cpu.get("period") is not None:
            self.warn("linux.resources.cpu.period: ignored without cpu.quota")
        if cpu.get("shares") is not None:
            shares = _int(cpu["shares"], "linux.resources.cpu.shares",
                          "an integer from 2 to 262144 (1024 is the default weight)")
            if shares != 0:
                if not 2 <= shares <= 262144:
                    raise ConfigError("linux.resources.cpu.shares", shares,
                                      "an integer from 2 to 262144 (1024 is the default "
                                      "weight)")
                kw["cpu_weight"] = _shares_to_weight(shares)
        if cpu.get("cpus"):
            kw["cpuset"] = _str(cpu["cpus"], "linux.resources.cpu.cpus",
                                "a CPU list like '0-3' or '0,2'")

        try:
            return Resources(**kw)
        except ConfigError as e:
            path = {"memory": "memory.limit", "memory_swap": "memory.swap",
                    "pids": "pids.limit", "cpu": "cpu.quota", "cpu_weight": "cpu.shares",
                    "cpuset": "cpu.cpus"}.get(e.field, e.field)
            raise ConfigError(f"linux.resources.{path}", e.value, e.allowed) from e

    def hooks(self, hooks: Mapping[str, Any]) -> Hooks:
        self.check_keys(hooks, "hooks.", set(_HOOK_KINDS), _HOOK_UNSUPPORTED)
        kw: dict[str, tuple[Hook, ...]] = {}
        for key, name in _HOOK_KINDS.items():
            out = []
            for i, item in enumerate(_list(hooks.get(key), f"hooks.{key}", "hook objects")):
                where = f"hooks.{key}[{i}]"
                h = _obj(item, where)
                self.check_keys(h, f"{where}.", {"path", "args", "env", "timeout"}, set())
                path = _str(h.get("path"), f"{where}.path", "the absolute path of an executable")
                if not path.startswith("/"):
                    raise ConfigError(f"{where}.path", path,
                                      "must be an absolute path (hooks run in the host's "
                                      "namespaces)")
                args = _strings(h.get("args"), f"{where}.args", "strings (the whole argv)")
                env = _strings(h.get("env"), f"{where}.env", "'NAME=value' strings")
                timeout = None
                if h.get("timeout") is not None:
                    timeout = _int(h["timeout"], f"{where}.timeout",
                                   "a positive whole number of seconds")
                    if timeout <= 0:
                        raise ConfigError(f"{where}.timeout", timeout,
                                          "a positive whole number of seconds")
                with _at(where):
                    out.append(Hook(path=path, args=tuple(args), env=tuple(env),
                                    timeout=timeout))
            kw[name] = tuple(out)
        return Hooks(**kw)

    def process(self, proc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        self.check_keys(proc, "process.", _PROCESS_KEYS, _PROCESS_UNSUPPORTED)
        kw: dict[str, Any] = {}
        if _bool(proc.get("terminal"), "process.terminal"):
            self.warn("process.terminal: no pseudo-terminal is allocated; the process gets "
                      "the stdio the Process is given")
        argv = _strings(proc.get("args"), "process.args", "strings (the argv to exec)")
        if not argv:
            raise ConfigError("process.args", proc.get("args"),
                              "must be a non-empty array of strings, like [\"sh\"]")

        env: dict[str, str] = {}
        for i, entry in enumerate(_strings(proc.get("env"), "process.env",
                                           "'NAME=value' strings")):
            name, eq, value = entry.partition("=")
            if not eq or not name:
                raise ConfigError(f"process.env[{i}]", entry, "must be 'NAME=value'")
            env[name] = value
        kw["env"] = env

        cwd = _str(proc.get("cwd", "/"), "process.cwd", "an absolute path")
        if not cwd.startswith("/"):
            raise ConfigError("process.cwd", cwd, "must be an absolute path, like '/'")
        kw["cwd"] = cwd

        user = _obj(proc.get("user"), "process.user")
        self.check_keys(user, "process.user.", {"uid", "gid", "umask", "additionalGids"},
                        {"username"})
        if user:
            uid = _int(user.get("uid", 0), "process.user.uid", "a numeric uid")
            gid = _int(user.get("gid", 0), "process.user.gid", "a numeric gid")
            for label, num in (("uid", uid), ("gid", gid)):
                if not 0 <= num < _UINT32_MAX:
                    raise ConfigError(f"process.user.{label}", num,
                                      f"a non-negative 32-bit {label}")
            kw["user"] = f"{uid}:{gid}"
            if user.get("umask") is not None:
                self.warn("process.user.umask: not supported, the umask is inherited")
            if _list(user.get("additionalGids"), "process.user.additionalGids", "gids"):
                self.warn("process.user.additionalGids: supplementary groups are not "
                          "supported, ignored")

        rlimits = []
        for i, item in enumerate(_list(proc.get("rlimits"), "process.rlimits",
                                       "{type, soft, hard} objects")):
            where = f"process.rlimits[{i}]"
            r = _obj(item, where)
            self.check_keys(r, f"{where}.", {"type", "soft", "hard"}, set())
            rtype = _str(r.get("type"), f"{where}.type", "a limit name like 'RLIMIT_NOFILE'")
            values = []
            for key in ("soft", "hard"):
                v = _int(r.get(key), f"{where}.{key}",
                         f"a non-negative integer ({_RLIM_INFINITY} for unlimited)")
                if not 0 <= v <= _RLIM_INFINITY:
                    raise ConfigError(f"{where}.{key}", v,
                                      f"a non-negative integer ({_RLIM_INFINITY} for "
                                      "unlimited)")
                values.append(None if v == _RLIM_INFINITY else v)
            soft, hard = values
            if hard is not None and (soft is None or soft > hard):
                raise ConfigError(where, (r["soft"], r["hard"]), "soft must not exceed hard")
            with _at(f"{where}.type"):
                rlimits.append(Rlimit(rtype, soft, hard))
        kw["rlimits"] = tuple(rlimits)

        if proc.get("capabilities") is None:
            kw["capabilities"] = None
            self.warn("process.capabilities: not set; runc would keep every capability, "
                      "this runtime gives its default set")
        else:
            caps = _obj(proc["capabilities"], "process.capabilities")
            self.check_keys(caps, "process.capabilities.", set(_CAP_SETS),
                            {"inheritable", "ambient"})
            names: set[str] = set()
            for key in _CAP_SETS:
                names.update(n.upper() for n in _strings(
                    caps.get(key), f"process.capabilities.{key}",
                    "capability names like 'CAP_KILL'"))
            kw["capabilities"] = tuple(sorted(names))
        kw["no_new_privs"] = _bool(proc.get("noNewPrivileges"), "process.noNewPrivileges")
        return kw, argv
