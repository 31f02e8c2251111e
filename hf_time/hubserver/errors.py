"""Errors raised inside the embedded Hub.

Each error carries ``code``: the name the real Hub puts in its ``X-Error-Code`` header when there is
one (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). huggingface_hub picks its exception
type from that header alone (shared/design/hub-protocol.md §3.2), so the storage layer raises these
and the HTTP layer only maps ``code`` to a status. Storage never knows about HTTP.
"""

from __future__ import annotations


class HubError(Exception):
    """Base class: a request the Hub refuses. ``code`` names the kind of failure."""

    code = "BadRequest"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(HubError):
    """The request is malformed (bad framing, bad JSON or field type, bad path, unknown operation...)."""

    code = "BadRequest"


class Unauthorized(HubError):
    """A write was attempted without an acceptable ``Bearer`` token."""

    code = "Unauthorized"


class MisdirectedRequest(HubError):
    """The ``Host`` header does not name this server (DNS rebinding protection)."""

    code = "MisdirectedRequest"


class RouteNotFound(HubError):
    """No endpoint answers this method and path."""

    code = "NotFound"


class RepoNotFound(HubError):
    """The repository does not exist."""

    code = "RepoNotFound"


class RevisionNotFound(HubError):
    """The branch, tag, pull-request ref or commit does not exist in the repository."""

    code = "RevisionNotFound"


class EntryNotFound(HubError):
    """The file or folder does not exist at the requested commit."""

    code = "EntryNotFound"

    def __init__(self, message: str, commit: str | None = None):
        super().__init__(message)
        # The client caches "missing at commit X" when the 404 names the commit (§3.13).
        self.commit = commit


class AlreadyExists(HubError):
    """A repository, branch or tag of that name already exists."""

    code = "Conflict"

    def __init__(self, message: str, url: str | None = None):
        super().__init__(message)
        self.url = url


class StaleParent(HubError):
    """``parentCommit`` no longer matches the head of the branch being committed to."""

    code = "PreconditionFailed"


class RangeNotSatisfiable(HubError):
    """A ``Range`` header asks for bytes outside the file."""

    code = "RangeNotSatisfiable"

    def __init__(self, message: str, size: int):
        super().__init__(message)
        self.size = size


class PayloadTooLarge(HubError):
    """A request body is larger than the server accepts for that endpoint (see :class:`.Limits`)."""

    code = "PayloadTooLarge"


class URITooLong(HubError):
    """The request target is longer than any legitimate Hub URL."""

    code = "URITooLong"


class UnsupportedFraming(HubError):
    """A ``Transfer-Encoding`` other than ``chunked``: the body cannot be delimited, so it is refused."""

    code = "NotImplemented"


class InsufficientStorage(HubError):
    """The server's disk is full (ENOSPC) or over quota; retrying soon will not help."""

    code = "InsufficientStorage"
