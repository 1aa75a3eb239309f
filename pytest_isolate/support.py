"""What this host can give an isolated test, and what to do about what it cannot.

The host probe (``runtime.probe``) says which features work here. This module turns
that into the plugin's terms, once per session:

- *rootless*: not root, so every container gets a user namespace in which the
  invoking user is root (or the test's ``user``); the other namespaces, mounts and
  loopback come with it.
- *limits*: a ``memory``, ``pids`` or ``cpu`` limit is enforced by its cgroup
  controller when this process can use it; otherwise ``memory`` falls back to an
  address-space rlimit (``RLIMIT_AS``: the test's address space at its start plus the
  limit) and ``pids`` to ``RLIMIT_NPROC`` (counted per user namespace, so per
  container); ``cpu`` has no fallback.
- *gaps*: what a test asks for that cannot be had here at all (no namespaces, no
  ``cpu`` limit, no seccomp). The ``isolate_unsupported`` policy decides: ``error``
  (the run stops before any test, with one message per missing capability, naming
  the cause and the fixes), ``warn`` (one warning per capability; the test runs
  without it -- without any isolation when namespaces are missing) or ``skip``
  (those tests are skipped, the reason naming what is missing). Unset, it is
  ``error`` for settings the user asked for and ``warn`` for a profile's defaults.

This module imports nothing from pytest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .runtime.probe import Feature, Probe

__all__ = ["POLICIES", "Gap", "Support"]

POLICIES = ("error", "warn", "skip")
LIMITS = ("memory", "pids", "cpu")
_BUILTIN_ORIGINS = ("profile 'default'", "profile 'untrusted'")


@dataclass(frozen=True)
class Gap:
    """Something a test asks for that this host cannot give."""

    key: str       # "namespaces", "cpu", "seccomp": one message per key
    what: str      # "cpu=1 needs the cpu cgroup controller"
    cause: str
    fix: str
    explicit: bool  # asked for by the user, not a profile's default

    def message(self) -> str:
        return f"{self.what}, which this host cannot give: {self.cause}. Fix: {self.fix}"


@dataclass(frozen=True)
class Support:
    """This host's answer to every isolated test of the session."""

    rootless: bool
    uid: int
    gid: int
    namespaces: Feature | None  # None: available; else the first missing namespace
    controllers: frozenset[str]  # limit controllers usable here
    missing_controllers: dict[str, Feature] = field(default_factory=dict)
    seccomp: Feature | None = None  # None: available

    @classmethod
    def from_probe(cls, p: Probe, uid: int | None = None, gid: int | None = None) -> Support:
        rows = {f.name: f for f in p.features}
        ns = next((f for f in p.missing if f.name.endswith("namespace")
                   or f.name in ("mount proc and tmpfs", "loopback up")), None)
        controllers = frozenset(c for c in LIMITS if rows[f"cgroup {c}"].available)
        missing = {c: rows[f"cgroup {c}"] for c in LIMITS if c not in controllers}
        sec = rows["seccomp"]
        return cls(rootless=not p.root, uid=os.geteuid() if uid is None else uid,
                   gid=os.getegid() if gid is None else gid, namespaces=ns,
                   controllers=controllers, missing_controllers=missing,
                   seccomp=None if sec.available else sec)

    # -- xdist: the controller probes, the workers read it ------------------------

    def to_json(self) -> str:
        return json.dumps({
            "rootless": self.rootless, "uid": self.uid, "gid": self.gid,
            "namespaces": None if self.namespaces is None else _feature(self.namespaces),
            "controllers": sorted(self.controllers),
            "missing_controllers": {c: _feature(f) for c, f in
                                    self.missing_controllers.items()},
            "seccomp": None if self.seccomp is None else _feature(self.seccomp),
        })

    @classmethod
    def from_json(cls, text: str) -> Support:
        d = json.loads(text)
        return cls(rootless=d["rootless"], uid=d["uid"], gid=d["gid"],
                   namespaces=None if d["namespaces"] is None else Feature(**d["namespaces"]),
                   controllers=frozenset(d["controllers"]),
                   missing_controllers={c: Feature(**f) for c, f in
                                        d["missing_controllers"].items()},
                   seccomp=None if d["seccomp"] is None else Feature(**d["seccomp"]))

    # -- per test -------------------------------------------------------------------

    def enforced_by(self, limit: str) -> str | None:
        """How ``limit`` is enforced here: "cgroup", "rlimit", or None (it cannot be)."""
        if limit in self.controllers:
            return "cgroup"
        if limit in ("memory", "pids") and self.namespaces is None:
            return "rlimit"
        return None

    def gaps(self, settings: Any) -> list[Gap]:
        """What ``settings`` ask for that this host cannot give."""
        origins = getattr(settings, "origins", {})

        def explicit(name: str) -> bool:
            return origins.get(name, "") not in _BUILTIN_ORIGINS

        out: list[Gap] = []
        if self.namespaces is not None:
            f = self.namespaces
            out.append(Gap("namespaces", f"an isolated test needs its {f.name}",
                           f.why_not, f.fix, explicit=True))
            return out  # nothing else matters without namespaces
        cpu = getattr(settings, "cpu", None)
        if cpu is not None and self.enforced_by("cpu") is None:
            f = self.missing_controllers["cpu"]
            out.append(Gap("cpu", f"cpu={cpu:g} needs the cpu cgroup controller",
                           f.why_not, f.fix, explicit("cpu")))
        seccomp = getattr(settings, "seccomp", None)
        if seccomp not in (None, "unconfined") and self.seccomp is not None:
            out.append(Gap("seccomp", f"seccomp={seccomp!r} needs seccomp filters",
                           self.seccomp.why_not, self.seccomp.fix, explicit("seccomp")))
        return out

    def header(self) -> list[str]:
        """Report-header lines: how containers are made and limits enforced here."""
        if self.namespaces is not None:
            f = self.namespaces
            return [f"isolate: NOT AVAILABLE here: no {f.name} ({f.why_not})"]
        lines = []
        if self.rootless:
            lines.append(f"isolate: rootless (uid {self.uid}): containers get a user "
                         "namespace, the invoking user is root inside (or the test's user)")
        how = []
        for limit in LIMITS:
            by = self.enforced_by(limit)
            if by == "cgroup":
                how.append(f"{limit} by cgroup")
            elif by == "rlimit":
                how.append(f"{limit} by {'RLIMIT_AS' if limit == 'memory' else 'RLIMIT_NPROC'}"
                           " (no cgroup)")
            else:
                how.append(f"{limit} not enforceable (no cgroup)")
        lines.append("isolate: limits: " + ", ".join(how))
        if self.missing_controllers and self.rootless:
            f = next(iter(self.missing_controllers.values()))
            lines.append(f"isolate: no cgroups: {f.why_not}; for cgroup limits: {f.fix}")
        if self.seccomp is not None:
            lines.append(f"isolate: seccomp unavailable: {self.seccomp.why_not}")
        return lines


def _feature(f: Feature) -> dict[str, Any]:
    return {"name": f.name, "available": f.available, "how": f.how, "why_not": f.why_not,
            "fix": f.fix, "required": f.required}


def without(settings: Any, gap: Gap) -> Any:
    """``settings`` with what ``gap`` asks for dropped (the ``warn`` outcome)."""
    import dataclasses

    return dataclasses.replace(settings, **({"cpu": None} if gap.key == "cpu" else
                                            {"seccomp": "unconfined"}))


def policy_for(gap: Gap, configured: str | None) -> str:
    """The policy that applies to ``gap``: the configured one, else ``error`` for what
    the user asked for and ``warn`` for a profile's defaults."""
    if configured is not None:
        return configured
    return "error" if gap.explicit else "warn"
