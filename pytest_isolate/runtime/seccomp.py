"""Seccomp profiles: which system calls a container's processes may make.

A :class:`Profile` is plain data: a default action, rules (a syscall, an action and
optional argument comparisons) and the architectures the filter covers. It comes
from :func:`load_profile`, which knows three built-in names and reads Docker/OCI
JSON profiles; ``"unconfined"`` gives ``None``, no filter at all.

The work is split between the two sides of a container start so that the container
side stays small::

    host                                        container (after no_new_privs)
    ----                                        ------------------------------
    load_profile(spec, caps)  -> Profile
    Profile.compile()         -> BPF bytes  ---> apply_bpf(bytes): one seccomp(2) call
    (libseccomp via pyseccomp, cached by
     the profile's content)

Only the host needs libseccomp, and only when seccomp is asked for: pyseccomp is
imported inside the functions that use it (runc's ``seccomp_unsupported.go`` idea),
and its absence is a :class:`~.errors.ConfigError` that says what to install.
:func:`apply_bpf` is ctypes only.

The built-in profiles
---------------------
``default`` -- hermetic CI. Everything is allowed except what reaches past the
container: mounting (classic and new mount API), setns, new namespaces through
unshare/clone, kernel modules, kexec/reboot, kernel keyrings, bpf, perf events,
userfaultfd, swap, process accounting, setting clocks (adjtimex and clock_adjtime
too: the filter cannot tell their read form from their write form, the mode is
behind a pointer), raw port I/O, quotas, fanotify, open_by_handle_at, syslog, the
ptrace family except ``PTRACE_TRACEME``, personalities other than Docker's five,
vm86, uselib, and TIOCSTI/TIOCLINUX (typing into a terminal). Denials answer EPERM,
except ``clone3`` and ``io_uring_*``, which answer ENOSYS: a filter cannot look into
clone3's flags, and ENOSYS makes glibc (>= 2.34) fall back to clone, whose flags it
can check; io_uring users fall back to ordinary I/O the same way. chroot,
sethostname/setdomainname (the UTS namespace is the container's), name_to_handle_at,
mbind/set_mempolicy and plain ``unshare(CLONE_FILES|CLONE_FS)`` stay allowed. As in
Docker's profile, a capability given to the container lifts the denials it is about
(CAP_SYS_ADMIN: mounts, namespaces, clone3 ...; CAP_SYS_PTRACE: ptrace ...); keyrings,
userfaultfd, io_uring, personality and TIOCSTI stay denied whatever the capabilities.
On x86_64 the 32-bit (int 0x80) and x32 ABIs get the same rules (aarch64: arm), and
any other architecture's calls kill the process.

``strict`` -- untrusted code. Everything is denied (EPERM) except what CPython needs
for pure-Python code, threads, subprocesses, files, pipes, poll/epoll/select, signals,
timers, AF_INET/AF_INET6 stream and datagram sockets and AF_UNIX socket pairs (no
AF_UNIX sockets of their own, so no way to a host daemon's socket file; no raw,
packet or netlink sockets; no TIOCSTI). The capabilities do not change it. Native ABI only: a
32-bit call kills the process.

Docker/OCI JSON files
---------------------
``defaultAction``, ``defaultErrnoRet``, ``architectures`` or ``archMap``, and
``syscalls[]`` with ``names``/``name``, ``action``, ``errnoRet``, ``args`` and
``includes``/``excludes`` by ``caps``, ``arches`` (Go names: amd64, arm64 ...) and
``minKernel``, resolved for this host and the given capabilities when loading, as
moby does. As in runc, args that compare the same argument twice become separate
rules (either matches), and rules whose action is the default action are dropped.
``flags`` is accepted and ignored: the filter is always installed with TSYNC only.

A syscall name libseccomp does not know at all (newer than its table, or a typo) is
skipped when skipping cannot widen what is allowed -- the syscall then gets the
default action, which is at least as strict as the rule's (an allow rule in a
deny-by-default profile: runc and Docker skip these too, and Docker's own profile
lists syscalls newer than libseccomp 2.5). Such names are kept in
:attr:`Profile.skipped`. Skipping a rule that restricts a syscall would silently
allow it, so that is an error naming the syscall and the rule. Names that only
exist on some architectures (``chown32``) are given to libseccomp, which applies
them where they exist.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import os
import platform
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .capabilities import DOCKER_DEFAULT
from .errors import ConfigError

__all__ = [
    "ACTIONS",
    "BUILTIN_PROFILES",
    "OPS",
    "Condition",
    "Profile",
    "Rule",
    "apply_bpf",
    "libseccomp_version",
    "load_profile",
]

BUILTIN_PROFILES = ("default", "strict", "unconfined")

ACTIONS = ("allow", "errno", "kill_process", "kill_thread", "trap", "log", "trace")
"""Rule actions. ``errno`` and ``trace`` take an ``errno`` (EPERM if none is given)."""

# libseccomp's scmp_compare values.
OPS: Mapping[str, int] = {"!=": 1, "<": 2, "<=": 3, "==": 4, ">=": 5, ">": 6, "masked_eq": 7}
"""Argument comparisons. ``masked_eq`` is ``(arg & value) == value_two``, as in Docker."""

_U64 = (1 << 64) - 1
_MAX_ERRNO = 4095

# The kernel's order of precedence when several filters answer: the lower the rank,
# the more permissive. Skipping a rule is safe when the default action ranks as high.
_RANK = {"allow": 0, "log": 1, "trace": 2, "errno": 3, "trap": 4, "kill_thread": 5,
         "kill_process": 6}

_DOCKER_ACTIONS = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_LOG": "log",
    "SCMP_ACT_TRACE": "trace",
}
_DOCKER_OPS = {
    "SCMP_CMP_NE": "!=", "SCMP_CMP_LT": "<", "SCMP_CMP_LE": "<=", "SCMP_CMP_EQ": "==",
    "SCMP_CMP_GE": ">=", "SCMP_CMP_GT": ">", "SCMP_CMP_MASKED_EQ": "masked_eq",
}
_TOP_KEYS = {"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls",
             "flags", "comment", "listenerPath", "listenerMetadata"}
_RULE_KEYS = {"names", "name", "action", "errnoRet", "args", "comment", "includes",
              "excludes"}
_FILTER_KEYS = {"arches", "caps", "minKernel"}
_ARG_KEYS = {"index", "value", "valueTwo", "op"}

# AUDIT_ARCH_* values: what seccomp sees in seccomp_data.arch and libseccomp takes.
_EM = {"x86": 3, "mips": 8, "parisc": 15, "ppc": 20, "ppc64": 21, "s390": 22, "arm": 40,
       "x86_64": 62, "aarch64": 183, "riscv": 243}
_B64, _LE, _N32 = 0x80000000, 0x40000000, 0x20000000
_ARCH_TOKENS: Mapping[str, int] = {
    "x86": _EM["x86"] | _LE,
    "x86_64": _EM["x86_64"] | _B64 | _LE,
    "x32": _EM["x86_64"] | _LE,
    "arm": _EM["arm"] | _LE,
    "aarch64": _EM["aarch64"] | _B64 | _LE,
    "mips": _EM["mips"],
    "mips64": _EM["mips"] | _B64,
    "mips64n32": _EM["mips"] | _B64 | _N32,
    "mipsel": _EM["mips"] | _LE,
    "mipsel64": _EM["mips"] | _B64 | _LE,
    "mipsel64n32": _EM["mips"] | _B64 | _LE | _N32,
    "parisc": _EM["parisc"],
    "parisc64": _EM["parisc"] | _B64,
    "ppc": _EM["ppc"],
    "ppc64": _EM["ppc64"] | _B64,
    "ppc64le": _EM["ppc64"] | _B64 | _LE,
    "s390": _EM["s390"],
    "s390x": _EM["s390"] | _B64,
    "riscv64": _EM["riscv"] | _B64 | _LE,
}

# platform.machine() -> (libseccomp arch name, Go arch name as in Docker's "arches").
_MACHINES = {
    "x86_64": ("x86_64", "amd64"), "amd64": ("x86_64", "amd64"),
    "i386": ("x86", "386"), "i486": ("x86", "386"), "i586": ("x86", "386"),
    "i686": ("x86", "386"),
    "aarch64": ("aarch64", "arm64"), "arm64": ("aarch64", "arm64"),
    "armv6l": ("arm", "arm"), "armv7l": ("arm", "arm"), "armv8l": ("arm", "arm"),
    "ppc64le": ("ppc64le", "ppc64le"), "ppc64": ("ppc64", "ppc64"),
    "s390x": ("s390x", "s390x"), "riscv64": ("riscv64", "riscv64"),
    "mips64": ("mips64", "mips64"), "mips64el": ("mipsel64", "mips64le"),
}
# The older ABIs a 64-bit kernel also runs, which the built-in profiles cover too.
_COMPAT_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",)}

# seccomp(2)'s number; apply_bpf must not need libseccomp to find it.
_SYS_SECCOMP = {"x86_64": 317, "amd64": 317, "aarch64": 277, "arm64": 277, "riscv64": 277,
                "s390x": 348, "ppc64le": 358, "ppc64": 358, "i386": 354, "i686": 354,
                "armv7l": 383, "armv6l": 383}
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1

_INSTALL_HINT = ("seccomp needs libseccomp and its Python binding: install the library "
                 "(Debian/Ubuntu: apt-get install libseccomp2; Fedora: dnf install "
                 "libseccomp) and `pip install pyseccomp`, or use seccomp='unconfined'")


def _native() -> tuple[str, str]:
    machine = platform.machine()
    return _MACHINES.get(machine, (machine, machine))


def _fail(spec: str, message: str) -> ConfigError:
    return ConfigError("seccomp", spec, message)


# ------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class Condition:
    """A comparison of syscall argument ``index`` (0-5) with ``value``.

    ``op`` is one of :data:`OPS`; for ``masked_eq`` the argument matches when
    ``arg & value == value_two`` (Docker's ``value``/``valueTwo``).
    """

    index: int
    op: str
    value: int
    value_two: int = 0

    def check(self, where: str, spec: str) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool) \
                or not 0 <= self.index <= 5:
            raise _fail(spec, f"{where}: argument index {self.index!r} is not 0-5 "
                              "(a syscall has at most six arguments)")
        if self.op not in OPS:
            raise _fail(spec, f"{where}: unknown comparison {self.op!r}; use one of "
                              f"{', '.join(OPS)}")
        for label, v in (("value", self.value), ("valueTwo", self.value_two)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _U64:
                raise _fail(spec, f"{where}: {label} {v!r} is not an unsigned 64-bit "
                                  "integer")


@dataclass(frozen=True)
class Rule:
    """``action`` for calls of ``syscall`` whose arguments satisfy every condition.

    Several rules for one syscall with the same action match when any of them does.
    """

    syscall: str
    action: str = "errno"
    errno: int | None = None
    args: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        if self.errno is None and self.action in ("errno", "trace"):
            object.__setattr__(self, "errno", errno.EPERM)

    def check(self, where: str, spec: str) -> None:
        if not isinstance(self.syscall, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*",
                                                                 self.syscall):
            raise _fail(spec, f"{where}: {self.syscall!r} is not a syscall name "
                              "(lower-case letters, digits and '_', like 'getcwd')")
        _check_action(self.action, self.errno, where, spec)
        seen: set[int] = set()
        for i, cond in enumerate(self.args):
            if not isinstance(cond, Condition):
                raise _fail(spec, f"{where}.args[{i}]: {cond!r} is not a Condition")
            cond.check(f"{where}.args[{i}]", spec)
            if cond.index in seen:
                raise _fail(spec, f"{where}: argument {cond.index} is compared twice; "
                                  "libseccomp compares each argument once per rule, so "
                                  "write one rule per comparison (any of them matches)")
            seen.add(cond.index)


def _check_action(action: str, err: int | None, where: str, spec: str) -> None:
    if action not in ACTIONS:
        raise _fail(spec, f"{where}: unknown action {action!r}; use one of "
                          f"{', '.join(ACTIONS)}")
    if action in ("errno", "trace"):
        if not isinstance(err, int) or isinstance(err, bool) or not 0 <= err <= _MAX_ERRNO:
            raise _fail(spec, f"{where}: errno {err!r} is not a number from 0 to "
                              f"{_MAX_ERRNO}")
    elif err is not None:
        raise _fail(spec, f"{where}: an errno only goes with the errno or trace actions, "
                          f"not {action}")


@dataclass(frozen=True)
class Profile:
    """A seccomp filter, resolved for this host: what :meth:`compile` turns into BPF.

    ``architectures`` are libseccomp names (``"x86"``, ``"x32"``, ``"arm"`` ...) the
    filter covers besides the native one; a call from any other architecture kills the
    process. ``skipped`` lists the syscall names of a JSON profile that libseccomp
    does not know and that were left out (see the module documentation); it is not
    part of the filter's content. Equal content compiles to the same cached bytes,
    whatever the ``name``.
    """

    name: str
    default_action: str = "allow"
    default_errno: int | None = None
    rules: tuple[Rule, ...] = ()
    architectures: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "architectures", tuple(self.architectures))
        object.__setattr__(self, "skipped", tuple(self.skipped))
        if self.default_errno is None and self.default_action in ("errno", "trace"):
            object.__setattr__(self, "default_errno", errno.EPERM)
        _check_action(self.default_action, self.default_errno, "default action", self.name)
        for i, rule in enumerate(self.rules):
            if not isinstance(rule, Rule):
                raise _fail(self.name, f"rules[{i}]: {rule!r} is not a Rule")
            rule.check(f"rules[{i}] ({rule.syscall})", self.name)
        for arch in self.architectures:
            if arch not in _ARCH_TOKENS:
                raise _fail(self.name, f"unknown architecture {arch!r}; use one of "
                                       f"{', '.join(_ARCH_TOKENS)}")

    def canonical(self) -> str:
        """The filter's content as compact JSON (no name): the compile cache's key."""
        return json.dumps({
            "default": [self.default_action, self.default_errno],
            "arches": list(self.architectures),
            "rules": [[r.syscall, r.action, r.errno,
                       [[c.index, c.op, c.value, c.value_two] for c in r.args]]
                      for r in self.rules],
        }, separators=(",", ":"))

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def compile(self) -> bytes:
        """The classic-BPF program for :func:`apply_bpf`, built once per content.

        Raises :class:`~.errors.ConfigError` when libseccomp is missing or rejects
        a rule.
        """
        key = self.digest
        with _cache_lock:
            bpf = _bpf_cache.get(key)
        if bpf is None:
            built = _build_bpf(self)
            with _cache_lock:
                bpf = _bpf_cache.setdefault(key, built)
        return bpf


_bpf_cache: dict[str, bytes] = {}
_cache_lock = threading.Lock()


# ------------------------------------------------------------------------- libseccomp

_binding: Any = None


class _NoLibseccomp(ConfigError):
    """libseccomp or its binding is missing; ``value`` is the profile that needed it."""


def _seccomp() -> Any:
    """The libseccomp binding: pyseccomp, or the distribution's ``seccomp`` module."""
    global _binding
    if _binding is None:
        errors = []
        for name in ("pyseccomp", "seccomp"):
            try:
                # pyseccomp raises RuntimeError at import when libseccomp.so is missing.
                _binding = __import__(name)
                break
            except (ImportError, RuntimeError, OSError) as e:
                errors.append(f"{name}: {e}")
        else:
            raise _NoLibseccomp("seccomp", "libseccomp",
                                f"{_INSTALL_HINT} ({'; '.join(errors)})")
    return _binding


def libseccomp_version() -> str:
    """libseccomp's version as "major.minor.micro", or "unknown"."""
    path = ctypes.util.find_library("seccomp")
    if path is None:
        return "unknown"

    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                    ("micro", ctypes.c_uint)]

    try:
        lib = ctypes.CDLL(path)
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        v = lib.seccomp_version().contents
    except (OSError, AttributeError, ValueError):
        return "unknown"
    return f"{v.major}.{v.minor}.{v.micro}"


