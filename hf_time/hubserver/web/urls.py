"""Paths of the web pages, built in one place so every link quotes names the same way.

Revisions go in one path segment, quoted with ``safe=""`` as the client does (``release/v1`` ->
``release%2Fv1``); file paths keep their slashes. Every path starts with ``/``: pages link within
the server that rendered them, whatever name or port it is reached by.
"""

from __future__ import annotations

from urllib.parse import quote

from ..views import URL_PREFIX


def repo(repo_type: str, repo_id: str) -> str:
    """``/ns/name``, ``/datasets/ns/name`` or ``/spaces/ns/name``."""
    return f"/{URL_PREFIX[repo_type]}{quote(repo_id)}"


def tree(repo_type: str, repo_id: str, rev: str, path: str = "") -> str:
    """The repo page at a revision, or one of its folders."""
    tail = f"/{quote(path)}" if path else ""
    return f"{repo(repo_type, repo_id)}/tree/{quote(rev, safe='')}{tail}"


def blob(repo_type: str, repo_id: str, rev: str, path: str) -> str:
    """The page of one file at a revision."""
    return f"{repo(repo_type, repo_id)}/blob/{quote(rev, safe='')}/{quote(path)}"


def resolve(repo_type: str, repo_id: str, rev: str, path: str) -> str:
    """The raw bytes of one file (the download route the client uses)."""
    return f"{repo(repo_type, repo_id)}/resolve/{quote(rev, safe='')}/{quote(path)}"


def commits(repo_type: str, repo_id: str, rev: str) -> str:
    """The history reachable from a revision."""
    return f"{repo(repo_type, repo_id)}/commits/{quote(rev, safe='')}"


def commit(repo_type: str, repo_id: str, oid: str) -> str:
    """One commit and what it changed."""
    return f"{repo(repo_type, repo_id)}/commit/{oid}"


def compare(repo_type: str, repo_id: str, rev_a: str | None = None, rev_b: str | None = None) -> str:
    """Two snapshots side by side (or the form to pick them, without revisions)."""
    if rev_a is None or rev_b is None:
        return f"{repo(repo_type, repo_id)}/compare"
    return f"{repo(repo_type, repo_id)}/compare/{quote(rev_a, safe='')}...{quote(rev_b, safe='')}"


def timeline(repo_type: str, repo_id: str) -> str:
    """The timeline page (``step-1 … step-t``)."""
    return f"{repo(repo_type, repo_id)}/timeline"


def hub_ref(repo_id: str, sha: str | None) -> str:
    """The tree page of a model input recorded in a lineage (``org/name@sha``)."""
    return tree("models", repo_id, sha) if sha else repo("models", repo_id)
