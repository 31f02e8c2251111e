"""The embedded Hub's request and response objects, the route record and the error-to-status mapping.

Hub errors become the status code and ``X-Error-Code`` / ``X-Error-Message`` headers the real client
maps to its exception types (shared/design/hub-protocol.md §3.2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from . import errors as E
from .framing import BodyReader

STATUS = {
    "BadRequest": 400, "Unauthorized": 401, "NotFound": 404, "RepoNotFound": 404,
    "RevisionNotFound": 404, "EntryNotFound": 404, "Conflict": 409, "PreconditionFailed": 412,
    "PayloadTooLarge": 413, "URITooLong": 414, "RangeNotSatisfiable": 416, "MisdirectedRequest": 421,
    "NotImplemented": 501,
    "InsufficientStorage": 507,
}
# Only these codes are meaningful to huggingface_hub; others would only add noise.
_CLIENT_CODES = {"RepoNotFound", "RevisionNotFound", "EntryNotFound"}


@dataclass
class Request:
    """One parsed HTTP request. The body is read lazily, at most once, and never past ``max_body``.

    Attributes:
        stream: the body (the route reads it directly when it streams, as LFS uploads do).
        max_body: most bytes :meth:`body` may return; set from the route before it runs.
        max_line: most bytes of one line for :meth:`lines`.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    base_url: str
    stream: BodyReader
    content_length: int | None = None
    max_body: int | None = None
    max_line: int = 1 << 20
    _body: bytes | None = None

    def body(self) -> bytes:
        """The whole request body.

        Raises:
            PayloadTooLarge: it is larger than ``max_body`` (found before reading the excess).
        """
        if self._body is None:
            self.stream.limit = self.max_body
            self._body = self.stream.read()
        return self._body

    def lines(self) -> Iterator[bytes]:
        """The body line by line (NDJSON), holding one line at a time in memory."""
        self.stream.limit = self.max_body
        return self.stream.lines(self.max_line)

    def json(self) -> Any:
        """The body parsed as JSON (``{}`` when empty)."""
        raw = self.body()
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise E.BadRequest(f"Request body is not valid JSON: {exc}") from None

    def form(self) -> dict[str, list[str]]:
        """The body parsed as ``application/x-www-form-urlencoded``."""
        return parse_qs(self.body().decode("utf-8", "replace"), keep_blank_values=True)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """First value of a query parameter."""
        return self.query.get(name, [default])[0]

    def flag(self, name: str) -> bool:
        """Whether a boolean query parameter is set (``1``/``true``)."""
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def bearer(self) -> str | None:
        """The bearer token of the ``Authorization`` header, if any. Never log it."""
        auth = self.headers.get("authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None


@dataclass
class Response:
    """A response: JSON/bytes in ``body``, or a slice of a file streamed from disk.

    Attributes:
        cut_after: set by fault injection only: hang up after this many body bytes.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    start: int = 0
    length: int = 0
    cut_after: int | None = None

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        """A JSON response."""
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode())


def error_response(err: E.HubError) -> Response:
    """Map a :class:`HubError` to the status, headers and body the real Hub would send."""
    headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode()[:500]}
    if err.code in _CLIENT_CODES:
        headers["X-Error-Code"] = err.code
    body: dict[str, Any] = {"error": err.message}
    if isinstance(err, E.EntryNotFound) and err.commit:
        headers["X-Repo-Commit"] = err.commit
    if isinstance(err, E.AlreadyExists) and err.url:
        body["url"] = err.url
    if isinstance(err, E.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{err.size}"
    return Response.json(body, STATUS.get(err.code, 400), headers)


# A route: (the HubContext, the request, the path match) -> the response. The context is typed loosely
# so that this module, which the context itself uses, imports nothing above it.
RouteFn = Callable[[Any, Request, "re.Match[str]"], Response]

# What a route does with the request body, which sets how much of it may be read.
JSON_BODY = "json"      # parsed whole: Limits.max_json_bytes
NDJSON_BODY = "ndjson"  # parsed line by line: Limits.max_commit_line_bytes per line, max_commit_bytes in all
STREAM_BODY = "stream"  # copied to disk by the route, which checks the size itself


@dataclass(frozen=True)
class Route:
    """``methods`` + a regex over the raw (still percent-encoded) path -> a function."""

    methods: tuple[str, ...]
    pattern: re.Pattern
    fn: RouteFn
    write: bool = False  # write routes need an accepted bearer token
    body: str = JSON_BODY


def route(methods: str, pattern: str, fn: RouteFn, write: bool = False, body: str = JSON_BODY) -> Route:
    """Build a :class:`Route` from a space-separated method list and a regex string."""
    return Route(tuple(methods.split()), re.compile(pattern), fn, write, body)
