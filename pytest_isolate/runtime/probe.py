"""What this host lets a container runtime do, found by doing it in throwaway children.

``probe()`` forks a short-lived child per feature and has it try the real thing:
unshare each namespace kind (inside a new user namespace when this process is not
root), write uid/gid maps, mount proc and tmpfs in a private mount namespace, bring
loopback up in a new network namespace, load a seccomp filter, drop a capability.
Cgroups are read from the host's layout (``cgroups.detect``). Nothing a child does
is visible to the host: every namespace it makes dies with it.

Each :class:`Feature` says whether it is available, how it is provided, and when it
is not, why (the cause as far as the host tells it: an AppArmor sysctl, a read-only
cgroupfs, a missing library) and what would fix it. ``pytest-isolate doctor`` prints
this table.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from . import linux

if TYPE_CHECKING:
    from .cgroups import CgroupLayout

__all__ = ["Feature", "Probe", "probe"]

NAMESPACES: tuple[tuple[str, int], ...] = (
    ("pid", linux.CLONE_NEWPID), ("mount", linux.CLONE_NEWNS), ("uts", linux.CLONE_NEWUTS),
    ("ipc", linux.CLONE_NEWIPC), ("net", linux.CLONE_NEWNET),
    ("cgroup", linux.CLONE_NEWCGROUP),
)
# Limits a container of the default profile depends on, by controller.
LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
CHILD_TIMEOUT = 10.0


@dataclass(frozen=True)
class Feature:
    """One capability of the host, as a probe found it."""

    name: str
    available: bool
    how: str = ""      # how it is provided: "unshare", "in a user namespace", "v1 at ..."
    why_not: str = ""  # the cause, when not available
    fix: str = ""      # what would make it available
    required: bool = True  # needed for full isolation (False: used when there)


@dataclass(frozen=True)
class Probe:
    """Every feature, and what they add up to."""

    root: bool
    features: tuple[Feature, ...]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def missing(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.required and not f.available)

    @property
    def full(self) -> bool:
        """Full isolation is possible: every required feature is available."""
        return not self.missing

    def to_dict(self) -> dict[str, object]:
        return {"root": self.root, "full": self.full,
                "features": [asdict(f) for f in self.features]}

    def table(self) -> str:
        """The probe as a text table: feature, available, how, why not, fix."""
        rows = [("feature", "available", "how", "why not", "fix")]
        for f in self.features:
            mark = "yes" if f.available else ("no" if f.required else "no (optional)")
            rows.append((f.name, mark, f.how, f.why_not, f.fix))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = []
        for r in rows:
            head = "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True))
            tail = "; ".join(x for x in r[3:] if x) if r is not rows[0] else "why not; fix"
            lines.append(f"{head}  {tail}".rstrip())
        lines.insert(1, "-" * min(100, max(len(x) for x in lines)))
        return "\n".join(lines)


# ------------------------------------------------------------------------ children


def in_child(fn: Callable[[], None], timeout: float = CHILD_TIMEOUT) -> str | None:
    """Run ``fn()`` in a forked child. None when it returned; else the error, as text.

    The child leaves through ``os._exit``: nothing of it returns into the caller, and
    whatever it unshared, mounted or changed dies with it.
    """
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            os.close(r)
            linux.set_pdeathsig(signal.SIGKILL)
            try:
                fn()
                code = 0
            except BaseException as e:
                os.write(w, _describe(e).encode()[:4000])
                code = 1
        finally:
            os._exit(code)
    os.close(w)
    try:
        import select

        chunks = []
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                chunks.append(f"timed out after {timeout:g} s".encode())
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return None
    text = b"".join(chunks).decode("utf-8", "replace")
    if text:
        return text
    if os.WIFSIGNALED(status):
        return f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return f"{errno.errorcode.get(e.errno, str(e.errno))}: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"


def _fork_and_wait(fn: Callable[[], None]) -> None:
    """For PID namespaces: the namespace's first process is a child. Raise its error."""
    err = in_child(fn)
    if err is not None:
        raise RuntimeError(err)


# --------------------------------------------------------------------- the checks


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


Sysctls = Callable[[str], "str | None"]


def _sysctl(name: str) -> str | None:
    return _read("/proc/sys/" + name.replace(".", "/"))


