"""HTTP plumbing of the embedded Hub: one connection, its requests, routing, auth, bounded bodies.

Endpoint logic lives in :mod:`.api_repos` and :mod:`.api_files`. This module turns bytes on a socket
into a :class:`.Request`, calls the matching route and writes its :class:`.Response`. Everything a
request could abuse is checked before a route runs, cheapest first: the ``Host`` header, the body
framing, the URL length, the route, the token, the announced body size.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from . import errors as E
from .context import HubContext
from .faults import Abort
from .framing import BodyReader, parse_framing
from .limits import Limits
from .messages import JSON_BODY, NDJSON_BODY, Request, Response, Route, error_response
from .security import host_allowed

logger = logging.getLogger("hf_time.hubserver")

_COPY_CHUNK = 1 << 20
_DRAIN_SECONDS = 2.0


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

    _expect_continue = False  # the current request asked for "100 Continue"

    def handle_expect_100(self) -> bool:
        # The stdlib answers "100 Continue" at once, inviting the body before any check. Defer it
        # to the first read of the body (BodyReader.on_start): a refused request never gets one.
        self._expect_continue = True
        return True

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        ctx: HubContext = self.server.hub_context
        expect_continue, self._expect_continue = self._expect_continue, False
        host = self.headers.get("host")
        if not host_allowed(host, ctx.hosts, any_ip_literal=ctx.any_ip_host):
            # Before anything else, reads included: a DNS-rebinding page must learn nothing.
            self._refuse(_host_error(host))
            return
        try:
            framing = parse_framing(self.headers)
        except E.HubError as err:
            self._refuse(error_response(err))  # the body's end is unknown: the connection is done
            return
        stream = BodyReader(self.rfile, framing, on_read=ctx.traffic.add_body,
                            on_start=self._send_continue if expect_continue else None)
        url = urlsplit(self.path)
        req = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True), self.headers,
                      f"http://{host}", stream, content_length=None if framing.chunked else framing.length)
        try:
            resp = self._run(ctx, req)
        except Abort as exc:  # test-only fault injection
            logger.debug("%s", exc)
            self._abort()
            return
        self._respond(resp, stream, ctx.limits)

    def _run(self, ctx: HubContext, req: Request) -> Response:
        """The response to ``req``: checks, then its route; every failure becomes a status."""
        plan = ctx.faults
        fault = plan.take(req.method, req.path) if plan is not None else None
        try:
            injected = plan.before(fault, ctx, req) if fault is not None else None
            if injected is not None:
                return injected
            if len(self.path) > ctx.limits.max_url_bytes:
                raise E.URITooLong(f"Request URL is longer than {ctx.limits.max_url_bytes} bytes")
            route, match = self._match(req)
            if route.write and not ctx.accepts(req.bearer()):
                raise E.Unauthorized("Invalid credentials in Authorization header")
            _bound_body(req, route, ctx.limits)
            resp = route.fn(ctx, req, match)
        except E.HubError as err:
            resp = error_response(err)
        except Abort:
            raise
        except Exception as exc:  # a bug must not kill the connection thread silently
            resp = _unexpected(exc, req.method, req.path)
        return plan.after(fault, resp) if fault is not None else resp

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

    def _send_continue(self) -> None:
        self.send_response_only(100)
        self.end_headers()

    def _respond(self, resp: Response, stream: BodyReader, limits: Limits) -> None:
        """Send ``resp``; keep the connection only if the request body was consumed."""
        left = None if stream.consumed else stream.left_hint()
        if stream.awaiting_continue:
            left = None  # never invited, the body may never come: answer and close instead
        if left is not None and left <= limits.drain_bytes:
            # A small unread body (a refused JSON request): skip it and keep the connection.
            self._with_deadline(lambda: stream.discard(limits.drain_bytes))
        if stream.consumed:
            self._send(resp)
        else:
            self._refuse(resp)

    def _refuse(self, resp: Response) -> None:
        """Send ``resp`` and close, without reading the rest of the request body.

        Closing a socket that still has unread input makes the kernel send a reset, which can
        destroy the response before the client reads it. So, like other servers' "lingering
        close", stop sending, then read and drop a bounded amount until the client hangs up.
        """
        self.close_connection = True
        resp.headers["Connection"] = "close"
        self._send(resp)
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            return
        limit = self.server.hub_context.limits.drain_bytes

        def drain() -> None:
            got = 0
            while got < limit:
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                got += len(chunk)

        self._with_deadline(drain)

    def _with_deadline(self, fn) -> None:
        """Run ``fn`` with a short socket timeout; a client too slow to finish loses its connection."""
        self.connection.settimeout(_DRAIN_SECONDS)
        start = time.monotonic()
        try:
            fn()
        except (OSError, E.HubError):
            self.close_connection = True
        finally:
            self.connection.settimeout(self.timeout)
            if time.monotonic() - start >= _DRAIN_SECONDS:
                self.close_connection = True

    def _abort(self) -> None:
        """Hang up without (finishing) a response, as a crashed server or a broken network would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

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
        # cut_after is only ever set by fault injection: send part of the body, then hang up.
        left = size if resp.cut_after is None else min(size, resp.cut_after)
        if resp.file is None:
            self.wfile.write(resp.body[:left])
        else:
            with open(resp.file, "rb") as f:
                f.seek(resp.start)
                while left > 0:
                    chunk = f.read(min(_COPY_CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
        if resp.cut_after is not None:
            self._abort()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        # Request lines only (never headers, so never tokens); upload tickets are masked too.
        line = format % args
        logger.debug("%s %s", self.address_string(), re.sub(r"/lfs-upload/[^ ]+", "/lfs-upload/***", line))


def _bound_body(req: Request, route: Route, limits: Limits) -> None:
    """Give ``req`` the body limits of its route; refuse an announced length over them right away.

    Raises:
        PayloadTooLarge: ``Content-Length`` exceeds the route's limit (nothing has been read).
    """
    if route.body == JSON_BODY:
        req.max_body = limits.max_json_bytes
    elif route.body == NDJSON_BODY:
        req.max_body, req.max_line = limits.max_commit_bytes, limits.max_commit_line_bytes
    if req.max_body is not None and (req.content_length or 0) > req.max_body:
        raise E.PayloadTooLarge(f"Request body of {req.content_length} bytes is larger than the "
                                f"{req.max_body} bytes this endpoint accepts")


def _unexpected(exc: Exception, method: str, path: str) -> Response:
    """507 for a full disk, which retrying soon will not fix (the client retries 500 for ~23 s and
    does not retry 507); 500 with the traceback logged for anything else, which is a bug."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        logger.error("disk full while serving %s %s: %s", method, path, exc)
        return error_response(E.InsufficientStorage(
            f"The Hub server's disk is full ({exc.strerror}); free space on the server, then retry"))
    logger.exception("internal error on %s %s", method, path)
    return Response.json({"error": "Internal server error"}, 500)


def _host_error(host: str | None) -> Response:
    """421 (Misdirected Request: "not this server") for a foreign Host; 400 when there is none."""
    if host:
        return error_response(E.MisdirectedRequest(f"Host header {host[:100]!r} does not name this server "
                                                   "(DNS rebinding protection); use 127.0.0.1 or localhost"))
    return error_response(E.BadRequest("A Host header naming this server is required"))