_NR_SCMP_ERROR = -1


def _resolve(name: str) -> int:
    """The native number of ``name``, a negative pseudo-number for a syscall that
    exists on other architectures only, or -1 when libseccomp does not know it."""
    sc = _seccomp()
    try:
        return int(sc.resolve_syscall(0, name))  # 0: SCMP_ARCH_NATIVE
    except ValueError:  # the distribution's binding raises for unknown names
        return _NR_SCMP_ERROR


def _action_value(action: str, err: int | None) -> int:
    """SCMP_ACT_* as a signed 32-bit int: the distribution's binding takes a C int."""
    value = {
        "allow": 0x7FFF0000,
        "errno": 0x00050000 | ((err or 0) & 0xFFFF),
        "trace": 0x7FF00000 | ((err or 0) & 0xFFFF),
        "log": 0x7FFC0000,
        "trap": 0x00030000,
        "kill_thread": 0x00000000,
        "kill_process": 0x80000000,
    }[action]
    return value - (1 << 32) if value >= 1 << 31 else value


_ATTR_ACT_BADARCH = 2
_BINDING_ERRORS = (OSError, RuntimeError, ValueError, OverflowError)
_MFD_CLOEXEC = 1


class _Fd:
    """The file-object face libseccomp's export functions want."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _build_bpf(profile: Profile) -> bytes:
    try:
        sc = _seccomp()
    except _NoLibseccomp as e:
        raise _NoLibseccomp("seccomp", profile.name, e.allowed) from None
    default = (profile.default_action, profile.default_errno)
    # pyseccomp raises OSError, the distribution's binding RuntimeError/ValueError.
    try:
        f = sc.SyscallFilter(_action_value(*default))
        f.set_attr(_ATTR_ACT_BADARCH, _action_value("kill_process", None))
        for arch in profile.architectures:
            if not f.exist_arch(_ARCH_TOKENS[arch]):
                f.add_arch(_ARCH_TOKENS[arch])
    except _BINDING_ERRORS as e:
        raise _fail(profile.name, f"libseccomp could not set up the filter: {e}") from e
    for i, rule in enumerate(profile.rules):
        if (rule.action, rule.errno) == default:
            continue  # libseccomp refuses rules that repeat the default action
        nr = _resolve(rule.syscall)
        if nr == _NR_SCMP_ERROR:
            raise _fail(profile.name,
                        f"rules[{i}]: libseccomp {libseccomp_version()} does not know the "
                        f"syscall {rule.syscall!r}; check the name, or upgrade libseccomp")
        args = [sc.Arg(c.index, OPS[c.op], c.value, c.value_two) for c in rule.args]
        try:
            f.add_rule(_action_value(rule.action, rule.errno), nr, *args)
        except _BINDING_ERRORS as e:
            raise _fail(profile.name,
                        f"rules[{i}] ({rule.syscall} -> {rule.action}): libseccomp "
                        f"refused the rule ({e}); a syscall can have one "
                        "unconditional rule, and conditional rules that do not "
                        "contradict it") from e
    fd = os.memfd_create("isolate-seccomp-bpf", _MFD_CLOEXEC)
    try:
        f.export_bpf(_Fd(fd))
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    except _BINDING_ERRORS as e:
        raise _fail(profile.name, f"libseccomp could not export the filter: {e}") from e
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- applying


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Resolved at import, in the host: the container side then makes no lookups at all.
_NR_SECCOMP = _SYS_SECCOMP.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def apply_bpf(bpf: bytes) -> None:
    """Install a compiled filter on every thread of the calling process.

    The caller has set no_new_privs (or holds CAP_SYS_ADMIN). Raises ``OSError``
    with the errno of seccomp(2); ``ESRCH`` when a thread could not be synchronised.
    """
    if _NR_SECCOMP is None:
        raise OSError(errno.ENOSYS, f"seccomp: unknown syscall number on {platform.machine()}")
    if not bpf or len(bpf) % 8:
        raise OSError(errno.EINVAL, "seccomp: a BPF program is a non-empty sequence of "
                                    "8-byte instructions")
    count = len(bpf) // 8
    if count > 0xFFFF:
        raise OSError(errno.EINVAL, f"seccomp: {count} instructions is too long a program")
    # Points into ``bpf`` itself, which outlives the call: no copy, no new ctypes type.
    prog = _SockFprog(count, ctypes.cast(ctypes.c_char_p(bpf), ctypes.c_void_p).value)
    rc = _syscall(ctypes.c_long(_NR_SECCOMP), ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
                  ctypes.c_long(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(prog))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
    if rc > 0:  # TSYNC: the id of a thread that cannot take the filter
        raise OSError(errno.ESRCH, f"seccomp: thread {rc} could not be synchronised")


# -------------------------------------------------------------------------- built-ins

_CLONE_NEW = {
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# clone(2) cannot take CLONE_NEWTIME: that bit is part of its exit-signal byte.
_CLONE_NS_MASK = functools.reduce(int.__or__, _CLONE_NEW.values()) & ~0xFF
_PTRACE_TRACEME = 0
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)  # PER_LINUX(32), UNAME26, query
_AF_UNIX, _AF_INET, _AF_INET6 = 1, 2, 10
_SOCK_STREAM, _SOCK_DGRAM, _SOCK_TYPE_MASK = 1, 2, 0xF

# (syscalls, errno, capabilities any one of which lifts the denial)
_DEFAULT_DENIED: tuple[tuple[tuple[str, ...], int, tuple[str, ...]], ...] = (
    # The runtime made the container's mounts before the filter went on.
    (("mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen",
      "fsconfig", "fsmount", "fspick", "mount_setattr", "setns"),
     errno.EPERM, ("CAP_SYS_ADMIN",)),
    # Kernel-wide state that no namespace isolates.
    (("reboot", "kexec_load", "kexec_file_load"), errno.EPERM, ("CAP_SYS_BOOT",)),
    (("init_module", "finit_module", "delete_module", "create_module",
      "get_kernel_syms", "query_module"), errno.EPERM, ("CAP_SYS_MODULE",)),
    (("add_key", "keyctl", "request_key"), errno.EPERM, ()),
    (("bpf",), errno.EPERM, ("CAP_SYS_ADMIN", "CAP_BPF")),
    (("perf_event_open",), errno.EPERM, ("CAP_SYS_ADMIN", "CAP_PERFMON")),
    (("userfaultfd",), errno.EPERM, ()),
    (("swapon", "swapoff", "lookup_dcookie", "quotactl", "quotactl_fd", "nfsservctl",
      "fanotify_init"), errno.EPERM, ("CAP_SYS_ADMIN",)),
    (("acct",), errno.EPERM, ("CAP_SYS_PACCT",)),
    (("settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex"),
     errno.EPERM, ("CAP_SYS_TIME",)),
    (("iopl", "ioperm"), errno.EPERM, ("CAP_SYS_RAWIO",)),
    (("open_by_handle_at",), errno.EPERM, ("CAP_DAC_READ_SEARCH",)),
    (("syslog",), errno.EPERM, ("CAP_SYSLOG",)),
    # Reading and writing other processes (ptrace itself is below).
    (("process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd"),
     errno.EPERM, ("CAP_SYS_PTRACE",)),
    (("vm86", "vm86old", "uselib"), errno.EPERM, ()),
    # A large attack surface that callers probe for and do without.
    (("io_uring_setup", "io_uring_enter", "io_uring_register"), errno.ENOSYS, ()),
)

_STRICT_ALLOWED: tuple[tuple[str, ...], ...] = (
    # memory
    ("brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mincore",
     "membarrier"),
    # descriptors and files
    ("read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
     "preadv2", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
     "lseek", "dup", "dup2", "dup3", "fcntl", "flock", "pipe", "pipe2", "stat", "fstat",
     "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
     "faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "umask",
     "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
     "unlink", "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat", "chmod",
     "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime",
     "utimes", "utimensat", "futimesat", "mknod", "mknodat", "truncate", "ftruncate",
     "fallocate", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fadvise64",
     "readahead", "sendfile", "copy_file_range", "splice", "tee", "getxattr", "lgetxattr",
     "fgetxattr", "listxattr", "llistxattr", "flistxattr", "setxattr", "lsetxattr",
     "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "memfd_create",
     "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch"),
    # waiting
    ("poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
     "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "futex",
     "futex_waitv", "set_robust_list", "get_robust_list"),
    # time
    ("clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday",
     "time", "times", "getitimer", "setitimer", "alarm", "timer_create", "timer_settime",
     "timer_gettime", "timer_getoverrun", "timer_delete", "timerfd_create",
     "timerfd_settime", "timerfd_gettime"),
    # signals
    ("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending",
     "rt_sigtimedwait", "sigaltstack", "signalfd", "signalfd4", "pause",
     "restart_syscall", "kill", "tgkill", "tkill"),
    # processes (clone is below)
    ("fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
     "pidfd_open", "pidfd_send_signal", "getpid", "getppid", "gettid", "getuid",
     "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "setuid",
     "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid",
     "setfsgid", "getpgrp", "getpgid", "setpgid", "getsid", "setsid", "set_tid_address",
     "rseq", "arch_prctl", "prctl", "capget", "getrlimit", "setrlimit", "prlimit64",
     "getrusage", "getpriority", "setpriority", "sched_yield", "sched_getaffinity",
     "sched_setaffinity", "sched_getparam", "sched_getscheduler",
     "sched_get_priority_max", "sched_get_priority_min", "uname", "sysinfo", "getrandom",
     "getcpu"),
    # sockets (socket and socketpair are below)
    ("bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
     "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
     "setsockopt", "getsockopt"),
)


def _cubes_outside(values: Iterable[int], width: int = 32) -> tuple[tuple[int, int], ...]:
    """``(mask, value)`` pairs such that a ``width``-bit number is not in ``values``
    exactly when ``number & mask == value`` for one of them.

    libseccomp compares an argument once per rule, and rules for one syscall and
    action are alternatives; this is how "anything but these values" becomes rules.
    """
    members = sorted(set(values))
    cubes: list[tuple[int, int]] = []

    def split(mask: int, value: int, group: list[int], free: list[int]) -> None:
        # Bits the whole group agrees on first: each costs a single cube.
        agreed = [b for b in free if len({m >> b & 1 for m in group}) == 1]
        b = agreed[0] if agreed else free[0]
        rest = [x for x in free if x != b]
        for side in (0, 1 << b):
            sub = [m for m in group if m & (1 << b) == side]
            if sub:
                if rest:
                    split(mask | 1 << b, value | side, sub, rest)
            else:
                cubes.append((mask | 1 << b, value | side))

    split(0, 0, members, list(range(width)))
    out: list[tuple[int, int]] = []
    for mask, value in cubes:
        # Free every bit that is not needed to keep the members out.
        for b in range(width):
            trial = mask & ~(1 << b)
            if trial != mask and all(m & trial != value & trial for m in members):
                mask, value = trial, value & trial
        if (mask, value) not in out:
            out.append((mask, value))
    return tuple(out)


def _masked(index: int, mask: int, value: int) -> tuple[Condition, ...]:
    return (Condition(index, "masked_eq", mask, value),)


def _clone_flags_index(arch: str) -> int:
    return 1 if arch in ("s390", "s390x") else 0  # s390 swaps clone's first two args


def _default_profile(caps: frozenset[str]) -> Profile:
    native, _ = _native()
    flags = _clone_flags_index(native)
    rules: list[Rule] = []

    def lifted(by: tuple[str, ...]) -> bool:
        return any(c in caps for c in by)

    for names, err, by in _DEFAULT_DENIED:
        if not lifted(by):
            rules.extend(Rule(n, "errno", err) for n in names)
    if not lifted(("CAP_SYS_ADMIN",)):
        for bit in _CLONE_NEW.values():
            rules.append(Rule("unshare", "errno", errno.EPERM, _masked(0, bit, bit)))
            if bit & _CLONE_NS_MASK:
                rules.append(Rule("clone", "errno", errno.EPERM, _masked(flags, bit, bit)))
        rules.append(Rule("clone3", "errno", errno.ENOSYS))
    if not lifted(("CAP_SYS_PTRACE",)):
        rules.append(Rule("ptrace", "errno", errno.EPERM,
                          (Condition(0, "!=", _PTRACE_TRACEME),)))
    # The kernel reads personality and the ioctl request as 32-bit: compare those bits.
    for mask, value in _cubes_outside(_PERSONALITIES):
        rules.append(Rule("personality", "errno", errno.EPERM, _masked(0, mask, value)))
    for request in (_TIOCSTI, _TIOCLINUX):
        rules.append(Rule("ioctl", "errno", errno.EPERM, _masked(1, 0xFFFFFFFF, request)))
    return Profile("default", "allow", None, tuple(rules), _COMPAT_ARCHES.get(native, ()))


def _strict_profile() -> Profile:
    native, _ = _native()
    rules = [Rule(n, "allow") for group in _STRICT_ALLOWED for n in group]
    rules.append(Rule("clone", "allow", None,
                      _masked(_clone_flags_index(native), _CLONE_NS_MASK, 0)))
    rules.append(Rule("clone3", "errno", errno.ENOSYS))
    rules.extend(Rule("ioctl", "allow", None, _masked(1, mask, value))
                 for mask, value in _cubes_outside((_TIOCSTI, _TIOCLINUX)))
    # socketpair(AF_UNIX) but no socket(AF_UNIX): a filesystem socket of the host (a
    # database, D-Bus, a container engine) is reached by connect(), which the network
    # namespace does not stop and a filter cannot tell by its path
    rules.append(Rule("socketpair", "allow", None, (Condition(0, "==", _AF_UNIX),)))
    for family in (_AF_INET, _AF_INET6):
        for kind in (_SOCK_STREAM, _SOCK_DGRAM):
            rules.append(Rule("socket", "allow", None,
                              (Condition(0, "==", family),
                               Condition(1, "masked_eq", _SOCK_TYPE_MASK, kind))))
    return Profile("strict", "errno", errno.EPERM, tuple(rules))


@functools.lru_cache(maxsize=16)
def _builtin(name: str, caps: frozenset[str]) -> Profile:
    profile = _default_profile(caps) if name == "default" else _strict_profile()
    for rule in profile.rules:
        if _resolve(rule.syscall) == _NR_SCMP_ERROR:
            raise _fail(name, f"the built-in profile names the syscall {rule.syscall!r}, "
                              f"which libseccomp {libseccomp_version()} does not know; "
                              "upgrade libseccomp (2.5.4 or later)")
    return profile


# ------------------------------------------------------------------------ Docker JSON


def _cap_name(cap: str) -> str:
    name = str(cap).strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _normalise_caps(caps: Iterable[str] | None) -> frozenset[str]:
    return DOCKER_DEFAULT if caps is None else frozenset(_cap_name(c) for c in caps)


def _kernel_version() -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    return tuple(int(x) for x in m.groups("0")) if m else (0, 0, 0)


class _Reader:
    """Turns one Docker/OCI JSON document into a Profile; errors name the JSON path."""

    def __init__(self, spec: str, caps: frozenset[str]) -> None:
        self.spec = spec
        self.caps = caps
        self.native, self.goarch = _native()
        self.kernel = _kernel_version()

    def fail(self, where: str, message: str) -> ConfigError:
        return _fail(self.spec, f"{where}: {message}")

    def expect(self, value: object, kind: type | tuple[type, ...], where: str,
               what: str) -> Any:
        if not isinstance(value, kind):
            raise self.fail(where, f"expected {what}, got {json.dumps(value)}")
        return value

    def uint(self, value: object, where: str, limit: int = _U64) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise self.fail(where, f"expected an integer from 0 to {limit}, got "
                                   f"{json.dumps(value)}")
        return value

    def keys(self, obj: Mapping[str, Any], known: set[str], where: str) -> None:
        for key in obj:
            if key not in known:
                raise self.fail(where, f"unknown key {key!r}; a Docker/OCI seccomp profile "
                                       f"has {', '.join(sorted(known))} here")

    def action(self, value: object, where: str) -> str:
        if value == "SCMP_ACT_NOTIFY":
            raise self.fail(where, "SCMP_ACT_NOTIFY needs a seccomp agent listening on a "
                                   "socket, which pytest-isolate does not run; use "
                                   "SCMP_ACT_ERRNO or SCMP_ACT_LOG")
        if not isinstance(value, str) or value not in _DOCKER_ACTIONS:
            raise self.fail(where, f"unknown action {json.dumps(value)}; use one of "
                                   f"{', '.join(_DOCKER_ACTIONS)}")
        return _DOCKER_ACTIONS[value]

    def arch(self, value: object, where: str) -> str:
        name = value.removeprefix("SCMP_ARCH_").lower() if isinstance(value, str) else ""
        if not isinstance(value, str) or not value.startswith("SCMP_ARCH_") \
                or name not in _ARCH_TOKENS:
            raise self.fail(where, f"unknown architecture {json.dumps(value)}; use "
                                   "SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_AARCH64 ...")
        return name

    def version(self, value: object, where: str) -> tuple[int, ...]:
        m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", value) if isinstance(value, str) \
            else None
        if m is None:
            raise self.fail(where, f"minKernel {json.dumps(value)} is not a version like "
                                   "\"4.8\"")
        return tuple(int(x) for x in m.groups("0"))

    def applies(self, entry: Mapping[str, Any], where: str) -> bool:
        """moby's includes/excludes: every included cap and arch, none excluded."""
        result = True
        for key in ("includes", "excludes"):
            flt = self.expect(entry.get(key, {}), dict, f"{where}.{key}", "an object")
            self.keys(flt, _FILTER_KEYS, f"{where}.{key}")
            arches = self.expect(flt.get("arches", []), list, f"{where}.{key}.arches",
                                 "a list of architecture names")
            caps = self.expect(flt.get("caps", []), list, f"{where}.{key}.caps",
                               "a list of capability names")
            for item in (*arches, *caps):
                self.expect(item, str, f"{where}.{key}", "names as strings")
            caps = [_cap_name(c) for c in caps]
            newer = (self.kernel >= self.version(flt["minKernel"], f"{where}.{key}.minKernel")
                     if "minKernel" in flt else None)
            if key == "includes":
                result = result and all(c in self.caps for c in caps) \
                    and (not arches or self.goarch in arches) and newer is not False
            else:
                result = result and not any(c in self.caps for c in caps) \
                    and self.goarch not in arches and newer is not True
        return result

    def conditions(self, raw: object, where: str) -> list[tuple[Condition, ...]]:
        """The arg comparisons as alternatives: one tuple when the indexes differ (all
        must hold), one per comparison when an index repeats (any may hold; runc)."""
        items = self.expect(raw, list, where, "a list of argument comparisons")
        conds = []
        for i, arg in enumerate(items):
            at = f"{where}[{i}]"
            self.expect(arg, dict, at, "an object with index, value, valueTwo and op")
            self.keys(arg, _ARG_KEYS, at)
            for key in ("index", "op"):
                if key not in arg:
                    raise self.fail(at, f"{key!r} is missing")
            op = arg["op"]
            if op not in _DOCKER_OPS:
                raise self.fail(f"{at}.op", f"unknown comparison {json.dumps(op)}; use one "
                                            f"of {', '.join(_DOCKER_OPS)}")
            conds.append(Condition(self.uint(arg["index"], f"{at}.index", 5), _DOCKER_OPS[op],
                                   self.uint(arg.get("value", 0), f"{at}.value"),
                                   self.uint(arg.get("valueTwo", 0), f"{at}.valueTwo")))
        if len({c.index for c in conds}) == len(conds):
            return [tuple(conds)]
        return [(c,) for c in conds]

    def read(self, doc: object) -> Profile:
        self.expect(doc, dict, "the file", "a JSON object (a Docker/OCI seccomp profile)")
        assert isinstance(doc, dict)
        if doc.get("listenerPath"):
            raise self.fail("listenerPath", "a seccomp agent (SCMP_ACT_NOTIFY) is not "
                                            "supported by pytest-isolate; remove it")
        self.keys(doc, _TOP_KEYS, "the profile")
        if "defaultAction" not in doc:
            raise self.fail("the profile", "defaultAction is missing (e.g. "
                                           "\"SCMP_ACT_ERRNO\" or \"SCMP_ACT_ALLOW\")")
        default = self.action(doc["defaultAction"], "defaultAction")
        default_errno = None
        if default in ("errno", "trace"):
            default_errno = self.uint(doc.get("defaultErrnoRet", errno.EPERM),
                                      "defaultErrnoRet", _MAX_ERRNO)
        arches = self.architectures(doc)
        rules: list[Rule] = []
        skipped: list[str] = []
        calls = self.expect(doc.get("syscalls") or [], list, "syscalls", "a list of rules")
        for i, entry in enumerate(calls):
            where = f"syscalls[{i}]"
            self.expect(entry, dict, where, "an object with names and action")
            self.keys(entry, _RULE_KEYS, where)
            names = self.names(entry, where)
            if "action" not in entry:
                raise self.fail(where, "action is missing")
            action = self.action(entry["action"], f"{where}.action")
            err = None
            if "errnoRet" in entry:
                if action not in ("errno", "trace"):
                    raise self.fail(f"{where}.errnoRet", "errnoRet only goes with "
                                                         "SCMP_ACT_ERRNO or SCMP_ACT_TRACE")
                err = self.uint(entry["errnoRet"], f"{where}.errnoRet", _MAX_ERRNO)
            alternatives = self.conditions(entry.get("args") or [], f"{where}.args")
            if not self.applies(entry, where):
                continue
            for name in names:
                if _resolve(name) == _NR_SCMP_ERROR:
                    if _RANK[action] <= _RANK[default]:
                        skipped.append(name)
                        continue
                    raise self.fail(f"{where}.names", f"unknown syscall {name!r}: libseccomp "
                                    f"{libseccomp_version()} does not know it on any "
                                    "architecture, so this rule, which restricts it, cannot "
                                    "be enforced; fix the name, or upgrade libseccomp if "
                                    "the syscall is newer than it")
                rules.extend(Rule(name, action, err, conds) for conds in alternatives)
        return Profile(self.spec, default, default_errno, tuple(rules), tuple(arches),
                       tuple(dict.fromkeys(skipped)))

    def names(self, entry: Mapping[str, Any], where: str) -> list[str]:
        if "name" in entry and "names" in entry:
            raise self.fail(where, "has both name and names; use names")
        if "name" in entry:
            names = [self.expect(entry["name"], str, f"{where}.name", "a syscall name")]
        elif "names" in entry:
            names = self.expect(entry["names"], list, f"{where}.names",
                                "a list of syscall names")
        else:
            raise self.fail(where, "names is missing (a list of syscall names)")
        for n in names:
            self.expect(n, str, f"{where}.names", "syscall names as strings")
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", n):
                raise self.fail(f"{where}.names", f"{n!r} is not a syscall name")
        return list(names)

    def architectures(self, doc: Mapping[str, Any]) -> list[str]:
        if "architectures" in doc and "archMap" in doc:
            raise self.fail("the profile", "has both architectures and archMap; use one")
        if "architectures" in doc:
            raw = self.expect(doc["architectures"] or [], list, "architectures",
                              "a list like [\"SCMP_ARCH_X86_64\"]")
            arches = [self.arch(a, f"architectures[{i}]") for i, a in enumerate(raw)]
        else:
            arches = []
            raw = self.expect(doc.get("archMap") or [], list, "archMap",
                              "a list of {architecture, subArchitectures}")
            for i, item in enumerate(raw):
                at = f"archMap[{i}]"
                self.expect(item, dict, at, "an object")
                self.keys(item, {"architecture", "subArchitectures"}, at)
                main = self.expect(item.get("architecture"), str, f"{at}.architecture",
                                   "an architecture like \"SCMP_ARCH_X86_64\"")
                subs = self.expect(item.get("subArchitectures") or [], list,
                                   f"{at}.subArchitectures", "a list of architectures")
                # moby keeps the native entry only; the others may name architectures
                # this libseccomp has never heard of.
                if main.removeprefix("SCMP_ARCH_").lower() == self.native:
                    arches.append(self.arch(main, f"{at}.architecture"))
                    arches.extend(self.arch(s, f"{at}.subArchitectures[{j}]")
                                  for j, s in enumerate(subs))
        return [a for a in dict.fromkeys(arches) if a != self.native]