def userns_cause(error: str, sysctl: Sysctls = _sysctl) -> tuple[str, str]:
    """(cause, fix) for a user namespace that could not be made."""
    if sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return ("kernel.apparmor_restrict_unprivileged_userns=1: AppArmor refuses "
                "unprivileged user namespaces (Ubuntu 23.10 and later, GitHub's "
                "ubuntu-24.04 runners)",
                "run pytest with sudo, or 'sudo sysctl -w "
                "kernel.apparmor_restrict_unprivileged_userns=0'")
    if sysctl("kernel.unprivileged_userns_clone") == "0":
        return ("kernel.unprivileged_userns_clone=0: this kernel refuses unprivileged "
                "user namespaces",
                "run pytest with sudo, or 'sudo sysctl -w kernel.unprivileged_userns_clone=1'")
    if sysctl("user.max_user_namespaces") == "0":
        return ("user.max_user_namespaces=0: user namespaces are switched off",
                "run pytest with sudo, or 'sudo sysctl -w user.max_user_namespaces=15000'")
    return (f"unshare(CLONE_NEWUSER) failed ({error}); inside a container a seccomp "
            "profile or missing privileges refuse it",
            "run as root on the host, or the container with --privileged (or "
            "--security-opt seccomp=unconfined)")


def _ns_cause(error: str, root: bool) -> tuple[str, str]:
    if root:
        return (f"unshare failed as root ({error}): this process lacks CAP_SYS_ADMIN or a "
                "seccomp profile refuses it (an unprivileged Docker container)",
                "run the container with --privileged, or --cap-add SYS_ADMIN "
                "--security-opt seccomp=unconfined --security-opt apparmor=unconfined")
    return (f"unshare failed inside a user namespace ({error})",
            "run pytest with sudo")


def _make_userns(uid: int, gid: int) -> None:
    """In a child: a user namespace whose root is this process's uid and gid."""
    linux.unshare(linux.CLONE_NEWUSER)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")
    if os.getuid() != 0:
        raise RuntimeError("uid 0 is not mapped in the new user namespace")


