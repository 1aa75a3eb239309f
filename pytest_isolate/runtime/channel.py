"""Framing for the two channels between host and container.

Sync channel (a SOCK_SEQPACKET socket pair): one JSON object per packet, small
control messages in both directions during start-up (see ``bootstrap.py``).

Result channel (a pipe, container -> host): a stream of frames::

    +------+------+----------+-----------------+
    | 'PI' | kind | reserved | length (4, BE)  |  payload (length bytes)
    +------+------+----------+-----------------+

``kind`` is ``J`` (a JSON document) or ``P`` (cloudpickle bytes, only honoured when
the caller asked for ``trusted=True``). The reader enforces a size cap before it
buffers anything, so a hostile container cannot make the host allocate without
bound, and it never interprets a frame other than by ``json.loads``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

__all__ = ["DEFAULT_MAX_FRAME", "ChannelError", "FrameReader", "frame", "recv_msg",
           "send_msg", "write_all", "write_frame"]

MAGIC = b"PI"
HEADER = struct.Struct(">2scxI")
KIND_JSON = b"J"
KIND_PICKLE = b"P"
DEFAULT_MAX_FRAME = 256 * 2**20
MAX_MSG = 64 * 1024


class ChannelError(Exception):
    """The peer sent something that is not a well-formed frame or message."""


def frame(kind: bytes, payload: bytes) -> bytes:
    """One frame: header and payload."""
    return HEADER.pack(MAGIC, kind, len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_frame(fd: int, kind: bytes, payload: bytes) -> None:
    write_all(fd, frame(kind, payload))


class FrameReader:
    """Incremental frame parser with a hard size cap per frame and in total.

    The buffer never holds more than one frame plus one read's worth of bytes.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME,
                 max_total: int | None = None) -> None:
        self.max_frame = max_frame
        self.max_total = max_frame if max_total is None else max_total
        self._buf = bytearray()
        self._need: int | None = None
        self._kind = b""
        self.total = 0
        self.error: str | None = None

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The complete frames ``data`` finishes. On bad input, the frames before it
        are still returned and ``error`` says what was wrong; nothing more is parsed."""
        frames: list[tuple[bytes, bytes]] = []
        try:
            self._parse(data, frames)
        except ChannelError as e:
            self.error = str(e)
            self._buf.clear()
        return frames

    def _parse(self, data: bytes, frames: list[tuple[bytes, bytes]]) -> None:
        if self.error is not None:
            return
        self._buf += data
        while True:
            if self._need is None:
                if len(self._buf) < HEADER.size:
                    return
                magic, kind, length = HEADER.unpack_from(self._buf)
                if magic != MAGIC or kind not in (KIND_JSON, KIND_PICKLE):
                    raise ChannelError("malformed frame header on the result channel")
                if length > self.max_frame:
                    raise ChannelError(
                        f"result frame of {length} bytes exceeds the cap of {self.max_frame}")
                del self._buf[: HEADER.size]
                self._need, self._kind = length, kind
            if len(self._buf) < self._need:
                return
            self.total += HEADER.size + self._need
            if self.total > self.max_total + 4096:
                raise ChannelError(f"the result channel carried more than {self.max_total} bytes")
            frames.append((self._kind, bytes(self._buf[: self._need])))
            del self._buf[: self._need]
            self._need = None

    @property
    def partial(self) -> bool:
        """True if the stream ended in the middle of a frame."""
        return bool(self._buf) or self._need is not None


def send_msg(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.send(json.dumps(msg).encode())


def recv_msg(sock: socket.socket) -> dict[str, Any] | None:
    """One message, or None at end of stream. Malformed input raises ChannelError."""
    data = sock.recv(MAX_MSG)
    if not data:
        return None
    try:
        msg = json.loads(data)
    except ValueError:
        raise ChannelError("malformed message on the sync channel") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ChannelError("malformed message on the sync channel")
    return msg
