"""Checkpoint I/O: lazy shard-aware reading and streaming sharded safetensors writing.

Reading never loads a whole model: tensors are read one at a time from memory-mapped safetensors
shards. Writing is streamed too: because every output tensor's name, dtype and shape are known before
the merge starts (they are the base's), the shard layout and each shard's safetensors header are
written first and tensor bytes are appended as they are produced. Peak memory is therefore one merged
tensor plus its inputs, never a shard. Files are written into a temporary sibling directory that is
renamed into place only when complete (:func:`atomic_output_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import torch

from hf_time.atomic import atomic_output_dir, atomic_write_text  # noqa: F401  (kept importable from here)
from hf_time.errors import CorruptCheckpointError, MissingWeightsError, UnsafeCheckpointError

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


class Checkpoint:
    """Lazy, shard-aware read access to the weights of one model folder.

    Safetensors tensors are read one at a time with positioned reads (``preadv``) straight into a
    buffer, either a fresh one (:meth:`get`) or one the caller reuses (:meth:`read_into`). Files are
    not memory-mapped, so a merge's resident memory is its buffers, not the models it reads.
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
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(self.folder / file, os.O_RDONLY)
        if buffer.numel() < n:  # a caller's bug, not the file's: say so rather than blame the file
            raise ValueError(f"buffer of {buffer.numel()} bytes is too small for tensor {name!r} ({n} bytes)")
        view = memoryview(buffer[:n].numpy())
        done = 0
        while done < n:  # one preadv reads at most ~2 GiB on Linux
            got = os.preadv(fd, [view[done:]], start + done)
            if got <= 0:
                raise CorruptCheckpointError(f"{self.folder / file} ends before the bytes of tensor {name!r}: the file was "
                                             "truncated after it was opened; re-download it")
            done += got
        return buffer[:n].view(info.torch_dtype).view(info.shape)

    def close(self) -> None:
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


class ShardedSafetensorsWriter:
    """Write tensors into pre-planned safetensors shards, streaming each tensor's bytes to disk.

    Tensors must be written in plan order, each with exactly the planned dtype and shape. With one
    shard the file is ``model.safetensors``; otherwise ``model-0000i-of-0000N.safetensors`` plus
    ``model.safetensors.index.json``, as transformers writes them.
    """

    def __init__(self, folder: Path, shards: list[list[TensorInfo]], metadata: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.shards = shards
        self.metadata = {"format": "pt", **(metadata or {})}
        n = len(shards)
        self.file_names = [SAFE_SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._queue: Iterator[tuple[int, TensorInfo]] = ((i, info) for i, shard in enumerate(shards) for info in shard)
        self._open_shard = -1
        self._fh = None

    def _switch_to(self, shard_idx: int) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = open(self.folder / self.file_names[shard_idx], "wb")
        self._fh.write(_header_bytes(self.shards[shard_idx], self.metadata))
        self._open_shard = shard_idx

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
        self._fh.write(memoryview(data.numpy()))

    def close(self) -> list[str]:
        """Finish the last shard and write the index. Returns the written file names."""
        leftover = next(self._queue, None)
        if leftover is not None:
            raise ValueError(f"merge ended before tensor {leftover[1].name!r} was written")
        if self._open_shard == -1:  # no tensors at all: still write a valid (empty) file
            self._switch_to(0)
        self._fh.close()
        files = list(self.file_names)
        if len(self.shards) > 1:
            total = sum(i.nbytes() for s in self.shards for i in s)
            weight_map = {info.name: self.file_names[i] for i, s in enumerate(self.shards) for info in s}
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
            files.append(SAFE_INDEX)
        return files


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
