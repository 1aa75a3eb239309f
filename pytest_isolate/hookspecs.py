"""Hooks pytest-isolate adds; implement them in a conftest.py or a plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .runtime import Config


@pytest.hookspec(firstresult=True)
def pytest_isolate_config(item: pytest.Item, config: Config) -> Config | None:
    """Return the container :class:`~pytest_isolate.runtime.Config` for ``item``.

    ``config`` is what the settings (marker, options, ini, profile) resolved to; return
    a changed copy (``dataclasses.replace(config, ...)``) to adjust it, or None to
    leave it to the next implementation. The built-in one runs last and returns
    ``config`` unchanged. Called in the host process, once per isolated item.
    """
