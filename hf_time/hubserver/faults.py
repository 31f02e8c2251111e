"""Test-only fault injection: make the embedded Hub fail the way a real Hub and network do.

A :class:`FaultPlan` holds :class:`Fault` s, each matching requests by method and path regex and
firing a bounded number of times. It is inert unless given to ``HubServer(faults=...)`` or set on a
running server (``server.faults = plan``); a server without a plan never consults this module.

Actions, built with the helpers below:

* :func:`respond`: answer a status instead of running the route (5xx, 429 + ``Retry-After``,
  401, 403...); the request body is read and dropped first, so the client sees the answer.
* :func:`drop`: hang up ``before`` running the route, ``after`` running it (the work is done but
  the answer is lost), in the middle of the request body (``mid_request``: a broken upload), or in
  the middle of the response body (``mid_response``: a broken download).
* :func:`delay`: wait, then serve normally (a slow Hub; clients time out).
* :func:`move_branch`: commit to a branch just before serving, as another writer would, so a
  client's ``parentCommit`` taken earlier is now stale.

The plan also records every request it saw (:attr:`FaultPlan.seen`), so a test can count how many
times the client tried.

Example:
    >>> plan = FaultPlan(respond(503, method="POST", path=r"/preupload/", times=2))  # doctest: +SKIP
    >>> server.faults = plan
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from .messages import Request, Response

DropPoint = Literal["before", "after", "mid_request", "mid_response"]


class Abort(Exception):
    """Raised by a fault to make the handler close the connection without (finishing) a response."""


@dataclass(frozen=True)
class Respond:
    """Answer ``status`` with ``headers`` and an error ``message`` instead of running the route."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    message: str = "Injected fault"


@dataclass(frozen=True)
class Drop:
    """Close the connection at ``when`` (see the module docstring)."""

    when: DropPoint


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` before serving the request normally."""

    seconds: float


@dataclass(frozen=True)
class MoveBranch:
    """Commit one small file to ``branch`` of a repository before serving the request."""

    repo_id: str
    branch: str = "main"
    repo_type: str = "models"


Action = Respond | Drop | Delay | MoveBranch


@dataclass
class Fault:
    """An action for requests matching ``method`` (or ``*``) and the regex ``path`` (searched).

    Attributes:
        times: how many matching requests it affects (None: all of them).
        skip: matching requests to let through before it starts.
        fired: how many times it has acted so far.
    """

    action: Action
    method: str = "*"
    path: str = ""
    times: int | None = 1
    skip: int = 0
    fired: int = 0
    _pattern: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        """Whether a request is one this fault is about (whether or not it still fires)."""
        return self.method in ("*", method) and self._pattern.search(path) is not None


class FaultPlan:
    """Faults to inject into an embedded Hub, and a log of the requests it saw. Thread-safe."""

    def __init__(self, *faults: Fault):
        self.faults = list(faults)
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, name of the action or None)
        self._lock = threading.Lock()
        self._moves = 0

    def add(self, fault: Fault) -> Fault:
        """Add a fault (to a plan that may already be installed)."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """Record a request and return the fault that acts on it, if any (counting it as fired)."""
        with self._lock:
            chosen = None
            for fault in self.faults:
                if not fault.matches(method, path):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times is None or fault.fired < fault.times:
                    fault.fired += 1
                    chosen = fault
                    break
            self.seen.append((method, path, type(chosen.action).__name__ if chosen else None))
            return chosen

    def count(self, method: str = "*", path: str = "") -> int:
        """How many requests seen match ``method`` and the regex ``path``."""
        pattern = re.compile(path)
        with self._lock:
            return sum(1 for m, p, _ in self.seen if method in ("*", m) and pattern.search(p))

    def before(self, fault: Fault, ctx: Any, req: Request) -> Response | None:
        """Act before the route runs (``ctx`` is the server's HubContext). Returns a response to send instead
        of the route's, or None.

        Raises:
            Abort: the connection must be closed now.
        """

        action = fault.action
        if isinstance(action, Delay):
            time.sleep(action.seconds)
        elif isinstance(action, MoveBranch):
            self._move(ctx, action)
        elif isinstance(action, Respond):
            req.stream.discard(1 << 62)  # read the whole body, so the client reads our answer
            headers = {"X-Error-Message": action.message, **dict(action.headers)}
            return Response.json({"error": action.message}, action.status, headers)
        elif action.when == "before":
            req.stream.discard(1 << 62)
            raise Abort("injected: connection dropped before the response")
        elif action.when == "mid_request":
            half = (req.content_length or 2) // 2
            req.stream.discard(half)
            raise Abort("injected: connection dropped in the middle of the request body")
        return None

    @staticmethod
    def after(fault: Fault, resp: Response) -> Response:
        """Act once the route has answered.

        Raises:
            Abort: the work was done but the answer must be lost.
        """
        action = fault.action
        if isinstance(action, Drop) and action.when == "after":
            raise Abort("injected: connection dropped after the route ran")
        if isinstance(action, Drop) and action.when == "mid_response":
            resp.cut_after = (resp.length if resp.file is not None else len(resp.body)) // 2
        return resp

    def _move(self, ctx: Any, action: MoveBranch) -> None:
        from .commits import AddFile

        with self._lock:
            self._moves += 1
            n = self._moves
        repo = ctx.storage.repo(action.repo_type, action.repo_id)
        repo.commit(action.branch, [AddFile(f".faults/concurrent-{n}.txt", f"concurrent commit {n}\n".encode())],
                    f"Concurrent commit {n} (injected fault)")


def respond(status: int, *, method: str = "*", path: str = "", times: int | None = 1, skip: int = 0,
            retry_after: float | None = None, message: str | None = None) -> Fault:
    """A fault answering ``status`` (with ``Retry-After`` when given) instead of serving."""
    headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
    return Fault(Respond(status, headers, message or f"Injected fault: HTTP {status}"), method, path, times, skip)


def drop(when: DropPoint, *, method: str = "*", path: str = "", times: int | None = 1, skip: int = 0) -> Fault:
    """A fault hanging up at ``when``: before/after the route, mid_request or mid_response."""
    if when not in ("before", "after", "mid_request", "mid_response"):
        raise ValueError(f"Unknown drop point {when!r}")
    return Fault(Drop(when), method, path, times, skip)


def delay(seconds: float, *, method: str = "*", path: str = "", times: int | None = 1, skip: int = 0) -> Fault:
    """A fault making the server wait ``seconds`` before serving."""
    return Fault(Delay(seconds), method, path, times, skip)


def move_branch(repo_id: str, *, branch: str = "main", repo_type: str = "models", method: str = "*",
                path: str = "", times: int | None = 1, skip: int = 0) -> Fault:
    """A fault committing to ``repo_id``'s ``branch`` (as another writer) just before serving."""
    return Fault(MoveBranch(repo_id, branch, repo_type), method, path, times, skip)
