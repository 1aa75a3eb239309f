"""The frozen description of one container, and its validator.

A ``Config`` is plain data: it says *what* a container is, never how to build it.
Values are normalised on creation ("64M" -> 67108864) and checked; a bad value
raises :class:`~pytest_isolate.runtime.errors.ConfigError` naming the field, the
value and what is allowed. Soft problems (a setting that works but probably does
not do what was meant) are returned by :meth:`Config.validate` as warnings.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from . import linux
from .errors import ConfigError
from .units import parse_cpu, parse_size

__all__ = [
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_MOUNTS",
    "DEFAULT_READONLY_PATHS",
    "Config",
    "Hook",
    "Hooks",
    "IDMap",
    "Mount",
    "Namespaces",
    "Resources",
    "Rlimit",
]

# The paths runc's default spec hides or makes read-only under /proc and /sys.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    # sysfs, cgroupfs included: a container must not move itself out of its cgroups or
    # change the host's settings there (runc mounts sysfs read-only for the same reason)
    "/sys",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_ENV_NAME = re.compile(r"^[^=\x00]+$")
MountType = Literal["bind", "tmpfs", "proc", "sysfs"]
_MOUNT_TYPES = ("bind", "tmpfs", "proc", "sysfs")
_RLIMITS = {
    name[len("RLIMIT_"):]: getattr(resource, name)
    for name in dir(resource)
    if name.startswith("RLIMIT_")
}


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _abs_path(fieldname: str, value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise ConfigError(fieldname, value, "must be an absolute path")
    return os.path.normpath(value)


@dataclass(frozen=True)
class Namespaces:
    """Which namespaces the container gets (the network namespace is ``Config.network``)."""

    pid: bool = True
    mount: bool = True
    uts: bool = True
    ipc: bool = True
    user: bool = False
    cgroup: bool = False

    def clone_flags(self) -> int:
        flags = 0
        for name, flag in (("pid", linux.CLONE_NEWPID), ("mount", linux.CLONE_NEWNS),
                           ("uts", linux.CLONE_NEWUTS), ("ipc", linux.CLONE_NEWIPC),
                           ("user", linux.CLONE_NEWUSER), ("cgroup", linux.CLONE_NEWCGROUP)):
            if getattr(self, name):
                flags |= flag
        return flags

    def enabled(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name))


@dataclass(frozen=True)
class Mount:
    """A mount made inside the container, in order, after the root is in place.

    ``bind``: ``source`` (a host path) at ``destination``; ``tmpfs`` with an optional
    ``size`` ("64M"), ``mode`` and owner (``uid``, ``gid``); ``proc``: a new procfs of
    the container's PID namespace; ``sysfs``: a new sysfs, which shows the container's
    network devices only.
    """

    destination: str
    type: MountType = "bind"
    source: str | None = None
    readonly: bool = False
    size: int | str | None = None
    mode: int | None = None
    recursive: bool = True
    uid: int | None = None
    gid: int | None = None

    def __post_init__(self) -> None:
        _set(self, "destination", _abs_path("mounts.destination", self.destination))
        if self.destination == "/":
            raise ConfigError("mounts.destination", "/", "the root is not a mount target: "
                                                        "use Config(rootfs=...) instead")
        if self.type not in _MOUNT_TYPES:
            raise ConfigError(f"mounts[{self.destination}].type", self.type,
                              f"must be one of {', '.join(_MOUNT_TYPES)}")
        if self.type == "bind":
            if self.source is None:
                raise ConfigError(f"mounts[{self.destination}].source", None,
                                  "a bind mount needs a host source path")
            _set(self, "source", _abs_path(f"mounts[{self.destination}].source", self.source))
        elif self.source is not None:
            raise ConfigError(f"mounts[{self.destination}].source", self.source,
                              f"a {self.type} mount takes no source")
        if self.size is not None:
            if self.type != "tmpfs":
                raise ConfigError(f"mounts[{self.destination}].size", self.size,
                                  "only a tmpfs mount has a size")
            _set(self, "size", parse_size(self.size, f"mounts[{self.destination}].size"))
        if self.mode is not None and (not isinstance(self.mode, int)
                                      or not 0 <= self.mode <= 0o7777):
            raise ConfigError(f"mounts[{self.destination}].mode", self.mode,
                              "an octal permission like 0o1777")
        for name in ("uid", "gid"):
            value = getattr(self, name)
            if value is None:
                continue
            if self.type != "tmpfs":
                raise ConfigError(f"mounts[{self.destination}].{name}", value,
                                  "only a tmpfs mount has an owner")
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 0 <= value <= 2**32 - 2:
                raise ConfigError(f"mounts[{self.destination}].{name}", value,
                                  "a number from 0 to 4294967294")


DEFAULT_MOUNTS: tuple[Mount, ...] = (
    Mount("/proc", "proc"),
    Mount("/tmp", "tmpfs", mode=0o1777),
    Mount("/dev/shm", "tmpfs", mode=0o1777),
)


@dataclass(frozen=True)
class IDMap:
    """``size`` ids starting at ``container_id`` inside map to ``host_id`` outside."""

    container_id: int
    host_id: int
    size: int = 1

    def __post_init__(self) -> None:
        for name in ("container_id", "host_id", "size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 2**32 - 2:
                raise ConfigError(f"idmap.{name}", v, "a non-negative 32-bit id")
        if self.size == 0:
            raise ConfigError("idmap.size", 0, "must be at least 1")

    def line(self) -> str:
        return f"{self.container_id} {self.host_id} {self.size}\n"


@dataclass(frozen=True)
class Rlimit:
    """A resource limit by name ("NOFILE", "AS", "CPU" ...); ``None`` means unlimited."""

    name: str
    soft: int | None
    hard: int | None = None

    def __post_init__(self) -> None:
        name = self.name.upper().removeprefix("RLIMIT_") if isinstance(self.name, str) else ""
        if name not in _RLIMITS:
            raise ConfigError("rlimits", self.name,
                              f"one of {', '.join(sorted(_RLIMITS))}")
        _set(self, "name", name)
        hard = self.soft if self.hard is None else self.hard
        for label, v in (("soft", self.soft), ("hard", hard)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"rlimits.{name}.{label}", v,
                                  "a non-negative integer or None for unlimited")
        if self.soft is not None and hard is not None and self.soft > hard:
            raise ConfigError(f"rlimits.{name}", (self.soft, hard), "soft must not exceed hard")
        _set(self, "hard", hard)

    @property
    def resource(self) -> int:
        return int(_RLIMITS[self.name])

    def values(self) -> tuple[int, int]:
        inf = resource.RLIM_INFINITY
        return (inf if self.soft is None else self.soft, inf if self.hard is None else self.hard)


@dataclass(frozen=True)
class Hook:
    """A lifecycle hook: an executable that gets the state JSON on stdin, or a callable.

    As in the OCI runtime spec, ``args`` is the whole argv (``args[0]`` included) and
    ``env`` a list of ``NAME=value`` strings. The callable form is called in the host
    process with the container's ``State``.
    """

    path: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: float | None = None
    callable: Callable[..., Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.callable is None):
            raise ConfigError("hooks", self.path,
                              "a hook is either an executable path or a callable")
        if self.path is not None:
            _set(self, "path", _abs_path("hooks.path", self.path))
        _set(self, "args", tuple(self.args))
        _set(self, "env", tuple(self.env))
        if self.timeout is not None and (not isinstance(self.timeout, (int, float))
                                         or self.timeout <= 0):
            raise ConfigError("hooks.timeout", self.timeout, "a positive number of seconds")

    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path
        fn = self.callable
        return getattr(fn, "__qualname__", repr(fn))


HOOK_KINDS = ("prestart", "create_runtime", "poststart", "poststop")


@dataclass(frozen=True)
class Hooks:
    """OCI hooks: ``prestart``/``create_runtime`` run after the namespaces exist and
    before the payload (a failure aborts the start), ``poststart`` after the payload
    was started, ``poststop`` after the container is gone (a failure is reported)."""

    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()

    def __post_init__(self) -> None:
        for kind in HOOK_KINDS:
            hooks = tuple(getattr(self, kind))
            for h in hooks:
                if not isinstance(h, Hook):
                    raise ConfigError(f"hooks.{kind}", h, "a sequence of Hook objects")
            _set(self, kind, hooks)


@dataclass(frozen=True)
class Resources:
    """Cgroup resource limits; ``None`` leaves a resource unlimited."""

    memory: int | str | None = None
    memory_swap: int | str | None = 0
    pids: int | None = None
    cpu: float | str | None = None
    cpu_weight: int | None = None
    cpuset: str | None = None

    def __post_init__(self) -> None:
        if self.memory is not None:
            _set(self, "memory", parse_size(self.memory, "memory"))
        if self.memory_swap is not None:
            _set(self, "memory_swap", parse_size(self.memory_swap, "memory_swap"))
        if self.pids is not None and (not isinstance(self.pids, int)
                                      or isinstance(self.pids, bool)
                                      or not 1 <= self.pids <= 4 * 1024 * 1024):
            raise ConfigError("pids", self.pids, "a number of processes from 1 to 4,194,304 "
                              "(the kernel's most)")
        if self.cpu is not None:
            _set(self, "cpu", parse_cpu(self.cpu))
        if self.cpu_weight is not None and (not isinstance(self.cpu_weight, int)
                                            or not 1 <= self.cpu_weight <= 10000):
            raise ConfigError("cpu_weight", self.cpu_weight, "an integer from 1 to 10000")
        if self.cpuset is not None and (not isinstance(self.cpuset, str)
                                        or not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*",
                                                            self.cpuset)):
            raise ConfigError("cpuset", self.cpuset, "a CPU list like '0', '0-1' or '0,2'")

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None
                   for f in dataclasses.fields(self) if f.name != "memory_swap")


def _env_mapping(value: Mapping[str, str] | Iterable[tuple[str, str]] | None,
                 fieldname: str) -> Mapping[str, str] | None:
    if value is None:
        return None
    try:
        items = dict(value)
    except (TypeError, ValueError):
        raise ConfigError(fieldname, value, "a mapping of names to values, like "
                                            "{'LANG': 'C.UTF-8'}") from None
    for k, v in items.items():
        if not isinstance(k, str) or not _ENV_NAME.match(k):
            raise ConfigError(f"{fieldname}", k, "variable names are non-empty strings without '='")
        if not isinstance(v, str) or "\x00" in v:
            raise ConfigError(f"{fieldname}[{k}]", v, "values are strings without NUL bytes")
    return MappingProxyType(items)


@dataclass(frozen=True)
class Config:
    """What a container is. All fields have working defaults: ``Config()`` is a
    container with its own PID, mount, UTS, IPC and network namespaces, the host root
    visible, private ``/tmp`` and ``/dev/shm``, a new ``/proc`` and runc's masked paths.
    ``devices="minimal"`` gives it a ``/dev`` of its own as runc does (``null``,
    ``zero``, ``full``, ``random``, ``urandom``, ``tty``, a new ``pts`` instance,
    ``ptmx``, ``fd``/``stdin``/``stdout``/``stderr`` links); ``"host"`` leaves the host's.
    """

    namespaces: Namespaces = field(default_factory=Namespaces)
    rootfs: str | None = None
    readonly: bool = False
    hostname: str | None = "isolate"
    mounts: tuple[Mount, ...] = DEFAULT_MOUNTS
    masked_paths: tuple[str, ...] = DEFAULT_MASKED_PATHS
    readonly_paths: tuple[str, ...] = DEFAULT_READONLY_PATHS
    network: Literal["none", "host"] = "none"
    env: Mapping[str, str] | None = None
    cwd: str | None = None  # None: the host's cwd when visible inside, else /
    user: str | int | None = None
    uid_mappings: tuple[IDMap, ...] = ()
    gid_mappings: tuple[IDMap, ...] = ()
    rlimits: tuple[Rlimit, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)
    resources: Resources = field(default_factory=Resources)
    capabilities: tuple[str, ...] | None = None
    seccomp: str | None = "default"
    no_new_privs: bool = True
    cgroups: Literal["auto", "required", "off"] = "auto"
    cgroup_parent: str = "pytest-isolate"
    annotations: Mapping[str, str] | None = None
    devices: Literal["minimal", "host"] = "minimal"

    def __post_init__(self) -> None:
        if not isinstance(self.namespaces, Namespaces):
            raise ConfigError("namespaces", self.namespaces, "a Namespaces object")
        if self.rootfs is not None:
            _set(self, "rootfs", _abs_path("rootfs", self.rootfs))
        for flag in ("readonly", "no_new_privs"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(flag, getattr(self, flag), "True or False")
        if self.devices not in ("minimal", "host"):
            raise ConfigError("devices", self.devices,
                              "'minimal' (a /dev of its own, as runc makes) or 'host'")
        if self.hostname is not None and (not isinstance(self.hostname, str)
                                          or len(self.hostname) > 64
                                          or not _HOSTNAME.match(self.hostname)):
            raise ConfigError("hostname", self.hostname,
                              "letters, digits, '-' and '.', at most 64 characters")
        mounts = tuple(self.mounts)
        for m in mounts:
            if not isinstance(m, Mount):
                raise ConfigError("mounts", m, "a sequence of Mount objects")
        _set(self, "mounts", mounts)
        _set(self, "masked_paths", tuple(_abs_path("masked_paths", p) for p in self.masked_paths))
        _set(self, "readonly_paths",
             tuple(_abs_path("readonly_paths", p) for p in self.readonly_paths))
        if self.seccomp is not None and not isinstance(self.seccomp, str):
            raise ConfigError("seccomp", self.seccomp, "'default', 'strict', 'unconfined' or "
                                                       "the path of a Docker/OCI JSON profile")
        if self.cgroups not in ("auto", "required", "off"):
            raise ConfigError("cgroups", self.cgroups,
                              "'auto' (use them when this host can), 'required' or 'off'")
        if not isinstance(self.cgroup_parent, str) or not self.cgroup_parent.strip("/") or \
                ".." in self.cgroup_parent.split("/"):
            raise ConfigError("cgroup_parent", self.cgroup_parent,
                              "a relative cgroup path like 'pytest-isolate/gw0'")
        if self.network not in ("none", "host"):
            raise ConfigError("network", self.network,
                              "'none' (own network namespace, loopback up) or 'host'")
        _set(self, "env", _env_mapping(self.env, "env"))
        _set(self, "annotations", _env_mapping(self.annotations, "annotations"))
        if self.cwd is not None:
            _set(self, "cwd", _abs_path("cwd", self.cwd))
        if self.user is not None:
            parse_user(self.user, "user")
        for name in ("uid_mappings", "gid_mappings"):
            maps = tuple(getattr(self, name))
            for m in maps:
                if not isinstance(m, IDMap):
                    raise ConfigError(name, m, "a sequence of IDMap objects")
            _set(self, name, maps)
        rl = tuple(self.rlimits)
        for r in rl:
            if not isinstance(r, Rlimit):
                raise ConfigError("rlimits", r, "a sequence of Rlimit objects")
        if len({r.name for r in rl}) != len(rl):
            raise ConfigError("rlimits", [r.name for r in rl], "each limit at most once")
        _set(self, "rlimits", rl)
        if not isinstance(self.hooks, Hooks):
            raise ConfigError("hooks", self.hooks, "a Hooks object")
        if not isinstance(self.resources, Resources):
            raise ConfigError("resources", self.resources, "a Resources object")
        if self.capabilities is not None:
            from .capabilities import parse_capabilities

            _set(self, "capabilities", tuple(sorted(parse_capabilities(self.capabilities))))
        self._check_consistency()

    def _check_consistency(self) -> None:
        ns = self.namespaces
        needs_mount_ns = self.readonly or self.rootfs or self.mounts or self.masked_paths \
            or self.readonly_paths
        if needs_mount_ns and not ns.mount:
            raise ConfigError("namespaces.mount", False,
                              "mounts, masked/readonly paths, rootfs and readonly need a mount "
                              "namespace: enable it or clear those settings")
        if self.hostname is not None and not ns.uts:
            raise ConfigError("hostname", self.hostname,
                              "setting a hostname needs a UTS namespace (namespaces.uts=True) "
                              "or hostname=None")
        if self.resources.any() and self.cgroups == "off":
            raise ConfigError("cgroups", "off", "resource limits need cgroups: remove the "
                                                "limits or use cgroups='auto'")
        if (self.uid_mappings or self.gid_mappings) and not ns.user:
            raise ConfigError("uid_mappings", self.uid_mappings,
                              "id mappings need a user namespace (namespaces.user=True)")
        if self.rootfs is not None and not os.path.isdir(self.rootfs):
            raise ConfigError("rootfs", self.rootfs, "must be an existing directory")

    def validate(self) -> list[str]:
        """Return warnings about settings that work but may not do what was meant.

        Hard errors were already raised when the Config was created.
        """
        warns: list[str] = []
        ns = self.namespaces
        if not ns.pid:
            warns.append("namespaces.pid=False: processes the payload starts can outlive the "
                         "container unless a cgroup is used to kill them")
        if any(m.type == "proc" for m in self.mounts) and not ns.pid:
            warns.append("a proc mount without a PID namespace shows every host process")
        if self.network == "host":
            warns.append("network='host': the container shares the host's network")
        if ns.user and not self.uid_mappings:
            warns.append("user namespace without uid_mappings: the invoking user is mapped to "
                         "root inside")
        for m in self.mounts:
            if m.type == "bind" and m.source and not os.path.exists(m.source):
                warns.append(f"mounts[{m.destination}]: source {m.source} does not exist")
        return warns

    def capability_names(self) -> frozenset[str]:
        """The capabilities the payload gets (``None`` means Docker's default set)."""
        from .capabilities import parse_capabilities

        return parse_capabilities(self.capabilities)

    def effective_uid_mappings(self) -> tuple[IDMap, ...]:
        return self.uid_mappings or (IDMap(0, os.geteuid(), 1),)

    def effective_gid_mappings(self) -> tuple[IDMap, ...]:
        return self.gid_mappings or (IDMap(0, os.getegid(), 1),)

    def maps_root(self) -> bool:
        """Whether uid and gid 0 exist in the user namespace (a rootless container that
        maps only the invoking user to some other id has no root inside)."""
        return (any(m.container_id == 0 for m in self.effective_uid_mappings())
                and any(m.container_id == 0 for m in self.effective_gid_mappings()))

    def clone_flags(self) -> int:
        flags = self.namespaces.clone_flags()
        if self.network == "none":
            flags |= linux.CLONE_NEWNET
        return flags

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description (callable hooks are kept by name only)."""
        return _to_jsonable(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Rebuild a Config saved by :meth:`to_dict` (callable hooks are not restored)."""
        d = dict(data)
        d["namespaces"] = Namespaces(**d.get("namespaces", {}))
        d["mounts"] = tuple(Mount(**m) for m in d.get("mounts", ()))
        d["uid_mappings"] = tuple(IDMap(**m) for m in d.get("uid_mappings", ()))
        d["gid_mappings"] = tuple(IDMap(**m) for m in d.get("gid_mappings", ()))
        d["rlimits"] = tuple(Rlimit(**r) for r in d.get("rlimits", ()))
        d["resources"] = Resources(**d.get("resources", {}))
        hooks = d.get("hooks", {})
        d["hooks"] = Hooks(**{
            kind: tuple(Hook(path=h["path"], args=tuple(h.get("args", ())),
                             env=tuple(h.get("env", ())), timeout=h.get("timeout"))
                        for h in hooks.get(kind, ()) if h.get("path"))
            for kind in HOOK_KINDS
        })
        for key in ("masked_paths", "readonly_paths", "capabilities"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def parse_user(value: str | int, fieldname: str = "user") -> tuple[int, int | None]:
    """``1000`` or ``"1000:1000"`` -> (uid, gid or None). Names are not resolved."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, None
    if isinstance(value, str):
        m = re.fullmatch(r"(\d+)(?::(\d+))?", value.strip())
        if m:
            return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
    raise ConfigError(fieldname, value, "a numeric uid or 'uid:gid' like '1000:1000'")


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Hook):
        d = {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
             if f.name != "callable"}
        d["callable"] = None if obj.callable is None else obj.name
        return d
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_to_jsonable(v) for v in obj]
    return obj
