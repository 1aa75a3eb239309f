"""Isolation settings of one test: where each value comes from, and checking it.

Precedence, highest first: the ``isolated`` marker, the command line
(``--isolate-<setting>``), the ini file (``isolate_<setting>``), the chosen profile
(built-in ``default`` / ``untrusted``, or ``[tool.pytest-isolate.profiles.NAME]`` in
``pyproject.toml``), then the built-in defaults. Every value is checked where it is
read, and a bad one raises :class:`SettingError` naming the value's origin.

This module imports nothing from pytest: the plugin feeds it plain values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .runtime.config import parse_user
from .runtime.errors import ConfigError
from .runtime.units import parse_cpu, parse_size

__all__ = [
    "BUILTIN_PROFILES",
    "SETTINGS",
    "UNTRUSTED_ENV",
    "SettingError",
    "Settings",
    "check_setting",
    "resolve",
]

# name -> help text (the same for the marker keyword, --isolate-NAME and isolate_NAME)
SETTINGS: dict[str, str] = {
    "memory": "memory limit, like 64M or 1.5G ('none': unlimited)",
    "pids": "limit on the number of processes ('none': unlimited)",
    "cpu": "CPU limit in cores, like 0.5, 150%% or 500m ('none': unlimited)",
    "timeout": "seconds before the test's container is killed ('none': no timeout)",
    "network": "'none' (own network namespace, loopback only) or 'host'",
    "seccomp": "seccomp profile: default, strict, unconfined or a Docker/OCI JSON file",
    "readonly": "read-only host root, with /tmp and the test's tmp_path writable (true/false)",
    "hostname": "hostname inside the container",
    "env": "environment variables to set inside, NAME=value (repeatable)",
    "capabilities": "capabilities the test keeps, comma-separated ('none' for none)",
    "user": "uid[:gid] the test runs as inside the container",
    "profile": "settings profile: default, untrusted, or one from pyproject.toml",
}

# What the ``untrusted`` profile lets through from the host environment.
UNTRUSTED_ENV: tuple[str, ...] = (
    "PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONHASHSEED",
    "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8", "NO_COLOR", "FORCE_COLOR",
)

BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    # Hermetic CI isolation that keeps ordinary suites passing.
    "default": {
        "memory": None, "pids": None, "cpu": None, "timeout": None, "network": "none",
        "seccomp": "default", "readonly": False, "hostname": "isolate", "env": {},
        "capabilities": None, "user": None, "env_allow": None, "hide_home": False,
        "may_stop_run": True,
    },
    # For code nobody vouches for.
    "untrusted": {
        "memory": "1G", "pids": 256, "cpu": 1, "timeout": 300, "network": "none",
        "seccomp": "strict", "readonly": True, "hostname": "sandbox", "env": {},
        "capabilities": [], "user": "65534:65534", "env_allow": list(UNTRUSTED_ENV),
        "hide_home": True, "may_stop_run": False,
    },
}

_NONE = ("none", "null", "unlimited", "off", "")


class SettingError(ValueError):
    """A setting's value is invalid; the message names where it came from."""

    def __init__(self, name: str, value: object, origin: str, allowed: str) -> None:
        self.name, self.value, self.origin = name, value, origin
        super().__init__(f"{origin}: {name}={value!r} is invalid: {allowed}")


def _none(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE)


