"""Content-addressed blob storage and the hashes git and git-lfs use. No HTTP here.

Two namespaces live side by side, as on the Hub: regular files are addressed by their **git blob
sha1** (what the client compares against for regular files), LFS files by the **sha256** of their
content (the LFS oid). Every write goes to a temporary file in the same directory and is then
``os.replace``-d into place, so a reader never sees a half-written blob and a crash leaves at most a
stray temporary file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from hf_time.atomic import atomic_write_bytes as write_atomically

_CHUNK = 1 << 20


def git_blob_sha1(data: bytes) -> str:
    """Return the git object id of ``data`` stored as a blob (``sha1("blob <len>\\0" + data)``)."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the git-lfs pointer file that git would store in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, through a ``.tmp-*`` file the storage sweeps after a crash."""
    write_atomically(path, data, prefix=".tmp-")


def atomic_write_json(path: Path, obj) -> None:
    """Serialise ``obj`` as indented JSON and write it atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: Path):
    """Read a JSON file written by :func:`atomic_write_json`."""
    return json.loads(path.read_bytes())


class BlobStore:
    """Blobs of one repository, under ``<repo>/blobs/{sha1,sha256}/<2 hex>/<hex>``.

    Blobs are immutable and named by their hash, so writing one that already exists is a no-op and
    concurrent writers of the same content cannot corrupt each other.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, algo: str, oid: str) -> Path:
        return self.root / algo / oid[:2] / oid

    def regular_path(self, git_oid: str) -> Path:
        """Path of the regular blob with git oid ``git_oid`` (may not exist)."""
        return self._path("sha1", git_oid)

    def lfs_path(self, sha256: str) -> Path:
        """Path of the LFS object with oid ``sha256`` (may not exist)."""
        return self._path("sha256", sha256)

    def has_lfs(self, sha256: str) -> bool:
        """Whether the LFS object ``sha256`` has been uploaded to this repository."""
        return self.lfs_path(sha256).is_file()

    def put_regular(self, data: bytes) -> str:
        """Store ``data`` as a regular file; return its git blob sha1."""
        oid = git_blob_sha1(data)
        path = self.regular_path(oid)
        if not path.exists():
            atomic_write_bytes(path, data)
        return oid

    def put_lfs_stream(self, stream: BinaryIO, size: int, expected_sha256: str) -> None:
        """Copy exactly ``size`` bytes of ``stream`` into the LFS store, checking their sha256.

        The bytes are hashed while they are written to a temporary file, so an upload of any size
        uses constant memory.

        Raises:
            ValueError: the stream ended early or its sha256 differs from ``expected_sha256``.
        """
        target = self.lfs_path(expected_sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                remaining = size
                while remaining > 0:
                    chunk = stream.read(min(_CHUNK, remaining))
                    if not chunk:
                        raise ValueError(f"upload ended after {size - remaining} of {size} bytes")
                    digest.update(chunk)
                    f.write(chunk)
                    remaining -= len(chunk)
                f.flush()
                os.fsync(f.fileno())
            if digest.hexdigest() != expected_sha256:
                raise ValueError(f"sha256 mismatch: expected {expected_sha256}, got {digest.hexdigest()}")
            os.replace(tmp, target)
        except BaseException:
            _unlink_quietly(tmp)
            raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
