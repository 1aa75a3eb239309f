"""The factory: owns a state root, creates and loads containers, collects leftovers."""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil

from . import linux
from .config import Config
from .container import Container
from .errors import ConfigError, ContainerExistsError, ContainerNotFoundError
from .state import State, Status, write_atomic

__all__ = ["Factory", "default_root"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def default_root() -> str:
    """``/run/pytest-isolate`` for root, else under ``$XDG_RUNTIME_DIR`` or ``/tmp``."""
    if os.geteuid() == 0:
        return "/run/pytest-isolate"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/pytest-isolate-{os.geteuid()}"
    return os.path.join(base, "pytest-isolate")


class Factory:
    """Creates containers and keeps their state under ``root`` (one directory each)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root)) if root is not None else default_root()
        os.makedirs(self.root, mode=0o700, exist_ok=True)

    def __repr__(self) -> str:
        return f"<Factory {self.root}>"

    def _check_id(self, container_id: str) -> None:
        if not isinstance(container_id, str) or not _ID.match(container_id) \
                or container_id in (".", ".."):
            raise ConfigError("id", container_id,
                              "1-128 characters: letters, digits, '_', '.', '+', '-', "
                              "starting with a letter or digit")

    def create(self, container_id: str, config: Config | None = None) -> Container:
        """Record a new container in status ``created``; nothing runs until ``start``."""
        self._check_id(container_id)
        config = config if config is not None else Config()
        if not isinstance(config, Config):
            raise ConfigError("config", config, "a pytest_isolate.runtime.Config")
        path = os.path.join(self.root, container_id)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise ContainerExistsError(f"container {container_id!r} already exists in "
                                       f"{self.root}") from None
        me = os.getpid()
        state = State(id=container_id, status=Status.CREATED, config=config.to_dict(),
                      owner_pid=me, owner_start_time=linux.proc_start_time(me),
                      annotations=dict(config.annotations or {}))
        write_atomic(os.path.join(path, "state.json"), state.to_json())
        return Container(self, state, config, attached=True)

    def load(self, container_id: str) -> Container:
        """A detached handle on an existing container (from any process)."""
        self._check_id(container_id)
        try:
            with open(os.path.join(self.root, container_id, "state.json")) as f:
                state = State.from_json(f.read())
        except FileNotFoundError:
            raise ContainerNotFoundError(f"no container {container_id!r} in {self.root}") \
                from None
        except (ValueError, KeyError, TypeError) as e:
            raise ContainerNotFoundError(f"container {container_id!r}: unreadable state "
                                         f"({e})") from None
        return Container(self, state, Config.from_dict(state.config), attached=False)

    def list(self) -> builtins.list[str]:
        """Ids of the containers that have state under the root, sorted."""
        return sorted(name for name in os.listdir(self.root)
                      if _ID.match(name) and os.path.isfile(
                          os.path.join(self.root, name, "state.json")))

    def gc(self) -> builtins.list[str]:
        """Remove containers whose owner process died; kill what still runs of them.

        Returns the ids collected.
        """
        collected = []
        for cid in self.list():
            path = os.path.join(self.root, cid, "state.json")
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            owner, owner_start = data.get("owner_pid"), data.get("owner_start_time")
            if owner and linux.proc_start_time(owner) == owner_start:
                continue
            try:  # kills what is left, removes its cgroups, runs its poststop hooks
                self.load(cid).destroy()
            except Exception:
                shutil.rmtree(os.path.join(self.root, cid), ignore_errors=True)
            collected.append(cid)
        return collected
