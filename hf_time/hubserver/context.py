"""What every route of the embedded Hub shares: storage, auth policy, limits, pending uploads."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import errors as E
from .limits import Limits
from .storage import HubStorage, Repo
from .uploads import UploadTickets

if TYPE_CHECKING:
    from .faults import FaultPlan
    from .messages import Request


class Traffic:
    """Counters of what the server read, for operators and for tests that bound it.

    ``body_bytes`` counts request-body bytes read through :class:`.BodyReader` (what routes may
    hold); bytes dropped during a lingering close after a refusal are not counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.body_bytes = 0

    def add_body(self, n: int) -> None:
        """Count ``n`` request-body bytes read from a socket."""
        with self._lock:
            self.body_bytes += n


@dataclass
class HubContext:
    """The server-wide state routes need.

    Attributes:
        token: the only bearer token that may write; None with ``any_token`` accepts any non-empty
            one (an explicit, insecure choice), None without it accepts none.
        hosts: the ``Host`` header values this server answers to (:func:`.security.allowed_hosts`).
        any_ip_host: also answer a ``Host`` that is any IP literal with our port (wildcard binds).
        faults: test-only fault injection (:mod:`.faults`); None, and never consulted, otherwise.
    """

    storage: HubStorage
    token: str | None = None
    any_token: bool = False
    hosts: frozenset[str] = frozenset()
    any_ip_host: bool = False
    limits: Limits = field(default_factory=Limits)
    user: str = "user"
    tickets: UploadTickets = field(default_factory=UploadTickets)
    traffic: Traffic = field(default_factory=Traffic)
    faults: FaultPlan | None = None

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
