"""A libcontainer-style container runtime in Python. Imports nothing from pytest.

    from pytest_isolate.runtime import Config, Factory, Process

    factory = Factory("/run/my-containers")
    with factory.create("demo", Config(hostname="demo")) as c:
        status = c.run(Process(["hostname"], stdout=PIPE))
"""

from __future__ import annotations

from .bootstrap import emit
from .config import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_MOUNTS,
    DEFAULT_READONLY_PATHS,
    Config,
    Hook,
    Hooks,
    IDMap,
    Mount,
    Namespaces,
    Resources,
    Rlimit,
)
from .container import Container
from .errors import (
    ConfigError,
    ContainerError,
    ContainerExistsError,
    ContainerNotFoundError,
    HookError,
    IllegalTransitionError,
    IsolateError,
    ProcessError,
    SetupError,
    WaitTimeout,
)
from .factory import Factory, default_root
from .oci import OciResult, config_from_oci
from .process import DEVNULL, PIPE, ExitStatus, Process, RemoteException
from .state import State, Status

__all__ = [
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_MOUNTS",
    "DEFAULT_READONLY_PATHS",
    "DEVNULL",
    "PIPE",
    "Config",
    "ConfigError",
    "Container",
    "ContainerError",
    "ContainerExistsError",
    "ContainerNotFoundError",
    "ExitStatus",
    "Factory",
    "Hook",
    "HookError",
    "Hooks",
    "IDMap",
    "IllegalTransitionError",
    "IsolateError",
    "Mount",
    "Namespaces",
    "OciResult",
    "Process",
    "ProcessError",
    "RemoteException",
    "Resources",
    "Rlimit",
    "SetupError",
    "State",
    "Status",
    "WaitTimeout",
    "config_from_oci",
    "default_root",
    "emit",
]
