"""The error every cgroup operation raises, with the setting and the fix in its text."""

from __future__ import annotations

from ..errors import IsolateError

__all__ = ["CgroupError", "CgroupUnavailableError"]


class CgroupError(IsolateError):
    """A cgroup could not be created, configured, controlled or removed.

    ``setting`` names the resource setting involved (``"memory"``, ``"pids"``,
    ``"cpu"`` ...) when there is one, ``value`` the value as the user wrote it,
    ``path`` the cgroup file or directory and ``errno`` the OS error number.
    """

    def __init__(self, message: str, *, setting: str | None = None, value: object = None,
                 path: str | None = None, errno: int | None = None) -> None:
        self.setting = setting
        self.value = value
        self.path = path
        self.errno = errno
        super().__init__(message)


class CgroupUnavailableError(CgroupError):
    """No cgroup hierarchy this process may write to offers what was asked for.

    Callers that can do without cgroups (limits through rlimits, say) catch this one.
    """
