"""Raw HTTP/1.1 over a socket, for requests the real client never sends (bad framing, bad Host...).

The real huggingface_hub client cannot send a malformed ``Content-Length`` or a foreign ``Host``, so
these tests speak bytes. Responses are parsed just enough to assert on: status, headers, body.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    """One parsed HTTP response (header names lower-cased)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> str:
        """The ``X-Error-Message`` header, or an empty string."""
        return self.headers.get("x-error-message", "")


def host_of(url: str) -> str:
    """The ``host:port`` of ``url``, as a client would put it in its ``Host`` header."""
    return urlsplit(url).netloc


class Conn:
    """A client socket with a read buffer, so responses can be read one after another."""

    def __init__(self, url: str, timeout: float = 30):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send all of ``data``."""
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self, head: bool = False) -> RawResponse | None:
        """Read one response; None when the server closed without sending one."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                if not self.buf:
                    return None
                raise AssertionError(f"connection closed inside the response head: {self.buf!r}")
        head_bytes, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        while len(self.buf) < length and self._fill():
            pass
        body, self.buf = self.buf[:length], self.buf[length:]
        return RawResponse(int(lines[0].split()[1]), headers, body)

    def rest(self) -> bytes:
        """Everything the server sends until it closes the connection (or resets it)."""
        try:
            while self._fill():
                pass
        except (ConnectionResetError, TimeoutError):
            pass
        out, self.buf = self.buf, b""
        return out


def exchange(url: str, raw: bytes, *, timeout: float = 30) -> tuple[RawResponse | None, bytes]:
    """Send ``raw`` bytes on a fresh connection, read one response, then everything until EOF.

    Returns:
        ``(first response or None, bytes the server sent after it before closing)``. The second
        item shows whether the server answered a smuggled second request.
    """
    with Conn(url, timeout) as conn:
        conn.send(raw)
        first = conn.response()
        return first, conn.rest()


_DEFAULT = "<the url's host:port>"


def request(url: str, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"",
            host: str | None = _DEFAULT, content_length: bool = True) -> RawResponse:
    """Send one request with ``Connection: close`` and return its response (which must come).

    Args:
        host: the ``Host`` header; by default the one of ``url``, None to send none.
        content_length: add a ``Content-Length`` header for a non-empty ``body``.
    """
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host_of(url) if host is _DEFAULT else host}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if content_length and body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    resp, _ = exchange(url, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    assert resp is not None, f"no response to {method} {path}"
    return resp
