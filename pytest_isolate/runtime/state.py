"""Container status (a small state machine) and the persisted ``State``.

::

    created --start--> running --pause--> paused
                          ^                  |
                          +-----resume-------+
    running/paused --(payload ends, kill)--> stopped --destroy--> (gone)
    created --destroy--> (gone)
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import IllegalTransitionError

__all__ = ["State", "Status", "check_transition", "write_atomic"]


class Status(str, enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


# operation -> statuses it is allowed from
_ALLOWED: dict[str, frozenset[Status]] = {
    "start": frozenset({Status.CREATED}),
    "exec": frozenset({Status.RUNNING}),
    "signal": frozenset({Status.RUNNING, Status.PAUSED}),
    "pause": frozenset({Status.RUNNING}),
    "resume": frozenset({Status.PAUSED}),
    "wait": frozenset({Status.RUNNING, Status.PAUSED, Status.STOPPED}),
    "stats": frozenset({Status.RUNNING, Status.PAUSED, Status.STOPPED}),
    "destroy": frozenset({Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED}),
}


def check_transition(container_id: str, status: Status, operation: str) -> None:
    if status not in _ALLOWED[operation]:
        raise IllegalTransitionError(container_id, status.value, operation)


@dataclass
class State:
    """What is persisted about a container, as JSON, under the factory root."""

    id: str
    status: Status
    config: dict[str, Any]
    created: float = field(default_factory=time.time)
    owner_pid: int = 0
    owner_start_time: int | None = None
    init_pid: int | None = None
    init_start_time: int | None = None
    started: float | None = None
    finished: float | None = None
    namespace_paths: dict[str, str] = field(default_factory=dict)
    cgroup_paths: dict[str, str] = field(default_factory=dict)
    exit: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    cwd: str = "/"
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        # shallow: the values are plain data already, and asdict() would copy the
        # (large) config dict on every save
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["status"] = self.status.value
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> State:
        d = json.loads(text)
        d["status"] = Status(d["status"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def oci(self) -> dict[str, Any]:
        """The state as the OCI runtime spec gives it to hooks on stdin."""
        return {
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": self.status.value,
            "pid": self.init_pid or 0,
            "bundle": self.cwd,
            "annotations": dict(self.annotations),
        }


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old or the new file, never half."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".state-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
