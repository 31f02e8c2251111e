"""Commit records and the tree operations a commit applies. No HTTP, no locking.

A tree is a flat mapping ``path -> entry``; folders are implied by the paths. An entry is::

    {"oid": <git sha1>, "size": <bytes>, "sha256": <hex>}                      # regular file
    {"oid": <git sha1 of the pointer>, "size": ..., "sha256": ..., "lfs": True,
     "pointerSize": <bytes>}                                                  # LFS file

exactly the identities the Hub reports (``oid`` in tree listings, ``lfs.oid`` for LFS). A commit
record holds its parent, metadata and the **full** tree, so reading any revision is one file read.
Its oid is the sha1 of its canonical JSON, which makes records immutable and self-verifying.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath

from .blobs import BlobStore, git_blob_sha1, lfs_pointer
from .errors import BadRequest, EntryNotFound


@dataclass(frozen=True)
class AddFile:
    """Add or replace a regular file whose content came inline with the commit."""

    path: str
    content: bytes


@dataclass(frozen=True)
class AddStoredFile:
    """Add or replace a regular file already written to the blob store; ``entry`` is its tree entry.

    The HTTP layer stores each inline file as its line of the commit arrives (bounded memory).
    """

    path: str
    entry: dict


@dataclass(frozen=True)
class AddLfsFile:
    """Add or replace a file whose content was uploaded to the LFS store beforehand."""

    path: str
    sha256: str
    size: int | None = None  # the client omits it for copies; the stored object knows it


@dataclass(frozen=True)
class DeleteFile:
    """Delete one file; it must exist."""

    path: str


@dataclass(frozen=True)
class DeleteFolder:
    """Delete every file under a folder; the folder must hold at least one file."""

    path: str


Operation = AddFile | AddStoredFile | AddLfsFile | DeleteFile | DeleteFolder


def now_iso() -> str:
    """The current UTC time in the only shape huggingface_hub parses (``...T..:..:..mmmZ``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def check_path(path: str) -> str:
    """Validate a path inside a repository and return it normalised (no leading ``/``).

    Raises:
        BadRequest: the path is empty, escapes the repository or touches ``.git``.
    """
    clean = path.strip("/")
    parts = clean.split("/")
    if not clean or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git" or "\0" in clean:
        raise BadRequest(f"Invalid path in repository: {path!r}")
    return clean


def regular_entry(oid: str, content: bytes) -> dict:
    """Tree entry of a regular file stored under git oid ``oid``."""
    return {"oid": oid, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def lfs_entry(sha256: str, size: int) -> dict:
    """Tree entry of an LFS file: git sees the pointer, the Hub reports the object too."""
    pointer = lfs_pointer(sha256, size)
    return {"oid": git_blob_sha1(pointer), "size": size, "sha256": sha256, "lfs": True,
            "pointerSize": len(pointer)}


def apply_operations(tree: dict[str, dict], ops: list[Operation], blobs: BlobStore) -> dict[str, dict]:
    """Return the tree obtained by applying ``ops`` in order to ``tree`` (which is not modified).

    Regular contents are written to ``blobs`` as they are met; LFS objects must already be there.

    Raises:
        EntryNotFound: a deleted file or folder does not exist ("A file with this name doesn't
            exist" is the message the client looks for).
        BadRequest: a path is invalid, an LFS object was never uploaded, or a file would shadow a
            folder (or the reverse).
    """
    new = dict(tree)
    for op in ops:
        path = check_path(op.path)
        if isinstance(op, AddFile):
            new[path] = regular_entry(blobs.put_regular(op.content), op.content)
        elif isinstance(op, AddStoredFile):
            new[path] = dict(op.entry)
        elif isinstance(op, AddLfsFile):
            stored = blobs.lfs_path(op.sha256)
            if not stored.is_file():
                raise BadRequest(f"LFS object {op.sha256} for {path!r} was never uploaded")
            size = stored.stat().st_size
            if op.size is not None and op.size != size:
                raise BadRequest(f"LFS object {op.sha256} has {size} bytes, not {op.size}")
            new[path] = lfs_entry(op.sha256, size)
        elif isinstance(op, DeleteFile):
            if new.pop(path, None) is None:
                raise EntryNotFound(f"A file with this name doesn't exist: {path!r}")
        elif isinstance(op, DeleteFolder):
            doomed = [p for p in new if p.startswith(path + "/")]
            if not doomed:
                raise EntryNotFound(f"A file with this name doesn't exist: folder {path!r}")
            for p in doomed:
                del new[p]
        else:  # pragma: no cover - the HTTP layer only builds the kinds above
            raise BadRequest(f"Unknown operation {op!r}")
    _check_no_file_folder_clash(new)
    return new


def _check_no_file_folder_clash(tree: dict[str, dict]) -> None:
    """A path cannot be both a file and a folder (git could not represent that tree)."""
    for path in tree:
        for parent in PurePosixPath(path).parents:
            if str(parent) != "." and str(parent) in tree:
                raise BadRequest(f"{str(parent)!r} is a file, so {path!r} cannot be added below it")


def make_commit(parent: str | None, tree: dict[str, dict], title: str, message: str, author: str) -> tuple[str, dict]:
    """Build an immutable commit record. Returns ``(oid, record)``; oid = sha1 of the canonical JSON."""
    record = {
        "parent": parent,
        "title": title,
        "message": message,
        "date": now_iso(),
        "authors": [author],
        "tree": tree,
    }
    oid = hashlib.sha1(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return oid, record


def folders_of(tree: dict[str, dict]) -> set[str]:
    """Every folder implied by the file paths of ``tree``."""
    out: set[str] = set()
    for path in tree:
        out.update(str(p) for p in PurePosixPath(path).parents if str(p) != ".")
    return out


def folder_oid(tree: dict[str, dict], folder: str) -> str:
    """A stable id for a folder: sha1 over the paths and oids of the files below it."""
    prefix = folder + "/"
    h = hashlib.sha1(b"tree\0")
    for path in sorted(p for p in tree if p.startswith(prefix)):
        h.update(f"{path[len(prefix):]}\0{tree[path]['oid']}\n".encode())
    return h.hexdigest()
