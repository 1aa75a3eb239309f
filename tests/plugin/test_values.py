"""The value encoding run_isolated uses: exact round trips, and forged trees refused."""

from __future__ import annotations

import collections
import enum

import pytest

from pytest_isolate import values


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value", [
    None, True, 0, -2**100, 1.25, float("inf"), "", "\x00tag", [], (), {}, b"", bytearray(b"ab"),
    {"a": [1, (2, 3)]}, {1: 2}, {(1, b"x"): None}, {"\x00": 1}, {True: 1, None: 2},
    [[[[("deep",)]]]],
])
def test_round_trip(value):
    out = values.decode(values.encode(value))
    expected = bytes(value) if isinstance(value, bytearray) else value
    assert out == expected and type(out) is type(expected)


def test_subclasses_come_back_as_their_base_type():
    Point = collections.namedtuple("Point", "x y")
    out = values.decode(values.encode({"p": Point(1, 2), "c": Colour.RED,
                                       "d": collections.OrderedDict(a=1)}))
    assert out == {"p": (1, 2), "c": 1, "d": {"a": 1}}
    assert type(out["p"]) is tuple and type(out["c"]) is int and type(out["d"]) is dict


@pytest.mark.parametrize("value, where", [
    (object(), "the value is a builtins.object"),
    ({"a": [1, {2}]}, "value['a'][1] is a builtins.set"),
    ({frozenset(): 1}, "has a key of type frozenset"),
])
def test_what_is_not_data_is_named(value, where):
    with pytest.raises(values.NotData, match=where.replace("[", r"\[").replace("(", r"\(")):
        values.encode(value)


def test_depth_is_limited():
    v: list = []
    for _ in range(values.MAX_DEPTH + 5):
        v = [v]
    with pytest.raises(values.NotData, match="nested more than"):
        values.encode(v)


@pytest.mark.parametrize("tree", [
    {"\x00": ["pickle", "gASVAAAAAAAAAAB9lC4="]},
    {"\x00": ["bytes", "!!"]},
    {"\x00": ["bytes", 5]},
    {"\x00": ["dict", [[[1], 2]]]},
    {"\x00": ["tuple", [1]], "x": 1},
    {"\x00": "short"},
    {"\x00": ["dict", [[1, 2, 3]]]},
])
def test_forged_trees_are_value_errors(tree):
    with pytest.raises(ValueError, match="malformed"):
        values.decode(tree)
