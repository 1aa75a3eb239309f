"""Return values as data: what a ``run_isolated`` callable may send back untrusted.

A value is encoded inside the container into JSON and decoded on the other side
by walking plain lists and dicts: nothing on the receiving side runs code the
container chose. Besides JSON's own types (``None``, ``bool``, ``int``, ``float``,
``str``, ``list``, ``dict`` with ``str`` keys), tuples, ``bytes`` (``bytearray``
and ``memoryview`` come back as ``bytes``) and dicts with other hashable keys
(``int``, ``float``, ``bool``, ``None``, ``tuple``, ``bytes``) come back as they
were. Subclasses come back as their base type (a named tuple as a tuple).

Encoding: anything JSON holds as itself is itself; the rest is a one-key dict
``{"\\u0000": [kind, data]}`` with kind ``tuple``, ``bytes`` or ``dict``. A dict
whose keys are not all strings, or that has the key ``"\\u0000"``, is a ``dict``
of ``[key, value]`` pairs, so no user dict can be mistaken for a tag.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

__all__ = ["NotData", "decode", "encode"]

TAG = "\x00"
MAX_DEPTH = 200


# Python turns at most 4,300 digits of an int into text by default
# (sys.set_int_max_str_digits): anything longer cannot be sent as JSON.
_MAX_INT_BITS = 14_000


class NotData(TypeError):
    """The value holds something that is not plain data."""


def _where(path: list[str]) -> str:
    return "the value" if not path else "value" + "".join(path)


def encode(value: Any) -> Any:
    """``value`` as a JSON-compatible tree; :class:`NotData` names the first part
    that cannot be sent (its type and where it sits in the value)."""
    return _enc(value, [], 0)


def _enc(v: Any, path: list[str], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise NotData(f"{_where(path)} is nested more than {MAX_DEPTH} levels deep")
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        if v.bit_length() > _MAX_INT_BITS:
            raise NotData(f"{_where(path)} is an int too large for JSON (over 4,000 "
                          "decimal digits): return it as a str (hex(), or str() after "
                          "sys.set_int_max_str_digits(0))")
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {TAG: ["bytes", base64.b64encode(bytes(v)).decode("ascii")]}
    if isinstance(v, list):
        return [_enc(x, [*path, f"[{i}]"], depth + 1) for i, x in enumerate(v)]
    if isinstance(v, tuple):
        return {TAG: ["tuple", [_enc(x, [*path, f"[{i}]"], depth + 1)
                                for i, x in enumerate(v)]]}
    if isinstance(v, dict):
        if all(type(k) is str for k in v) and TAG not in v:
            return {k: _enc(x, [*path, f"[{k!r}]"], depth + 1) for k, x in v.items()}
        pairs = []
        for k, x in v.items():
            if not isinstance(k, (str, int, float, bool, tuple, bytes)) and k is not None:
                raise NotData(f"{_where(path)} has a key of type {type(k).__name__}, "
                              "which is not plain data")
            pairs.append([_enc(k, [*path, f" key {k!r}"], depth + 1),
                          _enc(x, [*path, f"[{k!r}]"], depth + 1)])
        return {TAG: ["dict", pairs]}
    t = type(v)
    raise NotData(f"{_where(path)} is a {t.__module__}.{t.__qualname__}, which is not plain "
                  "data (JSON types, tuples and bytes)")


def decode(tree: Any) -> Any:
    """The value :func:`encode` made. Raises ``ValueError`` for a tree it could not
    have made (a forged or damaged one)."""
    try:
        return _dec(tree, 0)
    except (TypeError, KeyError, IndexError, RecursionError, ValueError, binascii.Error) as e:
        text = str(e)
        raise ValueError(text if text.startswith("malformed")
                         else f"malformed value ({type(e).__name__}: {text[:200]})") from None


def _dec(t: Any, depth: int) -> Any:
    if depth > MAX_DEPTH * 2 + 2:
        raise ValueError("malformed value: nested too deep")
    if t is None or isinstance(t, (bool, int, float, str)):
        return t
    if isinstance(t, list):
        return [_dec(x, depth + 1) for x in t]
    if not isinstance(t, dict):
        raise ValueError(f"malformed value: {type(t).__name__}")
    if TAG not in t:
        return {k: _dec(x, depth + 1) for k, x in t.items()}
    if len(t) != 1:
        raise ValueError("malformed value: tag with company")
    kind, data = t[TAG]
    if kind == "bytes" and isinstance(data, str):
        return base64.b64decode(data.encode("ascii"), validate=True)
    if kind == "tuple" and isinstance(data, list):
        return tuple(_dec(x, depth + 1) for x in data)
    if kind == "dict" and isinstance(data, list):
        out = {}
        for k, x in data:
            key = _dec(k, depth + 1)
            out[key] = _dec(x, depth + 1)  # TypeError for an unhashable (forged) key
        return out
    raise ValueError(f"malformed value: unknown tag {str(kind)[:20]!r}")
