"""pytest-isolate: run tests inside throwaway Linux containers."""

from __future__ import annotations

from .sandbox import (
    IsolatedCallFailed,
    IsolatedResult,
    RunIsolatedError,
    Usage,
    UsageSnapshot,
)

__version__ = "0.1.0"
__all__ = [
    "IsolatedCallFailed",
    "IsolatedResult",
    "RunIsolatedError",
    "Usage",
    "UsageSnapshot",
    "__version__",
]
