"""The smallest client for ComfyUI's ``/ws`` (loopback only), shared by the end-to-end tests and the ComfyUI
benchmarks: text frames as JSON, binary frames (preview images) as None, each with its arrival time."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Optional


class ComfyWebSocket:
    """A websocket to a ComfyUI server on 127.0.0.1.

    Args:
        port: the server's port.
        client_id: the id prompts are queued with, so their progress comes here.
    """

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        status, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise ConnectionError(f"ComfyUI refused the websocket: {status[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self, timeout: float) -> Optional[tuple[float, Optional[dict]]]:
        """The next frame: (arrival time, JSON message), (arrival time, None) for a binary frame, or None on
        timeout."""
        self.sock.settimeout(timeout)
        try:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            return time.time(), (json.loads(payload) if b0 & 0x0F == 1 else None)
        except socket.timeout:
            return None

    def recv(self, timeout: float) -> Optional[dict]:
        """The next JSON message (binary frames skipped), or None when none comes within ``timeout`` seconds."""
        end = time.time() + timeout
        while (got := self.frame(max(end - time.time(), 0.01))) is not None:
            if got[1] is not None:
                return got[1]
        return None

    def close(self) -> None:
        self.sock.close()
