"""Typed errors of the runtime.

Every error a user can cause names the setting (or step) involved and what to do
about it; none of them carries an object that came out of a container.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContainerError",
    "ContainerExistsError",
    "ContainerNotFoundError",
    "HookError",
    "IllegalTransitionError",
    "IsolateError",
    "ProcessError",
    "SetupError",
    "WaitTimeout",
]


class IsolateError(Exception):
    """Base class of every error raised by :mod:`pytest_isolate.runtime`."""


class ConfigError(IsolateError, ValueError):
    """A container configuration value is invalid.

    ``field`` is the dotted name of the setting, ``value`` the offending value.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is invalid: {allowed}")


class ContainerError(IsolateError):
    """A container operation failed."""


class ContainerExistsError(ContainerError):
    """``Factory.create`` was given an id that is already in use."""


class ContainerNotFoundError(ContainerError):
    """``Factory.load`` was given an id with no container state."""


class IllegalTransitionError(ContainerError):
    """The operation is not allowed in the container's current status."""

    def __init__(self, container_id: str, status: str, operation: str) -> None:
        self.container_id = container_id
        self.status = status
        self.operation = operation
        super().__init__(f"container {container_id!r} is {status}: cannot {operation}")


class SetupError(ContainerError):
    """A container set-up step failed before the payload ran.

    ``step`` names the step (``"unshare"``, ``"mount /proc"``, ``"hostname"`` ...),
    ``errno`` is the OS error number when there is one.
    """

    def __init__(self, step: str, message: str, errno: int | None = None) -> None:
        self.step = step
        self.errno = errno
        self.message = message
        where = f" (errno {errno})" if errno else ""
        super().__init__(f"container set-up failed at step {step!r}: {message}{where}")


class HookError(ContainerError):
    """A lifecycle hook failed; names the hook kind, its index and what happened."""

    def __init__(self, kind: str, index: int, name: str, message: str) -> None:
        self.kind = kind
        self.index = index
        self.name = name
        super().__init__(f"{kind} hook #{index} ({name}) failed: {message}")


class ProcessError(ContainerError):
    """A process could not be started or its result could not be read."""


class WaitTimeout(ContainerError, TimeoutError):
    """``wait(timeout=...)`` expired; the container keeps running."""
