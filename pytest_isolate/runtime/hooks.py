"""Running OCI-style lifecycle hooks on the host."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from .config import Hook
from .errors import HookError
from .state import State

__all__ = ["run_hooks"]

DEFAULT_HOOK_TIMEOUT = 30.0


def run_hooks(kind: str, hooks: Sequence[Hook], state: State) -> None:
    """Run ``hooks`` in order; the first failure raises ``HookError`` naming it."""
    for index, hook in enumerate(hooks):
        run_hook(kind, index, hook, state)


def run_hook(kind: str, index: int, hook: Hook, state: State) -> None:
    if hook.callable is not None:
        try:
            hook.callable(state)
        except Exception as e:
            raise HookError(kind, index, hook.name, f"{type(e).__name__}: {e}") from e
        return
    assert hook.path is not None
    env = dict(e.split("=", 1) for e in hook.env if "=" in e)
    timeout = hook.timeout or DEFAULT_HOOK_TIMEOUT
    import json

    try:
        # As in the OCI spec, args is the whole argv, argv[0] included.
        proc = subprocess.run(list(hook.args) or [hook.path], executable=hook.path,
                              input=json.dumps(state.oci()).encode(), env=env, timeout=timeout,
                              capture_output=True, close_fds=True)
    except subprocess.TimeoutExpired:
        raise HookError(kind, index, hook.name, f"timed out after {timeout:g} s") from None
    except OSError as e:
        raise HookError(kind, index, hook.name, f"could not run: {e.strerror}") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-500:]
        how = (f"exit status {proc.returncode}" if proc.returncode > 0
               else f"killed by signal {-proc.returncode}")
        raise HookError(kind, index, hook.name, how + (f": {tail}" if tail else ""))
