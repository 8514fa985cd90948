"""Messages between a supervisor and the processes it owns: length-prefixed JSON frames.

Only plain JSON crosses a process boundary (never a pickled task object), so what a task
returns is checked for storability where it was produced, and a malformed frame is a
protocol error, not code execution.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MEMORY_EXIT_CODE = 86  # a task process exits with this after a task ran out of its memory limit
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a result or checkpoint larger than this is refused


class ProtocolError(Exception):
    """A peer sent something that is not a frame of ours."""


class FrameTooLarge(ValueError):
    """A message over :data:`MAX_FRAME_BYTES`."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame of UTF-8 JSON.

    Raises:
        TypeError, ValueError: JSON cannot carry the message (a NaN, an object), or a text in it is
            not valid Unicode (a lone surrogate: UnicodeEncodeError), which no database could store.
        FrameTooLarge: over :data:`MAX_FRAME_BYTES`.
    """
    body = json.dumps(message, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"{len(body)} bytes of JSON, over the limit of {MAX_FRAME_BYTES // (1024 * 1024)} MiB")
    return HEADER.pack(len(body)) + body


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def recv(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame from a blocking socket; None once the peer has closed it."""
    header = _exactly(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {size} bytes is over the limit")
    body = _exactly(sock, size)
    if body is None:
        return None
    return _decode(body)


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"a frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame is not a JSON object")
    return message


class Reader:
    """Splits bytes read from a non-blocking socket into frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        messages = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > MAX_FRAME_BYTES:
                raise ProtocolError(f"a frame of {size} bytes is over the limit")
            if len(self._buf) < HEADER.size + size:
                break
            body = bytes(self._buf[HEADER.size:HEADER.size + size])
            del self._buf[:HEADER.size + size]
            messages.append(_decode(body))
        return messages
