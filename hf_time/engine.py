"""The streaming merge loop: for each tensor name, gather inputs, call one tensor operation, write it.

The engine knows nothing about which method it runs — an executor hands it a :class:`StreamJob`
whose ``op`` maps the tensors of one name to the output tensor — and nothing about where
checkpoints come from: it reads tensors from *weight sources* (anything with ``infos`` and
``get(name)``, e.g. :class:`hf_time.io.Checkpoint`) and streams results into a
:class:`~hf_time.io.ShardedSafetensorsWriter`. Memory stays at (experts + 2) tensors of the largest
size, plus one prefetched set, whatever the model size.

Where the time goes on CPU, and what the loop does about it (figures: benchmarks/README.md):

* Safetensors checkpoints are not copied at all: the op reads the memory-mapped file in place
  (:meth:`~hf_time.io.Checkpoint.view`), a background thread maps the next tensor's pages while this
  one is merged, and each tensor's pages are released from the process once it is written.
* Elementwise methods (task arithmetic, linear) run on cache-sized slices of the flattened tensors,
  each slice converted, combined, checked and rounded into the output buffer while it is in cache,
  instead of whole-tensor passes through memory: the same bits, ~3x less time. The slices of each
  tensor are dealt out to one thread per core (:mod:`hf_time.merges.workers`).
* The output's sha256 (for the lineage) is computed by the writer's background thread as it writes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from hf_time.errors import NonFiniteError
from hf_time.io import Checkpoint, ShardedSafetensorsWriter, TensorInfo, plan_shards
from hf_time.merges import bitselect, selection, workers
from hf_time.merges.kernels import all_finite, kept_count
from hf_time.merges.registry import TensorContext
from hf_time.progress import enabled as bars_enabled
from hf_time.progress import label as bar_label

logger = logging.getLogger(__name__)

# Transformer block index in a parameter name: "model.layers.3.mlp...", "encoder.layer.3...", "h.3...".
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block|resblocks)\.(\d+)\.")


class WeightSource(Protocol):
    """Anything the engine can read tensors from (:class:`hf_time.io.Checkpoint` is the reference).

    ``read_into`` may return a view of ``buffer`` (valid until the buffer is reused) or, for sources
    that compute their tensors (e.g. base + LoRA ΔW), a fresh tensor of any floating dtype; the engine
    converts it to the compute dtype either way.
    """

    @property
    def infos(self) -> Mapping[str, TensorInfo]: ...

    def get(self, name: str) -> torch.Tensor: ...

    def read_into(self, name: str, buffer: torch.Tensor) -> torch.Tensor: ...


TensorOp = Callable[[torch.Tensor, Sequence[torch.Tensor], TensorContext], torch.Tensor]


@dataclass(frozen=True)
class StreamJob:
    """Everything the engine needs to stream one output, already validated by the caller.

    Attributes:
        op: ``op(base, inputs, ctx) -> tensor`` for one floating tensor name (pure; inputs read-only).
        weights: one weight per input (given to ``op`` in ``ctx.weights``).
        expert_params: per-input parameter overrides, one mapping per input (``ctx.expert_params``).
        device: where ``op`` runs ("cpu", "cuda", "cuda:1").
        compute_dtype: dtype inputs are converted to (float32: merging in bf16 loses bits).
        native_inputs: ``op`` accepts inputs in their stored dtype and converts them itself.
        elementwise: ``op`` is elementwise (see :class:`hf_time.merges.registry.DenseMethod`), so it
            may be run on slices of the flattened tensors.
        thresholds: per input, global magnitude thresholds (``ctx.magnitude_thresholds``), or None.
        label: what the progress bar says.
        names: how errors name the base and each input (default ``base``, ``input 1``...).
        allow_nonfinite: write NaN/Inf results instead of refusing them.
    """

    op: TensorOp
    weights: tuple[float, ...]
    expert_params: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    device: str = "cpu"
    compute_dtype: torch.dtype = torch.float32
    native_inputs: bool = False
    elementwise: bool = False
    thresholds: tuple[tuple[float, ...], ...] | None = None
    label: str = "merging"
    names: tuple[str, ...] = ()
    allow_nonfinite: bool = False


def layer_index(name: str) -> int | None:
    """Transformer block index of a parameter name, or None outside the blocks."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def output_infos(base: Mapping[str, TensorInfo], dtype: torch.dtype | None) -> list[TensorInfo]:
    """The output's tensor infos: the base's, with floating tensors cast to ``dtype`` if given."""
    from hf_time.io import _TORCH_TO_ST

    out = []
    for info in base.values():
        code = _TORCH_TO_ST[dtype] if (dtype is not None and info.is_float) else info.dtype
        out.append(TensorInfo(info.name, code, info.shape))
    return out


