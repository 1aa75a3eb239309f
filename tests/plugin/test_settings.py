"""Resolving per-test settings: precedence, profiles, and errors that name the origin."""

from __future__ import annotations

import pytest

from pytest_isolate.settings import SettingError, Settings, check_setting, resolve


def test_builtin_default_profile():
    s = resolve([], {})
    assert s == Settings()
    assert s.profile == "default" and s.network == "none" and s.seccomp == "default"
    assert s.origins["network"] == "profile 'default'"


def test_precedence_marker_over_command_line_over_ini():
    s = resolve([("ini", {"memory": "1G", "pids": "10", "timeout": "30"}),
                 ("command line", {"memory": "256M", "pids": 20}),
                 ("isolated marker", {"memory": "64M"})], {})
    assert (s.memory, s.pids, s.timeout) == (64 * 2**20, 20, 30.0)
    assert s.origins["memory"] == "isolated marker"
    assert s.origins["pids"] == "command line"
    assert s.origins["timeout"] == "ini"


def test_untrusted_profile():
    s = resolve([("command line", {"profile": "untrusted"})], {})
    assert s.profile == "untrusted"
    assert s.readonly and s.seccomp == "strict" and s.capabilities == ()
    assert s.user == "65534:65534" and "PATH" in s.env_allow and s.hide_home


def test_custom_profile_extends_a_builtin():
    profiles = {"ci": {"extends": "untrusted", "memory": "2G", "network": "host"}}
    s = resolve([("ini", {"profile": "ci"})], profiles)
    assert (s.memory, s.network, s.seccomp) == (2 * 2**30, "host", "strict")
    assert s.origins["memory"] == "profile 'ci'" and s.origins["seccomp"] == "profile 'untrusted'"


def test_env_accumulates_across_layers():
    s = resolve([("ini", {"env": "A=1\nB=2"}), ("isolated marker", {"env": {"B": "3"}})], {})
    assert dict(s.env) == {"A": "1", "B": "3"}


@pytest.mark.parametrize("name, raw, expected", [
    ("memory", "none", None), ("memory", "64M", 64 * 2**20), ("cpu", "50%", 0.5),
    ("readonly", "yes", True), ("readonly", False, False), ("capabilities", "none", ()),
    ("capabilities", "NET_BIND_SERVICE, kill", ("CAP_KILL", "CAP_NET_BIND_SERVICE")),
    ("user", "1000:1000", "1000:1000"), ("timeout", "2.5", 2.5), ("pids", "none", None),
])
def test_values_are_normalised(name, raw, expected):
    assert check_setting(name, raw, "test") == expected


@pytest.mark.parametrize("name, raw", [
    ("memory", "lots"), ("pids", 0), ("pids", "x"), ("cpu", "-1"), ("timeout", "0"),
    ("timeout", True), ("network", "bridge"), ("readonly", "maybe"), ("env", "NOEQUALS"),
    ("capabilities", ["CAP_NOPE"]), ("user", "root"), ("colour", "red"),
])
def test_bad_values_name_their_origin(name, raw):
    with pytest.raises(SettingError) as ei:
        check_setting(name, raw, "--isolate-" + name)
    assert str(ei.value).startswith(f"--isolate-{name}: {name}=")


def test_unknown_profile():
    with pytest.raises(SettingError, match="isolated marker: profile='nope'.*known profiles: "
                                           "default, untrusted"):
        resolve([("isolated marker", {"profile": "nope"})], {})
