"""Network set-up inside the container's own network namespace (pyroute2 netlink)."""

from __future__ import annotations

__all__ = ["loopback_up", "preload"]


def preload() -> None:
    """Import pyroute2 in the host once, so forked containers do not pay for it."""
    import pyroute2  # noqa: F401


def loopback_up() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        (index,) = ip.link_lookup(ifname="lo")
        ip.link("set", index=index, state="up")
