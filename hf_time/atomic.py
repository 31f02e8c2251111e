"""Atomic file-system writes: an output appears complete, or not at all.

Used for every folder hf_time writes (a merge, a snapshot, a node of the timeline cache) and for
small state files that several runs share (evaluation caches, timeline state). Standard library only,
so light modules (configs, timeline state) can use it without importing torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from hf_time.errors import OutputExistsError

OWNER_SUFFIX = ".owner"  # beside a temporary output: which process writes it (never inside the output)
LEGACY_STALE_S = 3600  # temporary folders without an owner file (older versions) count as stale after this


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _umask() -> int:
    """The process umask (read without changing it where the system allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the /proc read above)
    os.umask(mask)
    return mask


def sweep_stale(out: Path) -> list[Path]:
    """Remove temporary siblings of ``out`` left by writers that died (a crash, a ``kill -9``).

    A temporary folder is stale when the process named in its owner file is gone (same host), or, for a
    folder without one, when it is older than an hour. Folders of live writers are never touched.

    Returns:
        The folders removed.
    """
    removed = []
    host = socket.gethostname()
    for tmp in list(out.parent.glob(f".{out.name}.tmp-*")) + list(out.parent.glob(f".{out.name}.old-*")):
        if not tmp.is_dir():
            continue
        owner = tmp.with_name(tmp.name + OWNER_SUFFIX)
        try:
            owner_host, pid = owner.read_text().split()
            stale = owner_host == host and not _alive(int(pid))
        except (OSError, ValueError):
            try:
                stale = time.time() - tmp.stat().st_mtime > LEGACY_STALE_S
            except FileNotFoundError:  # another process removed it meanwhile
                continue
        if stale:
            shutil.rmtree(tmp, ignore_errors=True)
            owner.unlink(missing_ok=True)
            removed.append(tmp)
    for owner in out.parent.glob(f".{out.name}.tmp-*{OWNER_SUFFIX}"):  # an owner file whose folder is gone
        if not owner.with_name(owner.name.removesuffix(OWNER_SUFFIX)).exists():
            owner.unlink(missing_ok=True)
    return removed


def fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder entries themselves to disk."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        _fsync(path)
    _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_free(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """``out_dir`` as an absolute path, refused when it exists and ``overwrite`` is False.

    Raises:
        OutputExistsError: the folder exists (the message names it and both ways out).
    """
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists; choose another --out or pass --overwrite")
    return out


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir``; on success it is flushed to disk and renamed to ``out_dir``.

    On any error (or KeyboardInterrupt) the temporary directory is removed, so no partial output is
    ever visible at ``out_dir``; temporary siblings left by writers that died are removed first. With
    ``overwrite`` an existing ``out_dir`` is replaced only after the new one is complete.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False (checked before any work).
    """
    out = check_output_free(out_dir, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the output is a normal folder, as the umask says
    owner = tmp.with_name(tmp.name + OWNER_SUFFIX)
    owner.write_text(f"{socket.gethostname()} {os.getpid()}\n")
    try:
        yield tmp
        fsync_tree(tmp)  # the data is on disk before the name says it is complete
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
        _fsync(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        owner.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, prefix: str | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling, fsync and a rename: readers see all or nothing.

    Args:
        prefix: the temporary file's name prefix (default ``.<name>.``); a server sweeping its own
            leftovers by pattern passes its pattern's prefix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