def magnitude_quantiles(
    base: WeightSource, experts: Sequence[WeightSource], fractions: Sequence[Sequence[float]], *, progress: bool = True
) -> tuple[tuple[float, ...], ...]:
    """Per expert, the |τ_i| values at ``fractions[i]`` over the whole model (τ_i = θ_i − θ_0).

    This is the "global threshold" of TIME's reference code: one cut-off per expert for all tensors.
    The model's |τ_i| is never gathered: it is ranked tensor by tensor, twice (a sample, then a
    counting pass: :func:`hf_time.merges.selection.thresholds_of_parts_each`), every expert in the same
    two passes (θ_0 read once for all), reading memory-mapped checkpoints in place, so the extra memory
    is one chunk whatever the model size. The values are those of ranking the concatenated float32
    |τ_i| with :func:`quantile_values`.
    """
    names = [n for n, i in base.infos.items() if i.is_float]
    total = sum(base.infos[n].numel for n in names)
    todo = [i for i, wanted in enumerate(fractions) if wanted]
    out: list[tuple[float, ...]] = [() for _ in fractions]
    if not todo:
        return tuple(out)
    ranked = [experts[i] for i in todo]
    bar = tqdm(desc=bar_label("global thresholds"), unit="tensor",
               disable=not (progress and bars_enabled()), leave=False)  # two passes, and small tensors skip one
    parts = [selection.Part(base.infos[n].numel, functools.partial(_task_vector_part, ranked, base, n, bar))
             for n in names]
    found = selection.thresholds_of_parts_each(parts, [_ranks(fractions[i], total) for i in todo], absolute=True)
    bar.close()
    for i, got in zip(todo, found):
        out[i] = tuple(t.value for t in got)
    return tuple(out)


@contextlib.contextmanager
def _task_vector_part(experts: Sequence[WeightSource], base: WeightSource, name: str,
                      bar: tqdm) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """θ_i of each expert and θ_0 of one tensor, read in place where mapped (pages released afterwards),
    in float32 for float64 checkpoints too, as the global thresholds have always been ranked."""
    def read(src: WeightSource) -> torch.Tensor:
        t = src.view(name) if isinstance(src, Checkpoint) and not src.is_pickle else src.get(name)
        return t.float() if t.dtype == torch.float64 else t

    try:
        yield [read(e) for e in experts], read(base)
    finally:
        for src in (*experts, base):
            if isinstance(src, Checkpoint):
                src.release(name)
        bar.update(1)


def quantile_values(magnitudes: torch.Tensor, fractions: Sequence[float]) -> tuple[float, ...]:
    """The |τ| values below which a fraction ``q`` of ``magnitudes`` lies, one per fraction.

    Uses the kernels' own counting rule (``kept_count``/``kth_largest``) so that a global threshold
    over one tensor equals that tensor's per-tensor threshold.
    """
    from hf_time.merges.kernels import kth_largest

    return tuple(kth_largest(magnitudes, m) for m in _ranks(fractions, magnitudes.numel()))


def _ranks(fractions: Sequence[float], n: int) -> list[int]:
    """For each fraction q, the rank (from the largest) of the |τ| below which q of ``n`` entries lie."""
    return [kept_count(round(1.0 - q, 12), n) for q in fractions]


