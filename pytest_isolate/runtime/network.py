"""Network set-up inside the container's own network namespace.

Bringing loopback up is one ``SIOCSIFFLAGS`` ioctl (half a millisecond); pyroute2's
netlink route is the fallback for a kernel that refuses the ioctl (it costs about
10 ms per container, most of it pyroute2 setting itself up).
"""

from __future__ import annotations

import fcntl
import socket
import struct

__all__ = ["loopback_up"]

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sh")


def loopback_up() -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            flags = _IFREQ.unpack(fcntl.ioctl(s, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))[1]
            fcntl.ioctl(s, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))
        return
    except OSError:
        pass
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        (index,) = ip.link_lookup(ifname="lo")
        ip.link("set", index=index, state="up")
