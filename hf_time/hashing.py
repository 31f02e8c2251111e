"""Content hashes of files: sha256 (LFS ids, lineage file hashes) and git blob ids (regular Hub files).

A file is hashed once per process for a given (path, inode, size, modification time): a snapshot's
weights are hashed when its lineage is written and compared with the Hub's before publishing, and
that second hash of hundreds of megabytes is a lookup. Standard library only.
"""

from __future__ import annotations

import functools
import hashlib
import os

_CHUNK = 1 << 20


def _identity(path: str | os.PathLike) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4096)
def _sha256(identity: tuple[str, int, int, int]) -> str:
    h = hashlib.sha256()
    with open(identity[0], "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex)."""
    return _sha256(_identity(path))


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git blob id of a file (what the Hub reports as ``oid`` for regular files)."""
    h = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()
