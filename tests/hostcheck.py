"""What a test run may leave on the host, read from /proc and /sys.

Used by the suite's own leak check (``conftest.py``): after every test, no process,
unreaped child, mount, network namespace or cgroup it created may survive.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

HOST_PIDNS = os.readlink("/proc/self/ns/pid")
CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, comm, pid namespace) for every live (non-zombie) process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read(f"/proc/{name}/stat")
        if stat is None:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        try:
            ns = os.readlink(f"/proc/{name}/ns/pid")
        except OSError:
            continue
        out[int(name)] = (int(fields[1]), comm, ns)
    return out


def zombie_children(parent: int) -> set[int]:
    """Children of ``parent`` that ended and were never waited for."""
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _read(f"/proc/{name}/stat")
            if stat is None:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z" and int(fields[1]) == parent:
                out.add(int(name))
    return out


def descendants(root: int, procs: dict[int, tuple[int, str, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def cgroup_dirs() -> set[str]:
    found = set()
    for top in os.listdir(CGROUP_ROOT):
        base = os.path.join(CGROUP_ROOT, top)
        for dirpath, dirnames, _ in os.walk(base):
            if "isolate" in os.path.basename(dirpath):
                found.add(dirpath)
            if dirpath.count("/") - base.count("/") >= 6:
                dirnames[:] = []
    return found


@dataclass(frozen=True)
class Snapshot:
    foreign: frozenset[int]
    mounts: frozenset[str]
    netns: frozenset[str]
    cgroups: frozenset[str]
    zombies: frozenset[int] = frozenset()  # of this process

    @classmethod
    def take(cls) -> Snapshot:
        procs = processes()
        mounts = _read("/proc/self/mountinfo") or ""
        try:
            netns = frozenset(os.listdir("/run/netns"))
        except FileNotFoundError:
            netns = frozenset()
        return cls(
            foreign=frozenset(p for p, (_, _, ns) in procs.items() if ns != HOST_PIDNS),
            mounts=frozenset(" ".join(line.split()[3:5]) for line in mounts.splitlines()),
            netns=netns,
            cgroups=frozenset(cgroup_dirs()),
            zombies=frozenset(zombie_children(os.getpid())),
        )


def leftovers(before: Snapshot, me: int, wait: float = 3.0) -> list[str]:
    """What exists now and did not before; waits up to ``wait`` s for it to go away."""
    end = time.monotonic() + wait
    while True:
        now = Snapshot.take()
        procs = processes()
        problems = []
        # Ours are our descendants, or orphans (re-parented to PID 1) once their parent
        # died: a container of another program running meanwhile is neither.
        mine = descendants(me, procs)
        new_foreign = {p for p in now.foreign - before.foreign
                       if p in mine or procs.get(p, (0,))[0] == 1}
        if new_foreign:
            problems.append("processes in container PID namespaces: "
                            + ", ".join(f"{p} {procs.get(p, ('', '?'))[1]}" for p in new_foreign))
        kids = {p for p in mine if procs[p][1] not in ("pytest",)}
        if kids:
            problems.append("processes left by the test: "
                            + ", ".join(f"{p} {procs[p][1]}" for p in kids))
        zombies = zombie_children(me) - before.zombies
        if zombies:
            problems.append("children never reaped (zombies): "
                            + ", ".join(str(p) for p in sorted(zombies)))
        if now.mounts - before.mounts:
            problems.append(f"mounts: {sorted(now.mounts - before.mounts)}")
        if now.netns - before.netns:
            problems.append(f"network namespaces: {sorted(now.netns - before.netns)}")
        new_cgroups = {c for c in now.cgroups - before.cgroups
                       if not _another_runs(c, mine | {me}, procs)}
        if new_cgroups:
            problems.append(f"cgroups: {sorted(new_cgroups)}")
        if not problems or time.monotonic() > end:
            return problems
        time.sleep(0.05)


_RUN_PARENT = re.compile(r"/pytest-isolate-(\d+)(/|$)")


def _another_runs(path: str, mine: set[int], procs: dict[int, tuple[int, str, str]]) -> bool:
    """A cgroup under the parent of another pytest process that is still running (the
    plugin names it ``pytest-isolate-<pid>``): that run's business, not ours."""
    m = _RUN_PARENT.search(path)
    return m is not None and int(m.group(1)) in procs and int(m.group(1)) not in mine
