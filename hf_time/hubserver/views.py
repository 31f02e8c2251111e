"""JSON shapes the Hub API returns, built from storage records. Pure functions, no I/O.

Field names follow huggingface.co exactly (camelCase), because huggingface_hub reads them by name;
see shared/design/hub-protocol.md §3.1 for which ones the client requires.
"""

from __future__ import annotations

from .commits import folder_oid, folders_of
from .errors import EntryNotFound

URL_PREFIX = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}


def repo_url(base_url: str, repo_type: str, repo_id: str) -> str:
    """Web URL of a repository, e.g. ``http://127.0.0.1:PORT/datasets/ns/name``."""
    return f"{base_url}/{URL_PREFIX[repo_type]}{repo_id}"


def file_entry(path: str, entry: dict, last_commit: tuple[str, dict] | None = None) -> dict:
    """A ``{"type": "file", ...}`` item of a tree or paths-info listing."""
    out = {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]}
    if entry.get("lfs"):
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointerSize"]}
    if last_commit is not None:
        out["lastCommit"] = last_commit_view(last_commit)
    return out


def folder_entry(tree: dict[str, dict], path: str, last_commit: tuple[str, dict] | None = None) -> dict:
    """A ``{"type": "directory", ...}`` item of a tree or paths-info listing."""
    out = {"type": "directory", "path": path, "oid": folder_oid(tree, path)}
    if last_commit is not None:
        out["lastCommit"] = last_commit_view(last_commit)
    return out


def last_commit_view(commit: tuple[str, dict]) -> dict:
    """The ``lastCommit`` object of an expanded listing."""
    oid, record = commit
    return {"id": oid, "title": record["title"], "date": record["date"]}


def tree_paths(tree: dict[str, dict], folder: str, recursive: bool) -> list[str]:
    """Paths listed by ``GET .../tree/{rev}/{folder}``: children (or all descendants), folders included.

    Raises:
        EntryNotFound: ``folder`` is not a folder of the tree.
    """
    folders = folders_of(tree)
    if folder and folder not in folders:
        raise EntryNotFound(f"{folder!r} does not exist or is not a folder")
    prefix = folder + "/" if folder else ""
    items = [p for p in (*tree, *folders) if p.startswith(prefix)]
    if not recursive:
        items = [p for p in items if "/" not in p[len(prefix):]]
    return sorted(items)


def path_item(tree: dict[str, dict], path: str, last_commit: tuple[str, dict] | None = None) -> dict | None:
    """The listing item for ``path`` (file or folder), or None when it is neither."""
    if path in tree:
        return file_entry(path, tree[path], last_commit)
    if path in folders_of(tree):
        return folder_entry(tree, path, last_commit)
    return None


def commit_item(oid: str, record: dict, formatted: bool) -> dict:
    """One element of ``GET .../commits/{rev}``."""
    out = {
        "id": oid,
        "title": record["title"],
        "message": record["message"],
        "date": record["date"],
        "authors": [{"user": a} for a in record["authors"]],
    }
    if formatted:  # the Hub renders markdown to HTML here; plain text is a faithful subset
        out["formatted"] = {"title": record["title"], "message": record["message"]}
    return out


def refs_view(refs: dict, include_prs: bool) -> dict:
    """``GET .../refs``: all three keys are required by the client, ``pullRequests`` on request."""
    def items(kind: str, prefix: str) -> list[dict]:
        return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": oid} for n, oid in sorted(refs[kind].items())]

    out = {"branches": items("branches", "refs/heads/"), "tags": items("tags", "refs/tags/"), "converts": []}
    if include_prs:
        out["pullRequests"] = items("prs", "refs/pr/")
    return out


def repo_info(repo_type: str, repo_id: str, meta: dict, oid: str, record: dict,
              card: dict | None, blobs: bool) -> dict:
    """``GET /api/{T}/{repo}[/revision/{rev}]``: ``id`` and ``sha`` are what the client needs most."""
    tree = record["tree"]
    siblings = []
    for path in sorted(tree):
        sibling: dict = {"rfilename": path}
        if blobs:
            entry = tree[path]
            sibling.update(size=entry["size"], blobId=entry["oid"])
            if entry.get("lfs"):
                sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": entry["pointerSize"]}
        siblings.append(sibling)
    author = repo_id.split("/")[0]
    out = {
        "id": repo_id,
        "author": author,
        "sha": oid,
        "lastModified": record["date"],
        "createdAt": meta["createdAt"],
        "private": meta.get("private", False),
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": _tags(card),
        "siblings": siblings,
        "usedStorage": sum(e["size"] for e in tree.values()),
    }
    if repo_type == "models":
        out["modelId"] = repo_id
    if card is not None:
        out["cardData"] = card
        for key, field in (("library_name", "library_name"), ("pipeline_tag", "pipeline_tag")):
            if isinstance(card.get(key), str):
                out[field] = card[key]
    return out


def _tags(card: dict | None) -> list[str]:
    """The Hub derives tags from the card; the explicit ``tags`` list plus the licence is enough here."""
    if not card:
        return []
    tags = card.get("tags") or []
    tags = [str(t) for t in (tags if isinstance(tags, list) else [tags])]
    if isinstance(card.get("license"), str):
        tags.append(f"license:{card['license']}")
    return tags


# Types a browser may render from /resolve. Anything else is served as bytes to download, and never
# as HTML: a repo file shown as a page would run its scripts with this server's origin.
_SAFE_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".svg": "image/svg+xml",
    ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
    ".json": "application/json", ".yaml": "text/plain; charset=utf-8", ".yml": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8", ".py": "text/plain; charset=utf-8",
}
# A file opened directly may still be an SVG with a script: this sandbox (no allow-scripts) stops it.
_FILE_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"


def content_type(path: str) -> str:
    """The ``Content-Type`` of a repo file: images and text for the browser, bytes otherwise."""
    dot = path.rfind(".")
    return _SAFE_TYPES.get(path[dot:].lower() if dot > path.rfind("/") else "", "application/octet-stream")


def resolve_headers(commit: str, entry: dict, path: str = "") -> dict[str, str]:
    """Headers of ``/resolve``: commit, ETag (blob id) and, for LFS, the linked etag and size.

    The content type lets a browser show a card's images; ``nosniff`` and the sandboxing CSP keep
    any file from being run as a page of this origin (the client itself ignores all three).
    """
    headers = {
        "X-Repo-Commit": commit,
        "ETag": f'"{entry["oid"]}"',
        "Accept-Ranges": "bytes",
        "Content-Type": content_type(path),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _FILE_CSP,
        "Cache-Control": "no-cache",
    }
    if entry.get("lfs"):
        headers["X-Linked-Etag"] = f'"{entry["sha256"]}"'
        headers["X-Linked-Size"] = str(entry["size"])
    return headers
