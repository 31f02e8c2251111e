"""Checkpoint I/O: lazy shard-aware reading and streaming sharded safetensors writing.

Reading never loads a whole model: tensors are read one at a time, either copied into a buffer the
caller reuses (positioned reads) or viewed in place in the memory-mapped shard, zero-copy, and
released as soon as they are merged, so resident memory stays at a few tensors. Writing is streamed
too: because every output tensor's name, dtype and shape are known before the merge starts (they
are the base's), the shard layout and each shard's safetensors header are written first and tensor
bytes are appended as they are produced. Peak memory is therefore one merged tensor plus its inputs,
never a shard. Files are written into a temporary sibling directory that is
renamed into place only when complete (:func:`atomic_output_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import queue
import shutil
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import torch

from hf_time.atomic import atomic_output_dir, atomic_write_text  # noqa: F401  (kept importable from here)
from hf_time.errors import (
    CorruptCheckpointError,
    MissingWeightsError,
    UnsafeCheckpointError,
)
from hf_time.hashing import remember_sha256

logger = logging.getLogger(__name__)

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"

_ST_TO_TORCH = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_TORCH_TO_ST = {v: k for k, v in _ST_TO_TORCH.items()}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_dtype(name: str | None) -> torch.dtype | None:
    """``"bfloat16"`` / ``"bf16"`` / ``"fp16"``... to a torch dtype (None stays None)."""
    if name is None:
        return None
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    key = aliases.get(name.lower(), name.lower())
    if key not in DTYPES:
        from hf_time.errors import ConfigError

        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[key]


@dataclass(frozen=True)
class TensorInfo:
    """Name, safetensors dtype code (``"BF16"``...) and shape of one stored tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return _ST_TO_TORCH[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in ("F64", "F32", "F16", "BF16")

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def nbytes(self, dtype: torch.dtype | None = None) -> int:
        dt = dtype or self.torch_dtype
        return self.numel * torch.empty((), dtype=dt).element_size()


MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes are in a safetensors file (validated against the file's size)."""

    info: TensorInfo
    start: int  # absolute offset in the file
    nbytes: int


def _corrupt(path: str | os.PathLike, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{os.fspath(path)} is not a readable safetensors file: {what}; re-download it or "
                                  "save the model again")


def read_safetensors_layout(path: str | os.PathLike) -> dict[str, StoredTensor]:
    """Every tensor of a ``.safetensors`` file and where its bytes lie, from the header only, checked.

    Tensors come in on-disk order, so reading them in this order is sequential.

    Raises:
        CorruptCheckpointError: a short file, an oversized or malformed header, an unknown dtype,
            offsets that disagree with the shape or lie outside the file (each named).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise _corrupt(path, f"{size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise _corrupt(path, f"header length {n} exceeds the file ({size} bytes) or the format's 100 MB limit")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _corrupt(path, f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"its header is a JSON {type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    out: dict[str, StoredTensor] = {}
    for name, h in header.items():
        try:
            dtype, shape, (begin, end) = h["dtype"], tuple(h["shape"]), h["data_offsets"]
            ok = (isinstance(dtype, str) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                  and all(isinstance(o, int) and not isinstance(o, bool) for o in (begin, end)))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise _corrupt(path, f"the entry of tensor {name!r} is malformed ({h!r:.120})")
        if dtype not in _ST_TO_TORCH:
            raise _corrupt(path, f"tensor {name!r} has dtype {dtype!r}, which hf_time cannot read")
        info = TensorInfo(name, dtype, shape)
        if not 0 <= begin <= end <= data_size or end - begin != info.nbytes():
            raise _corrupt(path, f"tensor {name!r} has data_offsets [{begin}, {end}] that do not fit its shape {list(shape)} "
                                 f"and dtype {dtype} within the {data_size} data bytes")
        out[name] = StoredTensor(info, 8 + n + begin, end - begin)
    return dict(sorted(out.items(), key=lambda kv: kv[1].start))


def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Tensor infos of one ``.safetensors`` file, from its JSON header only (no tensor data read)."""
    return {name: t.info for name, t in read_safetensors_layout(path).items()}


def _index_files(folder: Path, index_name: str) -> list[str]:
    """The shard files a ``*.index.json`` names, each checked to be a plain file name in ``folder``."""
    path = folder / index_name
    try:
        index = json.loads(path.read_text())
        files = sorted(set(index["weight_map"].values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CorruptCheckpointError(f"{path} is not a shard index ({type(e).__name__}: {e}); it needs a "
                                     "'weight_map' of tensor name -> shard file; re-download or save the model again") from None
    for f in files:
        # An index is data from whoever published the model: it must not point outside the folder.
        if not isinstance(f, str) or not f or "/" in f or "\\" in f or f in (".", "..") or "\x00" in f:
            raise CorruptCheckpointError(f"{path} names shard {f!r}, which is not a file name inside {folder}")
        if not (folder / f).is_file():
            raise CorruptCheckpointError(f"{path} names shard {f!r}, which is missing from {folder}")
    return files


def weight_files(folder: Path) -> tuple[list[str], bool]:
    """The weight files of a transformers folder, and whether they are pickles.

    Returns:
        (file names relative to ``folder`` in index order, is_pickle)

    Raises:
        MissingWeightsError: no safetensors and no pickle weights in the folder.
        CorruptCheckpointError: a shard index that is not JSON, or names files outside the folder.
    """
    if (folder / SAFE_INDEX).is_file():
        return _index_files(folder, SAFE_INDEX), False
    if (folder / SAFE_SINGLE).is_file():
        return [SAFE_SINGLE], False
    others = sorted(p.name for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_"))
    if others:
        return others, False
    if (folder / PICKLE_INDEX).is_file():
        return _index_files(folder, PICKLE_INDEX), True
    if (folder / PICKLE_SINGLE).is_file():
        return [PICKLE_SINGLE], True
    raise MissingWeightsError(
        f"no model weights in {folder}: expected {SAFE_SINGLE}, {SAFE_INDEX} or *.safetensors"
    )


# madvise(MADV_POPULATE_READ) maps pages without touching them (Linux >= 5.14; Python's mmap module
# has no constant for it). Older kernels answer EINVAL and _advise falls back to WILLNEED.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else None)


def _advise(m: mmap.mmap, start: int, length: int, advice: int | None) -> None:
    """madvise over the pages covering [start, start + length) of ``m``; advice is only advice (a
    platform without it, such as Windows, simply keeps the pages mapped)."""
    madvise = getattr(m, "madvise", None)
    if advice is None or madvise is None or length <= 0:
        return
    first = start - start % mmap.PAGESIZE
    span = min(start + length, len(m)) - first
    fallback = getattr(mmap, "MADV_WILLNEED", None) if advice == _MADV_POPULATE_READ else None
    for option in (advice, fallback):
        if option is None:
            return
        try:
            madvise(option, first, span)
            return
        except (OSError, ValueError):
            continue


class Checkpoint:
    """Lazy, shard-aware read access to the weights of one model folder.

    Safetensors tensors are read one at a time, either with positioned reads (``preadv``) straight
    into a buffer, a fresh one (:meth:`get`) or one the caller reuses (:meth:`read_into`), or viewed
    in place, zero-copy, in the memory-mapped file (:meth:`view`, used by the merge engine: no copy of
    the inputs at all). A viewed tensor's pages count as resident memory until :meth:`release` drops
    them from this process (they stay in the page cache), so a merge's resident memory is the tensors
    in flight, not the models it reads.
    Pickle checkpoints are refused unless ``allow_pickle`` (then loaded whole with
    ``torch.load(weights_only=True)``).

    Args:
        folder: a transformers model folder.
        allow_pickle: permit ``pytorch_model.bin`` checkpoints.
    """

    def __init__(self, folder: str | os.PathLike, *, allow_pickle: bool = False):
        self.folder = Path(folder)
        files, is_pickle = weight_files(self.folder)
        if is_pickle and not allow_pickle:
            raise UnsafeCheckpointError(
                f"{self.folder} only has pickle weights ({files[0]}); pickle can run arbitrary code. "
                "Convert it to safetensors, or pass --allow-pickle (loads with torch.load(weights_only=True))"
            )
        self.is_pickle = is_pickle
        self._infos: dict[str, TensorInfo] = {}
        self._where: dict[str, tuple[str, int, int]] = {}  # name -> (file, absolute start, nbytes)
        self._fds: dict[str, int] = {}
        self._maps: dict[str, mmap.mmap] = {}
        self._pickled: dict[str, torch.Tensor] = {}
        for name in files:
            if is_pickle:
                state = torch.load(self.folder / name, map_location="cpu", weights_only=True)
                for k, t in state.items():
                    self._pickled[k] = t
                    self._infos[k] = TensorInfo(k, _TORCH_TO_ST[t.dtype], tuple(t.shape))
            else:
                for k, stored in read_safetensors_layout(self.folder / name).items():
                    self._infos[k] = stored.info
                    self._where[k] = (name, stored.start, stored.nbytes)

    @property
    def infos(self) -> dict[str, TensorInfo]:
        """Tensor infos by name, in storage order."""
        return self._infos

    def names(self) -> list[str]:
        return list(self._infos)

    def nbytes(self, name: str) -> int:
        """Stored size of one tensor in bytes."""
        return self._infos[name].nbytes()

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor into a fresh CPU tensor (the caller may modify it)."""
        if self.is_pickle:
            return self._pickled[name].clone()
        return self.read_into(name, torch.empty(self.nbytes(name), dtype=torch.uint8)).clone()

    def read_into(self, name: str, buffer: torch.Tensor) -> torch.Tensor:
        """Read one tensor's bytes into ``buffer`` (a uint8 CPU tensor at least that large).

        Returns a view of ``buffer`` with the tensor's dtype and shape; it is valid until the buffer
        is reused.
        """
        info = self._infos[name]
        if self.is_pickle:
            src = self._pickled[name].contiguous().reshape(-1).view(torch.uint8)
            buffer[: src.numel()].copy_(src)
            return buffer[: src.numel()].view(info.torch_dtype).view(info.shape)
        file, start, n = self._where[name]
        fd = self._fd(file)
        if buffer.numel() < n:  # a caller's bug, not the file's: say so rather than blame the file
            raise ValueError(f"buffer of {buffer.numel()} bytes is too small for tensor {name!r} ({n} bytes)")
        view = memoryview(buffer[:n].numpy())
        done = 0
        while done < n:  # one preadv reads at most ~2 GiB on Linux
            got = os.preadv(fd, [view[done:]], start + done)
            if got <= 0:
                raise self._truncated(file, name)
            done += got
        return buffer[:n].view(info.torch_dtype).view(info.shape)

    def view(self, name: str, *, populate: bool = False) -> torch.Tensor:
        """One stored tensor, viewed in place in the memory-mapped file (no copy; do not modify it).

        The mapping is private (copy-on-write), so even a buggy writer to the view can never change the
        file. Tensors whose bytes are not aligned to their element size (possible only after an odd-sized
        integer tensor) and pickle checkpoints are copied instead.

        Args:
            populate: map the tensor's pages now (from this thread) rather than on first touch; a
                prefetching thread uses it so that the merge itself takes no page faults.

        Raises:
            CorruptCheckpointError: the file is now shorter than the tensor's bytes (it was truncated
                after it was opened): touching them would kill the process with SIGBUS.
        """
        info = self._infos[name]
        if self.is_pickle:
            return self._pickled[name]
        file, start, n = self._where[name]
        if n == 0 or start % max(1, info.torch_dtype.itemsize):
            return self.get(name)
        m = self._map(file)
        if start + n > len(m) or os.fstat(self._fd(file)).st_size < start + n:
            raise self._truncated(file, name)
        if populate:
            _advise(m, start, n, _MADV_POPULATE_READ)
        raw = torch.frombuffer(m, dtype=torch.uint8, count=n, offset=start)
        return raw.view(info.torch_dtype).view(info.shape)

    def release(self, name: str) -> None:
        """Drop the pages of a viewed tensor from this process's resident memory (no-op otherwise).

        Views stay valid: touching the bytes again maps them again from the page cache. Pages shared
        with a neighbouring tensor are dropped too and simply mapped again when that one is read.
        """
        where = self._where.get(name)
        m = self._maps.get(where[0]) if where is not None else None
        if m is not None:
            _advise(m, where[1], where[2], getattr(mmap, "MADV_DONTNEED", None))

    def _fd(self, file: str) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(self.folder / file, os.O_RDONLY)
        return fd

    def _map(self, file: str) -> mmap.mmap:
        m = self._maps.get(file)
        if m is None:
            m = self._maps[file] = mmap.mmap(self._fd(file), 0, access=mmap.ACCESS_COPY)
        return m

    def _truncated(self, file: str, name: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{self.folder / file} ends before the bytes of tensor {name!r}: the file was "
                                      "truncated after it was opened; re-download it")

    def close(self) -> None:
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a view is still alive: the mapping goes when the last view does
                pass
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------------
# Writing


def parse_size(size: int | str) -> int:
    """``"2GB"`` / ``"500MB"`` / int bytes to bytes (decimal units, as transformers uses)."""
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def plan_shards(infos: Sequence[TensorInfo], max_shard_bytes: int) -> list[list[TensorInfo]]:
    """Split tensors (in order) into shards of at most ``max_shard_bytes`` (a larger tensor gets its own)."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for info in infos:
        n = info.nbytes()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += n
    return [s for s in shards if s] or [[]]


def _header_bytes(shard: Sequence[TensorInfo], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for info in shard:
        n = info.nbytes()
        header[info.name] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment with spaces
    return struct.pack("<Q", len(raw)) + raw


SYNC_EVERY = 256 << 20  # bytes between background fdatasyncs of a shard being written (0: none)
_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class _TrailingHasher:
    """The sha256 of a file being appended to, computed by a background thread that reads the written
    bytes back from the page cache: hashing costs the writer a queue put, not a pass over the bytes
    on its own thread, and nothing has to re-read the file afterwards (:func:`remember_sha256`).
    """

    _BLOCK = 8 << 20

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._hash = hashlib.sha256()
        self._ends: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sha256 {path.name}", daemon=True)
        self._thread.start()

    def advance(self, end: int) -> None:
        """The file's first ``end`` bytes are written (and flushed to the OS)."""
        self._ends.put(end)

    def finish(self, end: int) -> str:
        """Hash up to ``end`` (the final size), stop the thread and return the hex digest."""
        self._ends.put(end)
        self._ends.put(None)
        self._thread.join()
        if self._error is not None:
            raise OSError(f"could not read back {self.path} to hash it: {self._error}") from self._error
        return self._hash.hexdigest()

    def abort(self) -> None:
        """Stop without a digest (the write failed); safe to call more than once."""
        self._ends.put(None)

    def _run(self) -> None:
        pos = synced = 0
        try:
            while (end := self._ends.get()) is not None:
                while pos < end:
                    block = os.pread(self._fd, min(end - pos, self._BLOCK), pos)
                    if not block:
                        raise OSError(f"the file ends at byte {pos}, before {end}")
                    self._hash.update(block)  # releases the GIL
                    pos += len(block)
                    if SYNC_EVERY and pos - synced >= SYNC_EVERY:
                        _fdatasync(self._fd)  # on this thread: the final fsync finds little left to write
                        synced = pos
        except Exception as e:  # noqa: BLE001  (re-raised by finish(), on the writer's thread)
            self._error = e
        finally:
            os.close(self._fd)


class ShardedSafetensorsWriter:
    """Write tensors into pre-planned safetensors shards, streaming each tensor's bytes to disk.

    Tensors must be written in plan order, each with exactly the planned dtype and shape. With one
    shard the file is ``model.safetensors``; otherwise ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json``, as transformers writes them. Each shard's sha256 is computed
    while it is written (by a background thread, which also syncs it to disk as it goes) and is in
    :attr:`sha256` after :meth:`close`. A scratch file (``hashed=False``: read back once, then deleted)
    gets neither the hash nor the syncs.
    """

    def __init__(self, folder: Path, shards: list[list[TensorInfo]], metadata: dict[str, str] | None = None, *,
                 hashed: bool = True):
        self.hashed = hashed
        self.folder = Path(folder)
        self.shards = shards
        self.metadata = {"format": "pt", **(metadata or {})}
        n = len(shards)
        self.file_names = [SAFE_SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.sha256: dict[str, str] = {}
        self._queue: Iterator[tuple[int, TensorInfo]] = ((i, info) for i, shard in enumerate(shards) for info in shard)
        self._open_shard = -1
        self._fh = None
        self._hasher: _TrailingHasher | None = None
        self._size = 0

    def _switch_to(self, shard_idx: int) -> None:
        self._finish_shard()
        path = self.folder / self.file_names[shard_idx]
        self._fh = open(path, "wb")
        self._hasher = _TrailingHasher(path) if self.hashed else None
        self._size = 0
        self._open_shard = shard_idx
        self._append(_header_bytes(self.shards[shard_idx], self.metadata))

    def _append(self, data) -> None:
        self._fh.write(data)
        self._size += memoryview(data).nbytes
        if self._hasher is not None:
            self._fh.flush()  # the hasher reads the file through the OS
            self._hasher.advance(self._size)

    def _finish_shard(self) -> None:
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        hasher, self._hasher = self._hasher, None
        if hasher is None:  # a scratch file
            return
        digest = hasher.finish(self._size)
        name = self.file_names[self._open_shard]
        self.sha256[name] = digest
        remember_sha256(hasher.path, digest)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor. Raises ValueError if it is not the one the plan expects."""
        try:
            shard_idx, info = next(self._queue)
        except StopIteration:
            raise ValueError(f"unexpected tensor {name!r}: all planned tensors were written") from None
        if info.name != name or tuple(tensor.shape) != info.shape or tensor.dtype != info.torch_dtype:
            raise ValueError(
                f"tensor {name!r} {tuple(tensor.shape)} {tensor.dtype} does not match the plan "
                f"({info.name!r} {info.shape} {info.torch_dtype})"
            )
        if shard_idx != self._open_shard:
            self._switch_to(shard_idx)
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._append(memoryview(data.numpy()))

    def close(self) -> list[str]:
        """Finish the last shard and write the index. Returns the written file names."""
        leftover = next(self._queue, None)
        if leftover is not None:
            raise ValueError(f"merge ended before tensor {leftover[1].name!r} was written")
        if self._open_shard == -1:  # no tensors at all: still write a valid (empty) file
            self._switch_to(0)
        self._finish_shard()
        files = list(self.file_names)
        if len(self.shards) > 1:
            total = sum(i.nbytes() for s in self.shards for i in s)
            weight_map = {info.name: self.file_names[i] for i, s in enumerate(self.shards) for info in s}
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
            files.append(SAFE_INDEX)
        return files

    def abort(self) -> None:
        """Give up after a failed merge: close the open shard and stop its hasher (no digest)."""
        if self._hasher is not None:
            self._hasher.abort()
            self._hasher = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __del__(self) -> None:  # a writer dropped without close() or abort() (an error path) stops its thread
        with contextlib.suppress(Exception):
            self.abort()


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write one safetensors file with byte-for-byte reproducible content.

    ``safetensors.torch.save_file`` serializes ``__metadata__`` from a hash map, so two runs can
    order its keys differently; content hashes (idempotent publishing, resume) need identical bytes.
    Tensors are stored in the given order, metadata keys sorted.
    """
    infos = [TensorInfo(k, _TORCH_TO_ST[t.dtype], tuple(t.shape)) for k, t in tensors.items()]
    meta = {"format": "pt", **dict(sorted((metadata or {}).items()))}
    with open(path, "wb") as f:
        f.write(_header_bytes(infos, meta))
        for t in tensors.values():
            f.write(memoryview(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()))


def copy_files(src: Path, dst: Path, names: Iterable[str]) -> list[str]:
    """Copy the named files that exist in ``src`` to ``dst``; returns the ones copied."""
    copied = []
    for name in names:
        p = src / name
        if p.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst / name)
            copied.append(name)
    return copied
