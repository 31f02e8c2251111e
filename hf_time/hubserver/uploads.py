"""One-time LFS upload tickets.

The client PUTs LFS content to the ``href`` the batch endpoint hands out **without** any
``Authorization`` header (shared/design/hub-protocol.md §3.1 #7), so the href itself must carry the
permission: an unguessable ticket, issued only to an authenticated batch request, naming exactly
one object of one repository, and dropped once the upload succeeded or the ticket expired.
Tickets live in memory; an interrupted upload simply asks the batch endpoint again.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

TICKET_TTL_S = 3600.0


@dataclass(frozen=True)
class UploadTicket:
    """Permission to upload one LFS object (``sha256``, ``size``) into one repository."""

    repo_type: str
    repo_id: str
    sha256: str
    size: int
    expires: float


class UploadTickets:
    """Thread-safe registry of pending uploads."""

    def __init__(self, ttl_s: float = TICKET_TTL_S):
        self._ttl = ttl_s
        self._pending: dict[str, UploadTicket] = {}
        self._lock = threading.Lock()

    def issue(self, repo_type: str, repo_id: str, sha256: str, size: int) -> str:
        """Register an upload and return its opaque ticket (URL-safe)."""
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._pending = {k: v for k, v in self._pending.items() if v.expires > now}
            self._pending[ticket] = UploadTicket(repo_type, repo_id, sha256, size, now + self._ttl)
        return ticket

    def get(self, ticket: str) -> UploadTicket | None:
        """The live ticket of that name, or None. It stays valid so a failed PUT can be retried."""
        with self._lock:
            found = self._pending.get(ticket)
            return found if found is not None and found.expires > time.monotonic() else None

    def done(self, ticket: str) -> None:
        """Invalidate a ticket after its upload succeeded."""
        with self._lock:
            self._pending.pop(ticket, None)
