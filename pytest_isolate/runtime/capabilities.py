"""The capability sets of a container's payload: names, parsing, applying, reading back.

A container is given one list of capability names (``Config.capabilities``; ``None``
means Docker's default set). :func:`parse_capabilities` checks and normalises it,
:meth:`CapabilitySets.uniform` turns it into the five per-process sets, and
:func:`apply` installs them in the payload process, in the order runc uses:

    prepare_uid_change()   PR_SET_KEEPCAPS 1, so permitted caps survive setuid(0 -> n)
    setgid / setuid        (the caller)
    apply(sets):
      1. effective := permitted     setuid cleared the effective set; CAP_SETPCAP is
                                    needed for step 2
      2. bounding set               PR_CAPBSET_DROP of every cap not asked for
      3. capset(2)                  effective, permitted, inheritable
      4. ambient set                PR_CAP_AMBIENT_CLEAR_ALL, then _RAISE per cap
      5. PR_SET_KEEPCAPS 0          a later setuid in the payload drops caps again
      6. read everything back       a mismatch is an error, never a silent extra cap
    no_new_privs, seccomp   (the caller)

A cap that is asked for but that the calling process does not hold (outside its
bounding or permitted set, like CAP_SYS_RESOURCE on a host that dropped it) is not
an error: it is left out and returned by :func:`apply`, so the caller can warn once.
Failing to *remove* a cap is an error (:class:`~.errors.SetupError`, step
``"capabilities"``): the payload would run with more privilege than configured.

The system calls go through python-prctl when it is installed (the ``prctl`` extra;
it compiles against libcap) and through ctypes otherwise; both do the same calls.
python-prctl 1.8.1 has no PR_CAP_AMBIENT (its ``prctl()`` rejects option 47) and
knows caps only up to the CAP_LAST_CAP of the headers it was built with, so the
ambient set, and any cap above that number, go through ctypes in both backends.
``PYTEST_ISOLATE_CAPS_BACKEND=ctypes|prctl`` forces one backend.

Capability sets are per thread: :func:`apply` changes the calling thread only and is
meant for the single-threaded process right after fork.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import errno
import importlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Protocol

from . import linux
from .errors import ConfigError, SetupError

__all__ = [
    "BACKEND_ENV",
    "CAPABILITIES",
    "DOCKER_DEFAULT",
    "CapabilityBackend",
    "CapabilitySets",
    "apply",
    "backend_name",
    "cap_last_cap",
    "current",
    "get_backend",
    "parse_capabilities",
    "prepare_uid_change",
]

BACKEND_ENV = "PYTEST_ISOLATE_CAPS_BACKEND"

# Linux's capability numbers (include/uapi/linux/capability.h), up to Linux 5.9.
_LINUX_NAMES: tuple[str, ...] = (
    "CAP_CHOWN",               # 0
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",                # 5
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",    # 10
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",           # 15
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",           # 20
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",            # 25
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",       # 30
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",          # 35
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",             # 5.8
    "CAP_BPF",                 # 5.8
    "CAP_CHECKPOINT_RESTORE",  # 40, 5.9
)

_CAP_SETPCAP = 8

PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def cap_last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        pass
    # No /proc (early in container set-up): the kernel answers EINVAL past the last cap.
    n = 0
    while True:
        try:
            linux.prctl(PR_CAPBSET_READ, n + 1)
        except OSError:
            return n
        n += 1


_LAST = cap_last_cap()

CAPABILITIES: dict[str, int] = {
    name: number for number, name in enumerate(_LINUX_NAMES) if number <= _LAST
}
"""Every capability name the running kernel knows, with its number."""

DOCKER_DEFAULT: frozenset[str] = frozenset({
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
})
"""The capabilities Docker (moby ``oci/caps/defaults.go``) gives a container by default."""

_UNNAMED = re.compile(r"CAP_UNKNOWN_(\d+)")
_MAN = "the names are listed in capabilities(7) (`man 7 capabilities`)"


def _number(name: str) -> int:
    if name in CAPABILITIES:
        return CAPABILITIES[name]
    m = _UNNAMED.fullmatch(name)
    if m:  # as current() names a bit this table has no name for
        return int(m.group(1))
    raise KeyError(name)


def _name(number: int) -> str:
    return _LINUX_NAMES[number] if number < len(_LINUX_NAMES) else f"CAP_UNKNOWN_{number}"


def _mask(names: Iterable[str]) -> int:
    m = 0
    for name in names:
        m |= 1 << _number(name)
    return m


def _names(mask: int) -> frozenset[str]:
    return frozenset(_name(n) for n in range(mask.bit_length()) if mask >> n & 1)


def _bits(mask: int) -> list[int]:
    return [n for n in range(mask.bit_length()) if mask >> n & 1]


def parse_capabilities(names: Iterable[str] | None,
                       field: str = "capabilities") -> frozenset[str]:
    """Check and normalise a list of capability names.

    ``None`` is Docker's default set. ``"CAP_NET_BIND_SERVICE"``,
    ``"NET_BIND_SERVICE"`` and ``"net_bind_service"`` are the same cap; ``"ALL"``
    is every cap the kernel knows (caps the caller does not hold are reported by
    :func:`apply`, not refused here). ``[]`` is no capabilities at all.
    """
    if names is None:
        return DOCKER_DEFAULT
    if isinstance(names, (str, bytes)):
        raise ConfigError(field, names,
                          "must be a list of capability names, not a single string: "
                          f"pass [{names!r}]")
    try:
        items = list(names)
    except TypeError:
        raise ConfigError(field, names,
                          "must be a list of capability names like "
                          "['CAP_NET_BIND_SERVICE'], or None for Docker's default set"
                          ) from None
    out: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(field, item,
                              "capability names are strings like 'CAP_NET_BIND_SERVICE'")
        name = item.strip().upper()
        if name in ("ALL", "CAP_ALL"):
            return frozenset(CAPABILITIES)
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name in CAPABILITIES:
            out.add(name)
        elif name in _LINUX_NAMES:
            raise ConfigError(field, item,
                              f"{name} is not supported by this kernel (it knows "
                              f"capabilities up to {_LINUX_NAMES[_LAST]}, number {_LAST})")
        else:
            close = difflib.get_close_matches(name, list(CAPABILITIES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(field, item,
                              f"unknown capability{hint}; {_MAN}, with or without the "
                              "CAP_ prefix, or 'ALL'")
    return frozenset(out)


@dataclass(frozen=True)
class CapabilitySets:
    """The five capability sets of one process, as frozensets of names."""

    bounding: frozenset[str] = frozenset()
    effective: frozenset[str] = frozenset()
    permitted: frozenset[str] = frozenset()
    inheritable: frozenset[str] = frozenset()
    ambient: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = frozenset(getattr(self, f.name))
            for name in value:
                try:
                    _number(name)
                except (KeyError, TypeError):
                    raise ConfigError(f"capabilities.{f.name}", name,
                                      f"not a capability this kernel knows; {_MAN}") from None
            object.__setattr__(self, f.name, value)

    @classmethod
    def uniform(cls, names: Iterable[str], *, uid: int = 0) -> CapabilitySets:
        """The sets for a payload that should hold exactly ``names``.

        Bounding, effective, permitted and inheritable are ``names``. The ambient set
        is ``names`` only when the payload runs as a non-root ``uid``: execve(2) of an
        ordinary file gives a non-root process only its ambient caps, while root gets
        inheritable | bounding whatever the ambient set holds.
        """
        caps = frozenset(names)
        return cls(bounding=caps, effective=caps, permitted=caps, inheritable=caps,
                   ambient=caps if uid != 0 else frozenset())

    def as_dict(self) -> dict[str, list[str]]:
        """JSON-compatible: set name -> sorted cap names."""
        return {f.name: sorted(getattr(self, f.name)) for f in fields(self)}


class CapabilityBackend(Protocol):
    """The few system calls :func:`apply` needs. Masks are ints, bit n = cap n."""

    name: str

    def bounding_has(self, cap: int) -> bool: ...
    def bounding_drop(self, cap: int) -> None: ...
    def get(self) -> tuple[int, int, int]: ...  # effective, permitted, inheritable
    def set(self, effective: int, permitted: int, inheritable: int) -> None: ...
    def ambient_has(self, cap: int) -> bool: ...
    def ambient_clear(self) -> None: ...
    def ambient_raise(self, cap: int) -> None: ...
    def set_keepcaps(self, keep: bool) -> None: ...


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_CapDataPair = _CapData * 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]


def _errno_check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _CtypesBackend:
    """capget/capset(2) and prctl(2) through ctypes; needs nothing beyond libc."""

    name = "ctypes"

    def bounding_has(self, cap: int) -> bool:
        return linux.prctl(PR_CAPBSET_READ, cap) == 1

    def bounding_drop(self, cap: int) -> None:
        linux.prctl(PR_CAPBSET_DROP, cap)

    def get(self) -> tuple[int, int, int]:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = _CapDataPair()
        _errno_check(_libc.capget(ctypes.byref(header), data), "capget")
        lo, hi = data[0], data[1]
        return (lo.effective | hi.effective << 32, lo.permitted | hi.permitted << 32,
                lo.inheritable | hi.inheritable << 32)

    def set(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        low = 0xFFFFFFFF
        data = _CapDataPair(_CapData(effective & low, permitted & low, inheritable & low),
                            _CapData(effective >> 32, permitted >> 32, inheritable >> 32))
        _errno_check(_libc.capset(ctypes.byref(header), data), "capset")

    # python-prctl has no PR_CAP_AMBIENT: both backends use these.
    def ambient_has(self, cap: int) -> bool:
        return linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap) == 1

    def ambient_clear(self) -> None:
        linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)

    def ambient_raise(self, cap: int) -> None:
        linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)

    def set_keepcaps(self, keep: bool) -> None:
        linux.prctl(PR_SET_KEEPCAPS, int(keep))


class _PrctlBackend(_CtypesBackend):
    """python-prctl for the calls it has; ctypes for ambient and for caps it was built
    without (above its CAP_LAST_CAP)."""

    name = "python-prctl"

    def __init__(self, module: Any) -> None:
        self._prctl = module
        self._last: int = max(module.ALL_CAPS)
        self._caps: list[int] = sorted(module.ALL_CAPS)
        # Built against older headers than the kernel: capget/capset through ctypes,
        # or the caps it cannot name would be left as they are.
        self._whole_sets = self._last >= _LAST

    def bounding_has(self, cap: int) -> bool:
        if cap > self._last:
            return super().bounding_has(cap)
        return bool(self._prctl.capbset_read(cap))

    def bounding_drop(self, cap: int) -> None:
        if cap > self._last:
            super().bounding_drop(cap)
        else:
            self._prctl.capbset_drop(cap)

    def get(self) -> tuple[int, int, int]:
        p = self._prctl
        if not self._whole_sets:
            return super().get()
        got = p.get_caps((self._caps, [p.CAP_EFFECTIVE, p.CAP_PERMITTED, p.CAP_INHERITABLE]))
        e, pm, i = (sum(1 << cap for cap, on in got[flag].items() if on)
                    for flag in (p.CAP_EFFECTIVE, p.CAP_PERMITTED, p.CAP_INHERITABLE))
        return e, pm, i

    def set(self, effective: int, permitted: int, inheritable: int) -> None:
        p = self._prctl
        if not self._whole_sets:
            super().set(effective, permitted, inheritable)
            return
        args = []
        for flag, mask in ((p.CAP_EFFECTIVE, effective), (p.CAP_PERMITTED, permitted),
                           (p.CAP_INHERITABLE, inheritable)):
            args.append(([c for c in self._caps if mask >> c & 1], flag, True))
            args.append(([c for c in self._caps if not mask >> c & 1], flag, False))
        p.set_caps(*args)

    def set_keepcaps(self, keep: bool) -> None:
        self._prctl.set_keepcaps(keep)


_NAMES = {"ctypes": "ctypes", "prctl": "python-prctl", "python-prctl": "python-prctl"}
_PRCTL_MISSING = ("python-prctl is not installed "
                  "(pip install 'pytest-isolate-container[prctl]', needs libcap-dev)")


def _load_prctl() -> CapabilityBackend | None:
    try:
        module = importlib.import_module("prctl")
    except ImportError:
        return None
    return _PrctlBackend(module)


def get_backend(name: str | None = None) -> CapabilityBackend:
    """The backend called ``name``: ``"ctypes"`` or ``"prctl"`` (``"python-prctl"``).

    Without a name, ``$PYTEST_ISOLATE_CAPS_BACKEND`` decides if it is set; otherwise
    python-prctl when it can be imported, ctypes when not. Asking for python-prctl
    when it is not installed is a :class:`ConfigError`, not a silent fallback.
    """
    field = "backend"
    if name is None and os.environ.get(BACKEND_ENV):
        name, field = os.environ[BACKEND_ENV], BACKEND_ENV
    if name is None:
        return _load_prctl() or _CtypesBackend()
    if name not in _NAMES:
        raise ConfigError(field, name,
                          "'ctypes' or 'prctl' (unset picks python-prctl when it is installed)")
    if _NAMES[name] == "ctypes":
        return _CtypesBackend()
    backend = _load_prctl()
    if backend is None:
        raise ConfigError(field, name, _PRCTL_MISSING)
    return backend


def backend_name() -> str:
    """``"python-prctl"`` or ``"ctypes"``: the backend :func:`apply` uses by default."""
    return get_backend().name


def _resolve(backend: CapabilityBackend | str | None) -> CapabilityBackend:
    return backend if backend is not None and not isinstance(backend, str) \
        else get_backend(backend)


def prepare_uid_change(backend: CapabilityBackend | str | None = None) -> None:
    """Keep the permitted set through the coming setuid(2) from root to another uid.

    Call before setuid; :func:`apply` afterwards restores the effective set and turns
    the flag off again.
    """
    _resolve(backend).set_keepcaps(True)


def apply(sets: CapabilitySets,
          backend: CapabilityBackend | str | None = None) -> frozenset[str]:
    """Give the calling thread exactly ``sets``, minus what it does not hold itself.

    Returns the names that were asked for but could not be granted (empty when all
    were). Raises :class:`SetupError` (step ``"capabilities"``) when a cap could not
    be removed, so the payload never runs with more than it was configured with.
    """
    be = _resolve(backend)
    every = range(_LAST + 1)
    want_b, want_e, want_p, want_i, want_a = (
        _mask(s) for s in (sets.bounding, sets.effective, sets.permitted, sets.inheritable,
                           sets.ambient))
    step = "read the current capabilities"
    prm: int | None = None
    try:
        eff, prm, inh = be.get()
        if eff != prm:  # after setuid with keepcaps: effective is empty, permitted kept
            step = "raise the effective set to the permitted set"
            be.set(prm, prm, inh)
        step = "read the bounding set"
        bset = sum(1 << c for c in every if be.bounding_has(c))
        new_b = want_b & bset
        for cap in _bits(bset & ~new_b):
            step = f"drop {_name(cap)} from the bounding set"
            be.bounding_drop(cap)
        new_p = want_p & prm
        new_e = want_e & new_p
        # capset(2): without CAP_SETPCAP, inheritable may only gain caps from permitted.
        allowed_i = inh | (new_b if prm >> _CAP_SETPCAP & 1 else prm & new_b)
        new_i = want_i & allowed_i
        step = "capset"
        be.set(new_e, new_p, new_i)
        new_a, ambient = _apply_ambient(be, want_a & new_p & new_i)
        step = "clear keepcaps"
        be.set_keepcaps(False)
    except OSError as e:
        hint = ""
        if e.errno == errno.EPERM and prm is not None and not prm >> _CAP_SETPCAP & 1:
            hint = (" (the process lacks CAP_SETPCAP: was the uid changed without "
                    "prepare_uid_change() first?)")
        raise SetupError("capabilities", f"{step}: {os.strerror(e.errno or 0)}{hint}",
                         e.errno) from e
    _verify(be, every, new_b, (new_e, new_p, new_i), new_a if ambient else None)
    missing = (want_b & ~new_b) | (want_e & ~new_e) | (want_p & ~new_p) \
        | (want_i & ~new_i) | (want_a & ~new_a)
    return _names(missing)


def _apply_ambient(be: CapabilityBackend, wanted: int) -> tuple[int, bool]:
    """Clear the ambient set and raise ``wanted`` in it; (what was raised, supported)."""
    try:
        be.ambient_clear()
    except OSError as e:
        if e.errno == errno.EINVAL:  # Linux < 4.3: no ambient set, nothing to clear
            return 0, False
        raise
    raised = 0
    for cap in _bits(wanted):
        try:
            be.ambient_raise(cap)
        except OSError as e:  # SECBIT_NO_CAP_AMBIENT_RAISE: not granted, not fatal
            if e.errno != errno.EPERM:
                raise
        else:
            raised |= 1 << cap
    return raised, True


def _verify(be: CapabilityBackend, every: range, bounding: int,
            epi: tuple[int, int, int], ambient: int | None) -> None:
    # Read back through system calls, not /proc: the container may have no /proc yet.
    try:
        got_epi = be.get()
        got_b = sum(1 << c for c in every if be.bounding_has(c))
        got_a = None if ambient is None else sum(1 << c for c in every if be.ambient_has(c))
    except OSError as e:
        raise SetupError("capabilities", f"read back: {os.strerror(e.errno or 0)}",
                         e.errno) from e
    expected = (bounding, *epi, ambient)
    got = (got_b, *got_epi, got_a)
    for label, want, have in zip(("bounding", "effective", "permitted", "inheritable",
                                  "ambient"), expected, got, strict=True):
        if want != have and want is not None and have is not None:
            raise SetupError("capabilities",
                             f"the {label} set is {sorted(_names(have))} after applying "
                             f"{sorted(_names(want))} ({be.name} backend)")


def current() -> CapabilitySets:
    """The calling process's five sets, from ``/proc/self/status``."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)

    def mask(key: str) -> frozenset[str]:
        value = status.get(key)
        return _names(int(value.strip(), 16)) if value is not None else frozenset()

    return CapabilitySets(bounding=mask("CapBnd"), effective=mask("CapEff"),
                          permitted=mask("CapPrm"), inheritable=mask("CapInh"),
                          ambient=mask("CapAmb"))