def _bool(name: str, value: object, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off"):
            return False
    raise SettingError(name, value, origin, "true or false")


def _env(value: object, origin: str) -> dict[str, str]:
    if isinstance(value, Mapping):
        items = dict(value)
    elif isinstance(value, str):
        items = dict(_env_pair(v, origin) for v in value.replace(",", "\n").splitlines()
                     if v.strip())
    elif isinstance(value, (list, tuple)):
        items = dict(_env_pair(v, origin) for v in value)
    else:
        raise SettingError("env", value, origin, "a mapping, or NAME=value strings")
    for k, v in items.items():
        if not isinstance(k, str) or not k or "=" in k or not isinstance(v, str):
            raise SettingError("env", value, origin, "names and values are strings; "
                                                     "names have no '='")
    return items


def _env_pair(item: object, origin: str) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise SettingError("env", item, origin, "NAME=value")
    k, v = item.split("=", 1)
    return k.strip(), v


PIDS_MAX = 4 * 1024 * 1024  # the kernel's PID_MAX_LIMIT on 64-bit


def check_setting(name: str, value: object, origin: str) -> Any:
    """Normalise one raw setting value (from a marker, an option, an ini line or a
    profile), raising :class:`SettingError` that names ``origin``."""
    try:
        if name == "memory":
            return None if _none(value) else parse_size(value, "memory")  # type: ignore[arg-type]
        if name == "pids":
            if _none(value):
                return None
            n = int(value) if isinstance(value, str) and value.strip().isdigit() else value
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= PIDS_MAX:
                raise SettingError(name, value, origin, "a number of processes from 1 to "
                                   f"{PIDS_MAX:,} (the kernel's most), or 'none'")
            return n
        if name == "cpu":
            return None if _none(value) else parse_cpu(value)  # type: ignore[arg-type]
        if name == "timeout":
            if _none(value):
                return None
            try:
                t = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                t = -1.0
            if isinstance(value, bool) or not 0 < t <= 10**7:
                raise SettingError(name, value, origin,
                                   "a positive, finite number of seconds (at most 10^7)")
            return t
        if name == "network":
            if value not in ("none", "host"):
                raise SettingError(name, value, origin, "'none' or 'host'")
            return value
        if name == "seccomp":
            if not isinstance(value, (str, os.PathLike)):
                raise SettingError(name, value, origin,
                                   "default, strict, unconfined or a JSON profile path")
            from .runtime.seccomp import load_profile

            load_profile(os.fspath(value))  # raises ConfigError naming the problem
            return os.fspath(value)
        if name in ("readonly", "hide_home", "may_stop_run"):
            return _bool(name, value, origin)
        if name == "hostname":
            from .runtime.config import Config

            Config(hostname=value)  # type: ignore[arg-type]  # raises ConfigError if bad
            return value
        if name == "env":
            return _env(value, origin)
        if name == "env_allow":
            if value is None:
                return None
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise SettingError(name, value, origin, "a list of variable names")
            return tuple(value)
        if name == "capabilities":
            if value is None:
                return None
            if isinstance(value, str):
                value = [] if _none(value) else [v for v in value.replace(",", " ").split()]
            from .runtime.capabilities import parse_capabilities

            return tuple(sorted(parse_capabilities(value)))  # type: ignore[arg-type]
        if name == "user":
            if _none(value):
                return None
            uid, gid = parse_user(value, "user")  # type: ignore[arg-type]
            if uid > 2**32 - 2 or (gid or 0) > 2**32 - 2:
                raise SettingError(name, value, origin, "uid and gid are at most 4294967294")
            return str(value)
        if name == "profile":
            if not isinstance(value, str) or not value:
                raise SettingError(name, value, origin, "a profile name")
            return value
    except ConfigError as e:
        raise SettingError(name, value, origin, e.allowed) from None
    raise SettingError(name, value, origin, f"unknown setting; known: {', '.join(SETTINGS)}")


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one test, and where each value came from."""

    profile: str = "default"
    memory: int | None = None
    pids: int | None = None
    cpu: float | None = None
    timeout: float | None = None
    network: str = "none"
    seccomp: str = "default"
    readonly: bool = False
    hostname: str = "isolate"
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    capabilities: tuple[str, ...] | None = None
    user: str | None = None
    env_allow: tuple[str, ...] | None = None
    hide_home: bool = False
    may_stop_run: bool = True  # pytest.exit() / KeyboardInterrupt in the test end the run
    origins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}),
                                       compare=False)


def resolve(
    layers: list[tuple[str, Mapping[str, Any]]],
    profiles: Mapping[str, Mapping[str, Any]],
) -> Settings:
    """Merge raw settings, lowest precedence first.

    ``layers`` is ``[(origin, {name: raw value}), ...]`` from ini up to the marker. The
    profile is the last ``profile`` named in any layer (else ``default``); its values
    sit under every layer. A custom profile may name a built-in one as ``extends``.
    """
    profile_name, profile_origin = "default", "built-in default"
    for origin, values in layers:
        if values.get("profile") is not None:
            profile_name = check_setting("profile", values["profile"], origin)
            profile_origin = origin
    all_profiles = {**BUILTIN_PROFILES, **profiles}
    if profile_name not in all_profiles:
        raise SettingError("profile", profile_name, profile_origin,
                           f"known profiles: {', '.join(sorted(all_profiles))}")
    chain = [(f"profile {profile_name!r}", dict(all_profiles[profile_name]))]
    base = chain[0][1].pop("extends", None)
    while base is not None:
        if any(origin == f"profile {base!r}" for origin, _ in chain):
            raise SettingError("extends", base, chain[-1][0],
                               "profiles extend each other in a cycle")
        if base not in all_profiles:
            raise SettingError("extends", base, chain[-1][0],
                               f"known profiles: {', '.join(sorted(all_profiles))}")
        values = dict(all_profiles[base])
        nxt = values.pop("extends", None)
        chain.append((f"profile {base!r}", values))
        base = nxt
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for origin, values in [*reversed(chain), *layers]:
        for name, raw in values.items():
            if name == "profile":
                continue
            if name == "env" and name in merged:  # environment additions accumulate
                merged["env"] = {**merged["env"], **check_setting(name, raw, origin)}
            else:
                merged[name] = check_setting(name, raw, origin)
            origins[name] = origin
    merged["env"] = MappingProxyType(merged.get("env", {}))
    return Settings(profile=profile_name, origins=MappingProxyType(origins), **merged)


def looser_than(base: Settings, other: Settings, *, limits_may_grow: bool = False) -> list[str]:
    """How ``other`` would be looser than ``base``, in words; empty when it is not.

    Security layers must be kept or tightened: network, seccomp (the same, ``default``
    -> ``strict``, or anything when ``base`` is ``unconfined``), read-only root,
    capabilities (a subset), user, environment allow-list and hidden homes. Limits
    (memory, pids, cpu, timeout) must be at most ``base``'s, or with
    ``limits_may_grow`` merely finite where ``base``'s are.
    """
    from .runtime.capabilities import DOCKER_DEFAULT
    from .runtime.units import format_size

    out: list[str] = []

    def origin(name: str) -> str:
        where = base.origins.get(name)
        return f" (from {where})" if where else ""

    def fmt(name: str, v: Any) -> str:
        if v is None:
            return "none"
        return format_size(v) if name == "memory" else f"{v:g}"

    for name in ("memory", "pids", "cpu", "timeout"):
        b, o = getattr(base, name), getattr(other, name)
        if b is None:
            continue
        if o is None:
            out.append(f"{name}=none removes the {name} limit {fmt(name, b)}{origin(name)}")
        elif o > b and not limits_may_grow and name != "timeout":
            out.append(f"{name}={fmt(name, o)} is more than the test's "
                       f"{name}={fmt(name, b)}{origin(name)}")
    if base.network == "none" and other.network != "none":
        out.append(f"network={other.network!r} where network='none'{origin('network')}")
    if not (other.seccomp == base.seccomp or base.seccomp == "unconfined"
            or (base.seccomp == "default" and other.seccomp == "strict")):
        out.append(f"seccomp={other.seccomp!r} is not as strict as "
                   f"seccomp={base.seccomp!r}{origin('seccomp')}")
    if base.readonly and not other.readonly:
        out.append(f"readonly=False where the root is read-only{origin('readonly')}")
    bcaps = set(DOCKER_DEFAULT if base.capabilities is None else base.capabilities)
    ocaps = set(DOCKER_DEFAULT if other.capabilities is None else other.capabilities)
    if ocaps - bcaps:
        out.append(f"capabilities {', '.join(sorted(ocaps - bcaps))} beyond "
                   f"{', '.join(sorted(bcaps)) or 'none'}{origin('capabilities')}")
    if base.user is not None and other.user != base.user:
        out.append(f"user={other.user!r} where the user is {base.user!r}{origin('user')}")
    if base.env_allow is not None and (other.env_allow is None
                                       or set(other.env_allow) - set(base.env_allow)):
        out.append(f"more of the host environment than the allow-list{origin('env_allow')}")
    if base.hide_home and not other.hide_home:
        out.append(f"home directories shown where they are hidden{origin('hide_home')}")
    if not base.may_stop_run and other.may_stop_run:
        out.append(f"tests allowed to end the whole run{origin('may_stop_run')}")
    return out