class _Buffers:
    """Reusable buffers, sized once for the largest tensor: raw bytes per source that is not memory-mapped,
    compute tensors per source, and two output buffers. Reusing them avoids re-faulting fresh pages for
    every tensor, which on CPU costs as much as the merge arithmetic itself. Each source's raw buffer fits
    *its* largest stored tensor: a float32 expert of a bfloat16 base stores twice the bytes per tensor.

    On a GPU the copies are what a dense merge costs, so inputs cross in their stored dtype (half the bytes
    of float32 for bf16 checkpoints) from one pinned staging buffer per source and are converted on the
    device; results are cast to the output dtype on the device and come back into pinned output buffers.
    (A blocking ``copy_`` between a CPU and a CUDA tensor of different dtypes converts on the CPU and
    moves the wider dtype over pageable memory.)"""

    def __init__(self, sources: Sequence[WeightSource], mapped: Sequence[bool], infos: Sequence[TensorInfo],
                 compute_dtype: torch.dtype, device: torch.device, out_dtypes: Mapping[str, torch.dtype], *,
                 native: bool = False):
        max_numel = max((i.numel for i in infos if i.is_float), default=0)
        max_out = max((i.numel * torch.empty((), dtype=out_dtypes[i.name]).element_size() for i in infos), default=0)
        self.raw = [torch.empty(0 if m else max((i.nbytes() for i in src.infos.values()), default=0), dtype=torch.uint8)
                    for src, m in zip(sources, mapped)]
        # Methods that read the stored dtype directly need no compute copies of their inputs.
        self.compute = [] if native else [torch.empty(max_numel, dtype=compute_dtype, device=device) for _ in sources]
        pinned = device.type == "cuda"
        self.staging = [torch.empty(max((i.nbytes() for i in src.infos.values()), default=0), dtype=torch.uint8,
                                    pin_memory=True) for src in sources] if pinned else []
        # Two output buffers: tensor k is written (by the write thread) from one while k+1 is merged into the other.
        self.outs = [torch.empty(max_out, dtype=torch.uint8, pin_memory=pinned) for _ in range(2)]
        self.turn = 0
        self._reused = {t.untyped_storage().data_ptr() for t in (*self.raw, *self.compute) if t.numel()}

    def next_turn(self) -> None:
        """Switch output buffers (after handing the current one to the writer)."""
        self.turn ^= 1

    def reuses(self, t: torch.Tensor) -> bool:
        """Whether ``t`` lives in a raw or compute buffer, which the next tensor overwrites."""
        return t.device.type == "cpu" and t.untyped_storage().data_ptr() in self._reused

    def as_compute(self, j: int, raw: torch.Tensor) -> torch.Tensor:
        dst = self.compute[j][: raw.numel()].view(raw.shape)
        if dst.device.type != "cpu" and raw.device.type == "cpu":
            nbytes = raw.numel() * raw.element_size()
            if self.staging and nbytes <= self.staging[j].numel():  # computed sources may be wider than stored
                raw = self.staging[j][:nbytes].view(raw.dtype).view(raw.shape).copy_(raw)
            raw = raw.to(dst.device)  # blocking: the staging buffer is free again for the next tensor
        return dst.copy_(raw)

    def output(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """The output buffer as a tensor of ``shape`` and ``dtype``."""
        numel = math.prod(shape)
        out = self.outs[self.turn]
        return out[: numel * torch.empty((), dtype=dtype).element_size()].view(dtype).view(tuple(shape))

    def as_output(self, result: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``result`` in the output dtype, in a tensor nothing else will overwrite before it is written."""
        if result.dtype == dtype and result.device.type == "cpu" and not self.reuses(result):
            return result
        if result.device.type != "cpu":  # cast where it was computed: only the output's bytes come back
            result = result.to(dtype)
        return self.output(result.shape, dtype).copy_(result)


def run(
    base: WeightSource,
    sources: Sequence[WeightSource],
    job: StreamJob,
    writer: ShardedSafetensorsWriter,
    *,
    progress: bool = True,
) -> None:
    """Stream every tensor of ``base`` and ``sources`` through ``job.op`` into ``writer``.

    Non-floating tensors (integer buffers) are copied from the base. A background thread prepares
    tensor k+1 while tensor k is merged: it maps the pages of memory-mapped checkpoints, or reads the
    raw bytes of other sources into their buffers (then only once tensor k's inputs are consumed).
    On any error the writer is aborted (its caller discards the folder).
    """
    device = torch.device(job.device)
    names = list(base.infos)
    layers = {n: layer_index(n) for n in names}
    num_layers = max((i for i in layers.values() if i is not None), default=-1) + 1 or None
    out_dtypes = {i.name: i.torch_dtype for i in writer_infos(writer)}
    inputs_all = [base, *sources]
    mapped = [isinstance(src, Checkpoint) and not src.is_pickle for src in inputs_all]
    eager = all(mapped)  # no read buffers to wait for: prepare tensor k+1 as soon as tensor k is ready
    native = job.native_inputs and device.type == "cpu"
    sliced = native and job.elementwise
    bufs = _Buffers(inputs_all, mapped, list(base.infos.values()), job.compute_dtype, device, out_dtypes, native=native)

    def load(name: str) -> list[torch.Tensor]:
        srcs = inputs_all if base.infos[name].is_float else [base]
        return [src.view(name, populate=True) if mapped[j] else src.read_into(name, bufs.raw[j])
                for j, src in enumerate(srcs)]

    def release(name: str) -> None:
        for j, src in enumerate(inputs_all):
            if mapped[j]:
                src.release(name)

    writing = None  # the write in flight: at most one, from the output buffer not being merged into

    def write(name: str, tensor: torch.Tensor) -> None:
        nonlocal writing
        if writing is not None:
            writing.result()  # also raises the writer's error here
        if eager:  # nothing the next tensor reuses can be in ``tensor`` (mapped views stay valid)
            writing = writes.submit(writer.write, name, tensor)
            bufs.next_turn()
        else:
            writing = None
            writer.write(name, tensor)

    try:
        with ThreadPoolExecutor(max_workers=1) as reads, ThreadPoolExecutor(max_workers=1) as writes:
            pending = reads.submit(load, names[0]) if names else None
            bar = tqdm(total=len(names), desc=bar_label(job.label), unit="tensor", disable=not (progress and bars_enabled()))
            for i, name in enumerate(names):
                raws = pending.result()

                def read_next() -> None:  # once the raw buffers are free: overlaps the next read
                    nonlocal pending  # with this tensor's merge (converted inputs) or write (native ones)
                    if i + 1 < len(names):
                        pending = reads.submit(load, names[i + 1])

                if eager:
                    read_next()
                if len(raws) == 1:  # integer buffer: copied from the base as is
                    write(name, raws[0])
                else:
                    inputs = raws if native else [bufs.as_compute(j, r) for j, r in enumerate(raws)]
                    if not native:
                        release(name)
                    if not native and not eager:
                        read_next()
                    ctx = TensorContext(name=name, weights=job.weights, expert_params=job.expert_params,
                                        layer=layers[name], num_layers=num_layers, magnitude_thresholds=job.thresholds)
                    if sliced:
                        result = _run_sliced(job, inputs, ctx, bufs.output(inputs[0].shape, out_dtypes[name]))
                    else:
                        result = job.op(inputs[0], inputs[1:], ctx)
                        if not job.allow_nonfinite and not all_finite(result):
                            raise _nonfinite(name, inputs, job.names)
                        result = bufs.as_output(result, out_dtypes[name])
                    del inputs
                    write(name, result)
                    del result
                if not eager and (native or len(raws) == 1):
                    read_next()
                if native or len(raws) == 1:  # converted inputs were released once copied
                    release(name)
                del raws
                bar.update(1)
            if writing is not None:
                writing.result()
            bar.close()
    except BaseException:
        writer.abort()  # after the pools are shut down: no write is in flight any more
        raise


def _run_sliced(job: StreamJob, inputs: Sequence[torch.Tensor], ctx: TensorContext, out: torch.Tensor) -> torch.Tensor:
    """``job.op`` over cache-sized slices of the flattened inputs, each slice checked and rounded into ``out``.

    Only for elementwise ops, where slice k of the result is the op of slice k of the inputs: the
    output is bit-identical to one call on whole tensors, without whole-tensor float32 temporaries.
    The slices are dealt out to every core (:mod:`hf_time.merges.workers`); a non-finite result is
    reported with the inputs that hold NaN/Inf anywhere in the tensor, whichever slice found it.
    """
    flat = [t.reshape(-1) for t in inputs]
    dst = out.reshape(-1)

    def merge_slices(spans: Sequence[tuple[int, int]]) -> bool:
        for lo, hi in spans:
            part = [t[lo:hi] for t in flat]
            result = job.op(part[0], part[1:], ctx)
            if not job.allow_nonfinite and not all_finite(result):
                return False
            dst[lo:hi].copy_(result)
        return True

    if not all(workers.map_hands(list(bitselect.chunks(dst, bitselect.SLICE)), merge_slices)):
        raise _nonfinite(ctx.name, inputs, job.names)
    return out


def _nonfinite(name: str, inputs: Sequence[torch.Tensor], names: Sequence[str]) -> NonFiniteError:
    """The error for a non-finite result, naming the inputs that hold NaN/Inf in that tensor."""
    labels = list(names) or ["base"] + [f"input {i}" for i in range(1, len(inputs))]
    bad = [labels[j] if j < len(labels) else f"input {j}" for j, t in enumerate(inputs) if not all_finite(t)]
    where = f"; non-finite values in {', '.join(bad)}" if bad else " (the inputs are finite: the method overflowed)"
    return NonFiniteError(f"the merge of tensor {name!r} has NaN or Inf{where}. Nothing was written; fix or drop "
                          "that input, or pass --allow-nonfinite to write it anyway")


def writer_infos(writer: ShardedSafetensorsWriter) -> list[TensorInfo]:
    return [info for shard in writer.shards for info in shard]


def make_writer(folder: Path, base_infos: Mapping[str, TensorInfo], dtype: torch.dtype | None, max_shard_bytes: int,
                metadata: dict[str, str] | None = None, *, hashed: bool = True) -> ShardedSafetensorsWriter:
    """A writer planned for the base's tensors (in the base's storage order); ``hashed=False`` for scratch files."""
    return ShardedSafetensorsWriter(folder, plan_shards(output_infos(base_infos, dtype), max_shard_bytes), metadata,
                                    hashed=hashed)
