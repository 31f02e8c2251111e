"""The embedded Hub's lifecycle: bind, serve in a thread or in the foreground, stop cleanly."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from . import api_files, api_repos, security, web
from .context import HubContext, Traffic
from .faults import FaultPlan
from .handler import HubRequestHandler
from .limits import Limits
from .storage import HubStorage

logger = logging.getLogger("hf_time.hubserver")

# Order matters only where patterns overlap: file routes are the more specific ones, and the web
# pages' repo patterns (/{ns}/{name}/...) come last so that no API path reaches them.
ROUTES = [*api_files.ROUTES, *api_repos.ROUTES, *web.ROUTES]


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its Hub context and its open connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], context: HubContext):
        self.hub_context = context
        self.hub_routes = ROUTES
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, HubRequestHandler)

    def track_connection(self, conn: socket.socket, add: bool) -> None:
        """Remember open client sockets so :meth:`close_connections` can end idle keep-alives."""
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def handle_error(self, request, client_address) -> None:
        # socketserver would print a traceback to stderr; a client hanging up mid-response is
        # routine (cancelled downloads), anything else is worth a warning with its traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            logger.debug("client %s went away: %s", client_address[0], exc)
        else:
            logger.warning("error while serving %s", client_address[0], exc_info=True)

    def close_connections(self) -> None:
        """Shut down every open client socket (their handler threads then exit)."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HubServer:
    """A Hub-compatible HTTP server for the real huggingface_hub client, storing repos under ``root``.

    The socket is bound at construction, so :attr:`url` is final even with ``port=0``.

    Args:
        root: folder holding the repositories; created if missing, reused across restarts.
        host: interface to listen on (loopback by default: there is no TLS and reads are anonymous).
        port: TCP port, or 0 for a free one.
        token: the only bearer token accepted for writes. When None, a random one is generated
            (read it from :attr:`token`) unless ``insecure_any_token`` is set.
        insecure_any_token: accept any non-empty token for writes (the old behaviour). Any program
            or web page that can reach the port can then write; for throwaway test servers only.
        allowed_hosts: more names (besides loopback and the bound address) that clients may put in
            the ``Host`` header, e.g. the name of a reverse proxy. Other names are refused (421).
        limits: body and URL size limits (:class:`.Limits`; the defaults suit the real client).
        faults: test-only :class:`.FaultPlan` of errors to inject; also settable later through
            :attr:`faults`.

    Attributes:
        token: the write token (None only with ``insecure_any_token``). Never logged.

    Example:
        >>> with HubServer("/tmp/hub") as hub:   # doctest: +SKIP
        ...     HfApi(endpoint=hub.url, token=hub.token).create_repo("me/model")
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
                 insecure_any_token: bool = False, allowed_hosts: tuple[str, ...] = (),
                 limits: Limits | None = None, faults: FaultPlan | None = None):
        if token is not None and insecure_any_token:
            raise ValueError("Pass either a token or insecure_any_token=True, not both")
        if token is not None and not token.strip():
            raise ValueError("The token must not be empty")
        self.root = Path(root)
        self.storage = HubStorage(self.root)
        removed, freed = self.storage.sweep_temp_files()
        if removed:
            logger.info("removed %d stale temporary files (%d bytes) left by interrupted writes under %s",
                        removed, freed, self.root)
        self.token = None if insecure_any_token else (token or security.generate_token())
        context = HubContext(self.storage, token=self.token, any_token=insecure_any_token,
                             limits=limits or Limits(), faults=faults)
        self._httpd = _HTTPServer((host, port), context)
        bound_host, self.port = self._httpd.server_address[:2]
        context.hosts = security.allowed_hosts(bound_host, self.port, allowed_hosts)
        context.any_ip_host = bound_host in ("0.0.0.0", "", "::")
        # A wildcard bind is reachable on loopback; the URL must be something a client can dial.
        self.host = "127.0.0.1" if bound_host in ("0.0.0.0", "") else bound_host
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None
        self._foreground = False
        self._closed = False

    @property
    def faults(self) -> FaultPlan | None:
        """The fault plan in force (test-only); assign a :class:`.FaultPlan`, or None to stop."""
        return self._httpd.hub_context.faults

    @faults.setter
    def faults(self, plan: FaultPlan | None) -> None:
        self._httpd.hub_context.faults = plan

    @property
    def traffic(self) -> Traffic:
        """What the server has read so far (request-body bytes), for monitoring and tests."""
        return self._httpd.hub_context.traffic

    def start(self) -> HubServer:
        """Serve in a daemon thread and return immediately. Returns ``self``."""
        if self._closed:
            raise RuntimeError("This HubServer was stopped; create a new one on the same root")
        if self._thread is None:
            # A short poll interval keeps stop() fast; idle polling is negligible.
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,),
                                            name=f"hf-time-hub:{self.port}", daemon=True)
            self._thread.start()
            logger.info("embedded Hub serving %s from %s", self.url, self.root)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C), then release the socket."""
        if self._closed or self._thread is not None:
            raise RuntimeError("This HubServer is already serving or was stopped")
        logger.info("embedded Hub serving %s from %s", self.url, self.root)
        self._foreground = True
        try:
            self._httpd.serve_forever(0.1)
        except KeyboardInterrupt:
            logger.info("embedded Hub interrupted")
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, close open connections and release the port. Idempotent."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        elif self._foreground and not self._closed:
            self._httpd.shutdown()  # from another thread: returns once serve_forever() has returned
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._httpd.server_close()
            self._httpd.close_connections()
            logger.info("embedded Hub at %s stopped", self.url)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"HubServer(url={self.url!r}, root={str(self.root)!r})"
