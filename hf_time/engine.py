"""The streaming merge loop: for each tensor name, gather inputs, call one tensor operation, write it.

The engine knows nothing about which method it runs — an executor hands it a :class:`StreamJob`
whose ``op`` maps the tensors of one name to the output tensor — and nothing about where
checkpoints come from: it reads tensors from *weight sources* (anything with ``infos`` and
``get(name)``, e.g. :class:`hf_time.io.Checkpoint`) and streams results into a
:class:`~hf_time.io.ShardedSafetensorsWriter`. Memory stays at (experts + 2) tensors of the largest
size, plus one prefetched set, whatever the model size.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from hf_time.errors import NonFiniteError
from hf_time.io import ShardedSafetensorsWriter, TensorInfo, plan_shards
from hf_time.merges.kernels import all_finite
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
    It holds |τ_i| of every floating tensor of one expert in memory at a time (float32), so it costs
    4 bytes per parameter; the default per-tensor scope costs nothing extra.
    """
    names = [n for n, i in base.infos.items() if i.is_float]
    out = []
    for idx, (expert, wanted) in enumerate(zip(experts, fractions)):
        if not wanted:
            out.append(())
            continue
        parts = [
            (expert.get(n).to(torch.float32) - base.get(n).to(torch.float32)).abs_().reshape(-1)
            for n in tqdm(names, desc=bar_label(f"global thresholds, expert {idx}"), disable=not (progress and bars_enabled()), leave=False)
        ]
        flat = torch.cat(parts) if parts else torch.zeros(1)
        del parts
        out.append(quantile_values(flat, wanted))
    return tuple(out)


def quantile_values(magnitudes: torch.Tensor, fractions: Sequence[float]) -> tuple[float, ...]:
    """The |τ| values below which a fraction ``q`` of ``magnitudes`` lies, one per fraction.

    Uses the kernels' own counting rule (``kept_count``/``kth_largest``) so that a global threshold
    over one tensor equals that tensor's per-tensor threshold.
    """
    from hf_time.merges.kernels import kept_count, kth_largest

    n = magnitudes.numel()
    return tuple(kth_largest(magnitudes, kept_count(round(1.0 - q, 12), n)) for q in fractions)


class _Buffers:
    """Reusable buffers, sized once for the largest tensor: raw bytes per source, compute tensors per
    source, and one output buffer. Reusing them avoids re-faulting fresh pages for every tensor, which
    on CPU costs as much as the merge arithmetic itself. Each source's raw buffer fits *its* largest
    stored tensor: a float32 expert of a bfloat16 base stores twice the bytes per tensor."""

    def __init__(self, sources: Sequence[WeightSource], infos: Sequence[TensorInfo], compute_dtype: torch.dtype,
                 device: torch.device, out_dtypes: Mapping[str, torch.dtype], *, native: bool = False):
        max_numel = max((i.numel for i in infos if i.is_float), default=0)
        max_out = max((i.numel * torch.empty((), dtype=out_dtypes[i.name]).element_size() for i in infos), default=0)
        self.raw = [torch.empty(max((i.nbytes() for i in src.infos.values()), default=0), dtype=torch.uint8)
                    for src in sources]
        # Methods that read the stored dtype directly need no compute copies of their inputs.
        self.compute = [] if native else [torch.empty(max_numel, dtype=compute_dtype, device=device) for _ in sources]
        self.out = torch.empty(max_out, dtype=torch.uint8)

    def as_compute(self, j: int, raw: torch.Tensor) -> torch.Tensor:
        return self.compute[j][: raw.numel()].view(raw.shape).copy_(raw)

    def as_output(self, result: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if result.dtype == dtype and result.device.type == "cpu":
            return result
        nbytes = result.numel() * torch.empty((), dtype=dtype).element_size()
        return self.out[:nbytes].view(dtype).view(result.shape).copy_(result)


def run(
    base: WeightSource,
    sources: Sequence[WeightSource],
    job: StreamJob,
    writer: ShardedSafetensorsWriter,
    *,
    progress: bool = True,
) -> None:
    """Stream every tensor of ``base`` and ``sources`` through ``job.op`` into ``writer``.

    Non-floating tensors (integer buffers) are copied from the base. A background thread reads the
    raw bytes of tensor k+1 while tensor k is merged (or, for native-input ops, while it is
    written); reads release the GIL.
    """
    device = torch.device(job.device)
    names = list(base.infos)
    layers = {n: layer_index(n) for n in names}
    num_layers = max((i for i in layers.values() if i is not None), default=-1) + 1 or None
    out_dtypes = {i.name: i.torch_dtype for i in writer_infos(writer)}
    inputs_all = [base, *sources]
    native = job.native_inputs and device.type == "cpu"
    bufs = _Buffers(inputs_all, list(base.infos.values()), job.compute_dtype, device, out_dtypes, native=native)

    def load(name: str) -> list[torch.Tensor]:
        if not base.infos[name].is_float:
            return [base.read_into(name, bufs.raw[0])]
        return [src.read_into(name, bufs.raw[j]) for j, src in enumerate(inputs_all)]

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, names[0]) if names else None
        bar = tqdm(total=len(names), desc=bar_label(job.label), unit="tensor", disable=not (progress and bars_enabled()))
        for i, name in enumerate(names):
            raws = pending.result()

            def read_next() -> None:  # once the raw buffers are free: overlaps the next read
                nonlocal pending  # with this tensor's merge (converted inputs) or write (native ones)
                if i + 1 < len(names):
                    pending = pool.submit(load, names[i + 1])

            if len(raws) == 1:  # integer buffer: copied from the base as is
                writer.write(name, raws[0])
                read_next()
            else:
                inputs = raws if native else [bufs.as_compute(j, r) for j, r in enumerate(raws)]
                if not native:
                    read_next()
                ctx = TensorContext(name=name, weights=job.weights, expert_params=job.expert_params,
                                    layer=layers[name], num_layers=num_layers, magnitude_thresholds=job.thresholds)
                result = job.op(inputs[0], inputs[1:], ctx)
                if not job.allow_nonfinite and not all_finite(result):
                    raise _nonfinite(name, inputs, job.names)
                del inputs
                if native:
                    read_next()
                writer.write(name, bufs.as_output(result, out_dtypes[name]))
                del result
            bar.update(1)
        bar.close()


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
                metadata: dict[str, str] | None = None) -> ShardedSafetensorsWriter:
    """A writer planned for the base's tensors (in the base's storage order)."""
    return ShardedSafetensorsWriter(folder, plan_shards(output_infos(base_infos, dtype), max_shard_bytes), metadata)
