"""Content hashes of files: sha256 (LFS ids, lineage file hashes) and git blob ids (regular Hub files).

A file is hashed once per process for a given identity (device, inode, size, modification time): a
snapshot's weights are hashed when its lineage is written and compared with the Hub's before
publishing, and that second hash of hundreds of megabytes is a lookup. The identity survives a
rename (an output folder is written under a temporary name and renamed into place), and a writer
that hashed the bytes while writing them records the digest with :func:`remember_sha256`, so the
file is never read back just to be hashed. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict

_CHUNK = 1 << 20
_MAX_ENTRIES = 4096

_Identity = tuple[int, int, int, int]
_known: OrderedDict[_Identity, str] = OrderedDict()
_lock = threading.Lock()


def _identity(path: str | os.PathLike) -> _Identity:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _lookup(identity: _Identity) -> str | None:
    with _lock:
        digest = _known.get(identity)
        if digest is not None:
            _known.move_to_end(identity)
        return digest


def _store(identity: _Identity, digest: str) -> None:
    with _lock:
        _known[identity] = digest
        _known.move_to_end(identity)
        while len(_known) > _MAX_ENTRIES:
            _known.popitem(last=False)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex)."""
    identity = _identity(path)
    digest = _lookup(identity)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        digest = h.hexdigest()
        _store(identity, digest)
    return digest


def known_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 of a file if this process has already computed or recorded it, without reading it."""
    return _lookup(_identity(path))


def remember_sha256(path: str | os.PathLike, digest: str) -> None:
    """Record the sha256 of a file its writer hashed while writing it (call after the file is closed)."""
    _store(_identity(path), digest)


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git blob id of a file (what the Hub reports as ``oid`` for regular files)."""
    h = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()
