"""HTTP plumbing of the embedded Hub: request parsing, routing, auth, JSON and file responses.

Endpoint logic lives in :mod:`.api_repos` and :mod:`.api_files`; this module only turns bytes on a
socket into a :class:`Request`, calls the matching route and writes its :class:`Response`.
Hub errors become the status code and ``X-Error-Code`` header the real client maps to its exception
types (shared/design/hub-protocol.md §3.2).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import errors as E
from .security import host_allowed
from .storage import HubStorage, Repo
from .uploads import UploadTickets

logger = logging.getLogger("hf_time.hubserver")

_STATUS = {
    "BadRequest": 400, "Unauthorized": 401, "NotFound": 404, "RepoNotFound": 404,
    "RevisionNotFound": 404, "EntryNotFound": 404, "Conflict": 409, "PreconditionFailed": 412,
    "RangeNotSatisfiable": 416,
}
# Only these codes are meaningful to huggingface_hub; others would only add noise.
_CLIENT_CODES = {"RepoNotFound", "RevisionNotFound", "EntryNotFound"}
_COPY_CHUNK = 1 << 20


@dataclass
class HubContext:
    """What every route needs: the storage, the auth policy, pending LFS uploads, the user name.

    Attributes:
        token: the only bearer token that may write; None with ``any_token`` accepts any non-empty
            one (an explicit, insecure choice), None without it accepts none.
        hosts: the ``Host`` header values this server answers to (:func:`.security.allowed_hosts`).
        any_ip_host: also answer a ``Host`` that is any IP literal with our port (wildcard binds).
    """

    storage: HubStorage
    token: str | None = None
    any_token: bool = False
    hosts: frozenset[str] = frozenset()
    any_ip_host: bool = False
    user: str = "user"
    tickets: UploadTickets = field(default_factory=UploadTickets)

    def accepts(self, bearer: str | None) -> bool:
        """Whether a bearer token grants write access."""
        if not bearer:
            return False
        if self.token is None:
            return self.any_token
        return hmac.compare_digest(bearer.encode(), self.token.encode())

    def open_repo(self, req: Request, repo_type: str | None, repo_id: str) -> Repo:
        """Open a repository for a request; a private one is invisible without an accepted token.

        Args:
            repo_type: ``models``/``datasets``/``spaces``; None (no URL prefix) means ``models``.
        """
        repo = self.storage.repo(repo_type or "models", repo_id)
        if repo.meta().get("private") and not self.accepts(req.bearer()):
            raise E.RepoNotFound(f"Repository Not Found for {repo_type or 'models'}/{repo_id}")
        return repo


class _ChunkedReader:
    """File-like view of a ``Transfer-Encoding: chunked`` request body."""

    def __init__(self, raw):
        self._raw = raw
        self._left = 0
        self._done = False

    @property
    def consumed(self) -> bool:
        """Whether the terminating zero-size chunk has been read."""
        return self._done

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while not self._done and (n < 0 or len(out) < n):
            if self._left == 0:
                size_line = self._raw.readline(65537).split(b";", 1)[0].strip()
                self._left = int(size_line or b"0", 16)
                if self._left == 0:
                    while self._raw.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    break
            take = self._left if n < 0 else min(self._left, n - len(out))
            data = self._raw.read(take)
            if not data:
                raise E.BadRequest("truncated chunked body")
            out += data
            self._left -= len(data)
            if self._left == 0:
                self._raw.readline(3)  # CRLF after each chunk
        return bytes(out)


class _LengthReader:
    """File-like view of a body of known ``Content-Length``; never reads past it."""

    def __init__(self, raw, length: int):
        self._raw = raw
        self.left = length

    @property
    def consumed(self) -> bool:
        """Whether every byte of the body has been read."""
        return self.left == 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self._raw.read(n) if n else b""
        self.left -= len(data)
        return data


@dataclass
class Request:
    """One parsed HTTP request. The body is read lazily, at most once."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    base_url: str
    stream: Any
    _body: bytes | None = None

    def body(self) -> bytes:
        """The whole request body."""
        if self._body is None:
            self._body = self.stream.read()
        return self._body

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
    """A response: JSON/bytes in ``body``, or a slice of a file streamed from disk."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    start: int = 0
    length: int = 0

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
    return Response.json(body, _STATUS.get(err.code, 400), headers)


RouteFn = Callable[[HubContext, Request, "re.Match[str]"], Response]


@dataclass(frozen=True)
class Route:
    """``methods`` + a regex over the raw (still percent-encoded) path -> a function."""

    methods: tuple[str, ...]
    pattern: re.Pattern
    fn: RouteFn
    write: bool = False  # write routes need an accepted bearer token


class HubRequestHandler(BaseHTTPRequestHandler):
    """Serves one connection; the server provides ``hub_context`` and ``hub_routes``."""

    protocol_version = "HTTP/1.1"  # keep-alive: the client pools its connections
    server_version = "hf-time-hub/1"
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK would
    # add ~40 ms to every request.
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        self.server.track_connection(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.track_connection(self.connection, add=False)

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        ctx: HubContext = self.server.hub_context
        url = urlsplit(self.path)
        host = self.headers.get("host")
        if not host_allowed(host, ctx.hosts, any_ip_literal=ctx.any_ip_host):
            self._refuse_host(host)
            return
        length = self.headers.get("content-length")
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            stream: Any = _ChunkedReader(self.rfile)
        else:
            stream = _LengthReader(self.rfile, int(length) if length and length.isdigit() else 0)
        req = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True), self.headers,
                      f"http://{host}", stream)
        try:
            route, match = self._match(req)
            if route.write and not ctx.accepts(req.bearer()):
                raise E.Unauthorized("Invalid credentials in Authorization header")
            resp = route.fn(ctx, req, match)
        except E.HubError as err:
            resp = error_response(err)
        except Exception:  # a bug must not kill the connection thread silently
            logger.exception("internal error on %s %s", self.command, url.path)
            resp = Response.json({"error": "Internal server error"}, 500)
        if not stream.consumed:
            # The body was not fully consumed: the next request on this socket would be garbage.
            self.close_connection = True
            resp.headers["Connection"] = "close"
        self._send(resp)

    def _refuse_host(self, host: str | None) -> None:
        # Checked before anything else, reads included: a DNS-rebinding page must learn nothing.
        # 421 (Misdirected Request) says "not this server"; a missing Host is a malformed request.
        if host:
            message = f"Host header {host[:100]!r} does not name this server (DNS rebinding protection)"
        else:
            message = "A Host header naming this server is required"
        self.close_connection = True
        self._send(Response.json({"error": message}, 421 if host else 400,
                                 {"X-Error-Message": message.encode("ascii", "replace").decode(),
                                  "Connection": "close"}))

    def _match(self, req: Request) -> tuple[Route, re.Match[str]]:
        allowed = False
        for route in self.server.hub_routes:
            m = route.pattern.match(req.path)
            if m is None:
                continue
            if req.method in route.methods:
                return route, m
            allowed = True
        raise E.RouteNotFound(f"{'Method not allowed' if allowed else 'Not found'}: {req.method} {req.path}")

    def _send(self, resp: Response) -> None:
        size = resp.length if resp.file is not None else len(resp.body)
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        if "Content-Length" not in resp.headers:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        if resp.file is None:
            self.wfile.write(resp.body)
            return
        with open(resp.file, "rb") as f:
            f.seek(resp.start)
            left = resp.length
            while left > 0:
                chunk = f.read(min(_COPY_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        # Request lines only (never headers, so never tokens); upload tickets are masked too.
        line = format % args
        logger.debug("%s %s", self.address_string(), re.sub(r"/lfs-upload/[^ ]+", "/lfs-upload/***", line))