def _read_json(path: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise _fail(path, f"no such file (looked in {os.path.abspath(path)}); give "
                          "'default', 'strict', 'unconfined' or the path of a Docker/OCI "
                          "seccomp JSON profile") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory; give the path of a JSON file") from None
    except PermissionError:
        raise _fail(path, "cannot be read (permission denied)") from None
    except UnicodeDecodeError as e:
        raise _fail(path, f"is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(path, f"is not valid JSON: {e.msg} at line {e.lineno} column "
                          f"{e.colno}; fix the file") from None


# ---------------------------------------------------------------------------- loading


def load_profile(spec: str, capabilities: frozenset[str] | None = None) -> Profile | None:
    """The profile ``spec`` names, resolved for this host and ``capabilities``.

    ``spec`` is ``"default"``, ``"strict"``, ``"unconfined"`` (``None``: no filter)
    or the path of a Docker/OCI JSON profile. ``capabilities`` is the container's
    capability set (``"CAP_SYS_ADMIN"`` ...; ``None`` is Docker's default set): it
    decides the JSON ``includes``/``excludes`` and what the default profile lifts.
    The profile is compiled once here, so every error shows up now as a
    :class:`~.errors.ConfigError` with field ``"seccomp"``.
    """
    if not isinstance(spec, (str, os.PathLike)) or not str(spec):
        raise _fail(str(spec), "give 'default', 'strict', 'unconfined' or the path of a "
                               "Docker/OCI seccomp JSON profile")
    spec = os.fspath(spec)
    if spec == "unconfined":
        return None
    caps = _normalise_caps(capabilities)
    try:
        if spec in ("default", "strict"):
            profile = _builtin(spec, caps if spec == "default" else frozenset())
        elif "/" in spec or spec.endswith(".json") or os.path.exists(spec):
            profile = _Reader(spec, caps).read(_read_json(spec))
        else:
            raise _fail(spec, "unknown profile name; use 'default', 'strict', "
                              "'unconfined' or the path of a Docker/OCI seccomp JSON file")
        profile.compile()
    except _NoLibseccomp as e:  # name the profile that needed it
        raise _NoLibseccomp("seccomp", spec, e.allowed) from None
    return profile
