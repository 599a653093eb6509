"""Frames between the trainer and a sandbox process on a Unix socket: a 4-byte length, then JSON;
file descriptors (the test of a job, as a memfd) ride on the length's bytes. Standard library only."""

from __future__ import annotations

import array
import json
import socket
import struct
from typing import Any

MAX_FRAME = 256 << 20


def send(sock: socket.socket, obj: Any, fds: list[int] = ()) -> None:  # type: ignore[assignment]
    body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    head = struct.pack(">I", len(body))
    if fds:
        sock.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(head)
    sock.sendall(body)


def _exactly(sock: socket.socket, n: int, got: bytes = b"") -> bytes | None:
    parts = [got]
    left = n - len(got)
    while left > 0:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def recv(sock: socket.socket) -> tuple[Any, list[int]] | None:
    """(object, received fds), or None at end of stream."""
    first, fds, _, _ = socket.recv_fds(sock, 4, 4)
    if not first:
        return None
    head = _exactly(sock, 4, first)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    body = _exactly(sock, length)
    if body is None:
        return None
    return json.loads(body), list(fds)
