"""What hf_time does when the Hub misbehaves: bounded retries, then one typed error that says what to do.

Every call :class:`hf_time.hub.Hub` makes goes through :func:`call`. Transport failures (refused
connection, DNS, a connection dropped mid-transfer, timeouts) and answers that mean "later" (429 and
5xx, honouring ``Retry-After``) are retried a few times with exponential backoff, bounded in total
(a few seconds, not minutes); then, or for any other error status, the caller gets one
:class:`~hf_time.errors.HfTimeError` naming the operation, the endpoint and the fix. Nothing here
ever prints or logs a token, and endpoints are shown without credentials.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

from hf_time.errors import HubConnectionError, HubRequestError

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUS = (408, 429, 500, 502, 503, 504)
ATTEMPTS = 3  # first try + 2 retries
BACKOFF_S = 0.5  # 0.5 s, then 1 s
MAX_RETRY_AFTER_S = 5.0
_GIVE_UP = {401: "the token was refused: set HF_TOKEN (or `hf auth login`) to a valid token",
            403: "the token may not do this: use a token with write access to that repo",
            413: "the request is too large for this Hub",
            507: "the Hub's disk is full: free space on the server and try again"}


def redact(url: str) -> str:
    """``url`` without user name and password (``https://user:pw@host`` -> ``https://host``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a failed transfer in the HTTP clients huggingface_hub may use."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError  # raised when a download cannot connect

        found.append(LocalEntryNotFoundError)
    except ImportError:
        pass
    return tuple(found)


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


def call(fn: Callable[[], T], *, what: str, endpoint: str, sleep: Callable[[float], None] | None = None) -> T:
    """``fn()``, retried on transport failures and retryable statuses, with typed errors after.

    Errors the caller translates itself (repository or revision not found, a missing file) pass
    through unchanged.

    Args:
        fn: the call.
        what: the operation, for messages ("resolving org/name@main").
        endpoint: the Hub endpoint (shown without credentials).
        sleep: how to wait between attempts (default ``time.sleep``; tests pass a recorder).

    Raises:
        HubConnectionError: the endpoint could not be reached.
        HubRequestError: an error status that is not retryable, or still there after the retries.
    """
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    passthrough = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)
    sleep = sleep or time.sleep
    transport = transport_errors()
    where = redact(endpoint)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn()
        except passthrough:
            raise
        except HfHubHTTPError as e:
            status = _status(e)
            if status in RETRY_STATUS and attempt < ATTEMPTS:
                wait = _retry_after(e) or BACKOFF_S * 2 ** (attempt - 1)
                logger.warning("%s: the Hub answered %s; retrying in %.1f s", what, status, wait)
                sleep(wait)
                continue
            hint = _GIVE_UP.get(status, "try again later" if status in RETRY_STATUS else "check the request")
            tries = f" after {attempt} tries" if attempt > 1 else ""
            raise HubRequestError(f"{what} failed: {where} answered {status}{tries}; {hint}") from None
        except transport as e:
            if attempt < ATTEMPTS:
                wait = BACKOFF_S * 2 ** (attempt - 1)
                logger.warning("%s: %s; retrying in %.1f s", what, type(e).__name__, wait)
                sleep(wait)
                continue
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise HubConnectionError(f"{what}: cannot reach the Hub at {where} after {attempt} tries ({reason}); check "
                                     "your network, or that the server is running (--endpoint / HF_ENDPOINT)") from None
    raise AssertionError("unreachable")
