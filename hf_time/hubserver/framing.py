"""Where a request body ends: strict ``Content-Length`` / ``Transfer-Encoding`` parsing and body readers.

Lenient framing is how request smuggling works (issue 9, defect 5): ``Content-Length: +60`` used to
be read as 0, so the body was parsed as a second request. Here every ambiguity is refused before the
body is touched, following RFC 9112 §6: a malformed or conflicting length is a 400, a transfer coding
other than ``chunked`` a 501, and both headers at once a 400. The connection is then closed, because
the server no longer knows where the next request would start.

The readers never read past the body, count what they read, and enforce a cap while reading, so a
chunked body cannot grow the server's memory beyond the cap either (defect 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import BinaryIO

from .errors import BadRequest, PayloadTooLarge, UnsupportedFraming

_DIGITS = re.compile(r"[0-9]{1,18}\Z")  # ASCII only: str.isdigit() accepts "６０"
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n\Z")
_MAX_CHUNK_LINE = 4096
_MAX_TRAILER_BYTES = 16384
_READ = 1 << 16


@dataclass(frozen=True)
class Framing:
    """How the body of a request is delimited: ``chunked``, or ``length`` bytes (0 when no body)."""

    chunked: bool
    length: int = 0


def check_header_syntax(headers: Message) -> None:
    """Refuse header blocks a stricter parser elsewhere could read differently.

    Raises:
        BadRequest: a line without a colon or with whitespace before it (``Content-Length : 5``
            is silently dropped by the stdlib parser), or an obsolete folded (multi-line) value.
    """
    if headers.defects:
        raise BadRequest("Malformed header line (no colon, or whitespace before the colon)")
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise BadRequest(f"Obsolete line folding in header {name!r} is not accepted")


def parse_framing(headers: Message) -> Framing:
    """Read the body framing of a request from its headers, strictly.

    Raises:
        BadRequest: ``Content-Length`` is not plain ASCII digits, or its copies disagree, or it is
            sent together with ``Transfer-Encoding``.
        UnsupportedFraming: a transfer coding other than a single ``chunked``.
    """
    check_header_syntax(headers)
    lengths = headers.get_all("content-length") or []
    codings = headers.get_all("transfer-encoding") or []
    if codings:
        if lengths:
            raise BadRequest("A request must not carry both Content-Length and Transfer-Encoding")
        names = [c.strip().lower() for value in codings for c in value.split(",")]
        if names != ["chunked"]:
            raise UnsupportedFraming(f"Transfer-Encoding {', '.join(codings)!r} is not supported; "
                                     "send Content-Length or 'chunked'")
        return Framing(chunked=True)
    # Whitespace is refused even where RFC 9110 allows it ("60 "): a proxy in front might read such
    # a value differently, and no real client sends one. Only a comma list gets its spaces removed.
    values = {v.strip(" \t") if "," in value else v for value in lengths for v in value.split(",")}
    if not values:
        return Framing(chunked=False, length=0)
    if len(values) > 1 or not all(_DIGITS.match(v) for v in values):
        raise BadRequest(f"Invalid Content-Length {', '.join(lengths)!r}: one decimal number expected")
    return Framing(chunked=False, length=int(values.pop()))


class BodyReader:
    """A file-like view of one request body that never reads past it.

    Args:
        raw: the connection's buffered input.
        framing: from :func:`parse_framing`.
        limit: most bytes :meth:`read` may return in total (None: unbounded, the caller checks);
            exceeding it raises :class:`PayloadTooLarge` before the excess is read.
        on_read: called with each amount read (traffic counters).
        on_start: called once, just before the first byte of the body is read: where the
            handler sends ``100 Continue`` to a client that asked for it, so a request refused
            without reading its body never invites the client to send it.
    """

    def __init__(self, raw: BinaryIO, framing: Framing, limit: int | None = None, on_read=None, on_start=None):
        self._raw = raw
        self._on_start = on_start
        self._chunked = framing.chunked
        self._left = 0 if framing.chunked else framing.length  # bytes left in the current chunk/body
        self._done = not framing.chunked and framing.length == 0
        self.limit = limit
        self.total = 0
        self._on_read = on_read

    @property
    def consumed(self) -> bool:
        """Whether the whole body has been read (the connection can carry another request)."""
        return self._done

    @property
    def awaiting_continue(self) -> bool:
        """Whether the client still waits for the ``100 Continue`` it asked for (body not invited)."""
        return self._on_start is not None and not self._done

    def left_hint(self) -> int | None:
        """Bytes of the body not read yet, when known (None for chunked bodies)."""
        return None if self._chunked else self._left

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes of the body (all of it for ``n < 0``), b"" at its end.

        Raises:
            BadRequest: malformed chunked encoding, or the connection ended inside the body.
            PayloadTooLarge: the body goes past ``limit``.
        """
        out = bytearray()
        if self._on_start is not None and not self._done and n != 0:
            self._on_start()
            self._on_start = None
        while not self._done and (n < 0 or len(out) < n):
            if self._left == 0:
                if not self._chunked:
                    self._done = True
                    break
                self._left = self._next_chunk_size()
                if self._left == 0:
                    self._read_trailers()
                    self._done = True
                    break
            if self.limit is not None and self.total + self._left > self.limit:
                # Known from Content-Length or the chunk size line: refuse before reading the excess.
                raise PayloadTooLarge(f"Request body is larger than {self.limit} bytes")
            want = self._left if n < 0 else min(self._left, n - len(out))
            data = self._raw.read(min(want, _READ))
            if not data:
                raise BadRequest(f"Connection closed inside the request body after {self.total} bytes")
            self._count(len(data))
            out += data
            self._left -= len(data)
            if not self._chunked and self._left == 0:
                self._done = True
            if self._chunked and self._left == 0 and self._raw.read(2) != b"\r\n":
                raise BadRequest("Chunk data must be followed by CRLF")
        return bytes(out)

    def discard(self, max_bytes: int) -> bool:
        """Read and drop up to ``max_bytes`` of what is left; True when the body was all consumed."""
        limit, self.limit = self.limit, None
        try:
            while not self._done and max_bytes > 0:
                got = len(self.read(min(_READ, max_bytes)))
                max_bytes -= got
        except BadRequest:
            return False
        finally:
            self.limit = limit
        return self._done

    def lines(self, max_line: int) -> Iterator[bytes]:
        """Yield the body's lines (without line ends), each at most ``max_line`` bytes.

        Raises:
            PayloadTooLarge: a line is longer than ``max_line`` (or the body exceeds ``limit``).
        """
        pending = b""
        while True:
            block = self.read(_READ)
            if not block:
                break
            pending += block
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if len(line) > max_line:
                    raise PayloadTooLarge(f"A line of the request body is longer than {max_line} bytes")
                yield line.rstrip(b"\r")
            if len(pending) > max_line:
                raise PayloadTooLarge(f"A line of the request body is longer than {max_line} bytes")
        if pending:
            yield pending.rstrip(b"\r")

    def _count(self, n: int) -> None:
        self.total += n
        if self._on_read is not None:
            self._on_read(n)

    def _next_chunk_size(self) -> int:
        line = self._raw.readline(_MAX_CHUNK_LINE + 1)
        if not line:
            raise BadRequest(f"Connection closed inside the chunked body after {self.total} bytes")
        found = _CHUNK_SIZE.match(line)
        if found is None:
            # -1, zz, an empty line or more than 16 hex digits: the old reader took "-1" as "read
            # to the end of the connection" and "" as 0.
            raise BadRequest(f"Invalid chunk size line {line[:40]!r}: 1 to 16 hex digits expected")
        return int(found[1], 16)

    def _read_trailers(self) -> None:
        seen = 0
        while True:
            line = self._raw.readline(_MAX_CHUNK_LINE + 1)
            seen += len(line)
            if line in (b"\r\n", b"\n"):
                return
            if not line or seen > _MAX_TRAILER_BYTES or not line.endswith(b"\n"):
                raise BadRequest("Malformed or oversized trailer section of the chunked body")
