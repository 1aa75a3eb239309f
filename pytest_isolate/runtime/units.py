"""Human units for sizes ("64M", "1.5G") and CPU amounts ("0.5", "150%")."""

from __future__ import annotations

import math
import re

__all__ = ["format_size", "parse_cpu", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_MAX_SIZE = 2**63 - 4096  # what the kernel's counters hold


def parse_size(value: int | str, field: str = "size") -> int:
    """Return a byte count from an int or a string like ``"64M"``, ``"1.5G"``, ``"512KiB"``.

    Suffixes are binary (K = 1024), as in Docker and runc.
    """
    from .errors import ConfigError

    allowed = "a byte count or a size like '64M', '1.5G', '512K' (binary units)"
    if isinstance(value, bool):
        raise ConfigError(field, value, allowed)
    if isinstance(value, int):
        if not 0 <= value <= _MAX_SIZE:
            raise ConfigError(field, value, "must be from 0 to 8E")
        return value
    if not isinstance(value, str):
        raise ConfigError(field, value, allowed)
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(field, value, allowed)
    number, unit, _ = m.groups()
    result = float(number) * 1024 ** _POWERS[unit.lower()]
    if not math.isfinite(result) or result > _MAX_SIZE:
        raise ConfigError(field, value, f"{allowed}, at most 8E")
    return int(result)


def format_size(n: int | None) -> str:
    """``67108864`` -> ``"64M"``; exact binary multiples stay short."""
    if n is None:
        return "unlimited"
    for suffix, power in (("P", 5), ("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        unit = 1024**power
        if n >= unit:
            q = n / unit
            return f"{q:g}{suffix}" if n % unit == 0 else f"{q:.1f}{suffix}"
    return f"{n}B"


def parse_cpu(value: float | int | str, field: str = "cpu") -> float:
    """Return a CPU amount in cores from ``0.5``, ``"0.5"``, ``"50%"`` or ``"500m"``."""
    from .errors import ConfigError

    allowed = "a positive number of CPUs like 0.5, '1.5', '50%' or '500m'"
    if isinstance(value, bool):
        raise ConfigError(field, value, allowed)
    if isinstance(value, (int, float)):
        cores = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                cores = float(text[:-1]) / 100
            elif text.endswith("m"):
                cores = float(text[:-1]) / 1000
            else:
                cores = float(text)
        except ValueError:
            raise ConfigError(field, value, allowed) from None
    else:
        raise ConfigError(field, value, allowed)
    if not math.isfinite(cores) or cores <= 0:
        raise ConfigError(field, value, allowed)
    return cores