class _Prober:
    def __init__(self, sysctl: Sysctls) -> None:
        self.root = os.geteuid() == 0
        self.sysctl = sysctl
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.userns_ok = False

    def enter(self) -> None:
        """In a child: what a container of this host starts with (a user namespace
        first when not root)."""
        if not self.root:
            _make_userns(self.uid, self.gid)

    def via(self) -> str:
        return "unshare" if self.root else "unshare in a user namespace"

    def user_namespace(self) -> Feature:
        err = in_child(lambda: _make_userns(self.uid, self.gid))
        self.userns_ok = err is None
        if err is None:
            return Feature("user namespace", True, f"uid/gid maps of uid {self.uid}",
                           required=not self.root)
        cause, fix = userns_cause(err, self.sysctl)
        # as root the other namespaces do without one; unprivileged, nothing does
        return Feature("user namespace", False, "", cause, fix, required=not self.root)

    def tried(self, name: str, attempt: Callable[[], None], how: str,
              failure: Callable[[str], tuple[str, str]], required: bool = True) -> Feature:
        """``attempt()`` in a child: available, or why not and the fix."""
        if not self.root and not self.userns_ok:
            return Feature(name, False, "", "needs a user namespace, which this user "
                           "cannot make (see that row)", "see the user namespace row",
                           required)
        err = in_child(attempt)
        if err is None:
            return Feature(name, True, how, required=required)
        cause, fix = failure(err)
        return Feature(name, False, "", cause, fix, required)

    def namespace(self, name: str, flag: int) -> Feature:
        def attempt() -> None:
            self.enter()
            linux.unshare(flag)
            if flag == linux.CLONE_NEWPID:
                _fork_and_wait(lambda: None)

        return self.tried(f"{name} namespace", attempt, self.via(),
                          lambda err: _ns_cause(err, self.root), required=name != "cgroup")

    def mounts(self, workdir: str) -> Feature:
        proc_dir, tmp_dir = os.path.join(workdir, "proc"), os.path.join(workdir, "tmp")
        os.mkdir(proc_dir)
        os.mkdir(tmp_dir)

        def attempt() -> None:
            self.enter()
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)

            def inside() -> None:
                linux.mount("proc", proc_dir, "proc", linux.MS_NOSUID | linux.MS_NODEV
                            | linux.MS_NOEXEC)
                if not os.path.exists(os.path.join(proc_dir, "1")):
                    raise RuntimeError("the new /proc does not show PID 1")
                linux.mount("tmpfs", tmp_dir, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                            "size=1m")

            _fork_and_wait(inside)

        return self.tried("mount proc and tmpfs", attempt, "in a private mount namespace",
                          lambda err: (f"mounting failed: {err}",
                                       "run as root, or the container with --privileged "
                                       "(mounting /proc needs a PID namespace of one's own "
                                       "and no masked /proc)"))

    def loopback(self) -> Feature:
        def attempt() -> None:
            from .network import loopback_up

            self.enter()
            linux.unshare(linux.CLONE_NEWNET)
            loopback_up()

        return self.tried("loopback up", attempt, "in a new network namespace",
                          lambda err: (f"bringing lo up failed: {err}",
                                       "run as root, or the container with --cap-add "
                                       "NET_ADMIN"))

    def seccomp(self) -> Feature:
        try:
            from .seccomp import libseccomp_version, load_profile

            profile = load_profile("default")
            bpf = profile.compile() if profile is not None else b""
        except Exception as e:
            return Feature("seccomp", False, "", f"cannot compile a filter: {e}",
                           "apt-get install libseccomp2 (and pip install pyseccomp)")

        def attempt() -> None:
            from .seccomp import apply_bpf

            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            if bpf:
                apply_bpf(bpf)

        err = in_child(attempt)
        if err is None:
            return Feature("seccomp", True, f"libseccomp {libseccomp_version()}, "
                           "attached with seccomp(2)")
        return Feature("seccomp", False, "", f"loading a filter failed: {err}",
                       "a kernel with CONFIG_SECCOMP_FILTER")

    def capabilities(self) -> Feature:
        def attempt() -> None:
            from .capabilities import CapabilitySets, apply, current

            self.enter()
            held = current().bounding
            keep = held - {"CAP_SYS_ADMIN"}  # one fewer than it holds
            apply(CapabilitySets.uniform(keep))
            if "CAP_SYS_ADMIN" in current().bounding:
                raise RuntimeError("CAP_SYS_ADMIN is still in the bounding set")

        try:
            from .capabilities import backend_name

            backend = backend_name()
        except Exception as e:
            return Feature("drop capabilities", False, "", str(e),
                           "pip install 'pytest-isolate-container[prctl]' or fix ctypes")
        err = in_child(attempt)
        if err is None:
            return Feature("drop capabilities", True, f"via {backend}")
        return Feature("drop capabilities", False, "", f"dropping failed: {err}", "")

    def cgroups(self, layout: CgroupLayout | None = None) -> list[Feature]:
        from .cgroups import detect

        try:
            lay = detect.__wrapped__() if layout is None else layout  # a fresh look
        except Exception as e:
            return [Feature(f"cgroup {c}", False, "", f"cannot read the cgroup layout: {e}",
                            "") for c in LIMIT_CONTROLLERS]
        out = []
        for c in LIMIT_CONTROLLERS:
            h = lay.hierarchy(c)
            if h is not None and lay.can_use(c):
                out.append(Feature(f"cgroup {c}", True, f"v{h.version} at {h.anchor_dir}"))
                continue
            cause, fix = self._cgroup_cause(lay, c)
            # what the plugin falls back to (without usage figures)
            instead = {"memory": "limit by RLIMIT_AS instead",
                       "pids": "limit by RLIMIT_NPROC instead"}.get(c, "")
            out.append(Feature(f"cgroup {c}", False, instead, cause, fix))
        return out

    def _cgroup_cause(self, lay: CgroupLayout, c: str) -> tuple[str, str]:
        h = lay.hierarchy(c)
        mode = lay.mode
        if h is None:
            return (f"no hierarchy offers the {c} controller (cgroup mode {mode})",
                    "enable the controller in the kernel / boot options")
        if _read_only(h.mountpoint):
            return (f"the cgroup filesystem at {h.mountpoint} is mounted read-only (a "
                    "container without a writable cgroup mount)",
                    "run the container with --privileged, or --cgroupns=private and a "
                    "writable /sys/fs/cgroup")
        if c not in lay.usable:
            return (f"{c} is not enabled for this process's cgroup {h.anchor_dir}",
                    "start pytest in a delegated subtree: systemd-run --user --scope -p "
                    "Delegate=yes pytest ...")
        if h.version == 1:
            return (f"{h.anchor_dir} is not writable by uid {self.uid}; cgroup v1 has no "
                    "delegation to users", "run pytest as root (sudo)")
        return (f"{h.anchor_dir} is not writable by uid {self.uid}",
                "start pytest in a delegated subtree: systemd-run --user --scope -p "
                "Delegate=yes pytest ...")


def _read_only(mountpoint: str) -> bool:
    try:
        return bool(os.statvfs(mountpoint).f_flag & os.ST_RDONLY)
    except OSError:
        return False


_cached: Probe | None = None


def probe(*, refresh: bool = False, sysctl: Sysctls = _sysctl,
          cgroup_layout: CgroupLayout | None = None) -> Probe:
    """Probe this host (once per process unless ``refresh``; the probe forks a few
    short children and takes some tens of milliseconds).

    ``sysctl`` and ``cgroup_layout`` replace the host's, for tests.
    """
    global _cached
    custom = sysctl is not _sysctl or cgroup_layout is not None
    if _cached is not None and not refresh and not custom:
        return _cached
    p = _Prober(sysctl)
    features = [p.user_namespace()]
    features += [p.namespace(name, flag) for name, flag in NAMESPACES]
    workdir = tempfile.mkdtemp(prefix="pytest-isolate-probe-")
    try:
        features.append(p.mounts(workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    features.append(p.loopback())
    features.append(p.seccomp())
    features.append(p.capabilities())
    features += p.cgroups(cgroup_layout)
    result = Probe(p.root, tuple(features))
    if not custom:
        _cached = result
    return result

