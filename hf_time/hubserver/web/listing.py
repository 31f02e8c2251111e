"""Listing repositories page by page: search, author, sort, and a cursor for the next page.

Shared by ``GET /api/models`` (and datasets, spaces) and the web index. Pages are cut by *keyset*
(the sort value and id of the last item, in an opaque cursor) rather than by offset, so a repo that
is created or updated while a client walks the pages neither repeats nor pushes another one out of
the listing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import BadRequest, RepoNotFound
from ..rules import card_metadata
from ..storage import HubStorage, Repo

# The sort keys of the client (``sort=`` after its own renaming: last_modified -> lastModified...).
# Download, like and trending counters are always 0 here, so those sorts fall back to the id.
SORT_KEYS = ("lastModified", "createdAt", "id", "downloads", "likes", "trendingScore")
_CARD_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Listed:
    """One repository as listed: where it is, its metadata and the head of ``main``."""

    repo: Repo
    meta: dict
    head: str
    record: dict

    @property
    def last_modified(self) -> str:
        return self.record["date"]

    def card(self) -> dict | None:
        """The card's YAML metadata at ``main`` (None without a README or front matter)."""
        return read_card(self.repo, self.record)


def read_card(repo: Repo, record: dict) -> dict | None:
    """The YAML metadata of ``README.md`` in a commit (None when absent, too large or invalid)."""
    readme = record["tree"].get("README.md")
    if readme is None or readme["size"] > _CARD_MAX_BYTES:
        return None
    card, _ = card_metadata(repo.read_text(readme))
    return card


@dataclass(frozen=True)
class Query:
    """What to list. ``search`` terms must all appear in the id (case-insensitive)."""

    search: tuple[str, ...] = ()
    author: str | None = None
    sort: str = "lastModified"
    descending: bool = True
    limit: int = 1000
    cursor: str | None = None


def query_from_args(args: dict[str, list[str]], max_items: int, default_limit: int | None = None) -> Query:
    """Read a :class:`Query` from URL query parameters as huggingface_hub sends them.

    Args:
        args: the parsed query string.
        max_items: the largest page (:attr:`.Limits.max_page_items`).
        default_limit: page size without ``limit`` (default ``max_items``).

    Raises:
        BadRequest: an unknown sort key, a direction other than 1/-1, a limit that is not a
            positive integer.
    """
    sort = (args.get("sort") or ["lastModified"])[0]
    if sort not in SORT_KEYS:
        raise BadRequest(f"Unknown sort key {sort[:40]!r}; expected one of {', '.join(SORT_KEYS)}")
    direction = (args.get("direction") or ["-1"])[0]
    if direction not in ("1", "-1"):
        raise BadRequest(f"direction must be 1 or -1, got {direction[:20]!r}")
    raw_limit = (args.get("limit") or [None])[0]
    limit = default_limit or max_items
    if raw_limit not in (None, ""):
        if not raw_limit.isdigit() or int(raw_limit) == 0:
            raise BadRequest(f"limit must be a positive integer, got {raw_limit[:20]!r}")
        limit = int(raw_limit)
    search = tuple(s.strip().lower() for s in args.get("search", []) if s.strip())
    author = (args.get("author") or [None])[0] or None
    return Query(search, author, sort, direction == "-1", min(limit, max_items), (args.get("cursor") or [None])[0])


def _sort_value(item: Listed, key: str) -> str:
    """The value a listing sorts on, as a string (dates are ISO and compare as text)."""
    if key == "lastModified":
        return item.last_modified
    if key == "createdAt":
        return item.meta["createdAt"]
    if key == "id":
        return item.repo.repo_id.lower()
    return "0"  # downloads, likes, trendingScore: not counted by this server


def _position(item: Listed, key: str) -> tuple[str, str, str]:
    """A total order: the sort value, then the type and id break ties."""
    return _sort_value(item, key), item.repo.repo_type, item.repo.repo_id


def encode_cursor(position: tuple[str, str, str]) -> str:
    """The opaque ``cursor`` parameter that resumes a listing after ``position``."""
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    """Inverse of :func:`encode_cursor`.

    Raises:
        BadRequest: the cursor was not made by :func:`encode_cursor`.
    """
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise BadRequest("Invalid cursor; restart the listing without one") from None
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
        raise BadRequest("Invalid cursor; restart the listing without one")
    return value[0], value[1], value[2]


def _candidates(storage: HubStorage, repo_types: Iterable[str], query: Query, show_private: bool) -> list[Listed]:
    """Every repository matching the id filters, with its head read."""
    out = []
    for repo_type in repo_types:
        for repo_id in storage.repo_ids(repo_type):
            lowered = repo_id.lower()
            if not all(term in lowered for term in query.search):
                continue
            if query.author is not None and repo_id.split("/")[0].lower() != query.author.lower():
                continue
            try:
                repo = storage.repo(repo_type, repo_id)
                meta = repo.meta()
                if meta.get("private") and not show_private:
                    continue
                head = repo.resolve("main")
                out.append(Listed(repo, meta, head, repo.commit_record(head)))
            except (RepoNotFound, FileNotFoundError):
                continue  # deleted between the directory scan and this read: no longer listed
    return out


def list_page(storage: HubStorage, repo_types: Iterable[str], query: Query, *, show_private: bool,
              keep: Callable[[Listed], bool] | None = None) -> tuple[list[Listed], str | None]:
    """One page of repositories in the order of ``query``.

    Args:
        storage: the repositories.
        repo_types: ``models``, ``datasets`` and/or ``spaces``.
        query: filters, order, page size and the cursor of this page.
        show_private: include private repositories (the request carried an accepted token).
        keep: a further filter (e.g. on card tags), applied before paging.

    Returns:
        ``(items, next_cursor)``; ``next_cursor`` is None on the last page.

    Raises:
        BadRequest: an invalid cursor.
    """
    after = decode_cursor(query.cursor) if query.cursor else None
    items = [i for i in _candidates(storage, repo_types, query, show_private) if keep is None or keep(i)]
    items.sort(key=lambda i: _position(i, query.sort), reverse=query.descending)
    if after is not None:
        if query.descending:
            items = [i for i in items if _position(i, query.sort) < after]
        else:
            items = [i for i in items if _position(i, query.sort) > after]
    page = items[: query.limit]
    more = len(items) > query.limit
    return page, encode_cursor(_position(page[-1], query.sort)) if more else None
