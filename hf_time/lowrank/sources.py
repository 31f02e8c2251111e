"""LoRA experts as weight sources for the dense engine, and opening adapter references.

A LoRA expert enters a dense merge as θ_0 + ΔW: :class:`LoraExpertSource` reads a base tensor with
the base checkpoint's ``read_into`` and, for an adapted module, returns a fresh float32 tensor
base + scaling·B·A (transposed where the base stores the weight transposed). Its task vector in the
engine is therefore exactly ΔW, so every dense method takes LoRA and full experts mixed.

:func:`open_lora_experts` recognises adapter references (``adapter_config.json`` among the files),
checks their config before downloading their (small) weights, and :func:`check_adapters` checks
them against the base from the base's safetensors headers, before any base weight is downloaded.

Base check policy: when the merge base is a Hub repo and an adapter's ``base_model_name_or_path`` is
a Hub id, the two must name the same repo. Adapters trained from a local path, or merged onto a
local base, are checked by module names and shapes only (local training paths are common). Adapters
naming two different Hub bases are refused in any case.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import torch

from hf_time.errors import (
    IncompatibleExpertsError, InvalidReferenceError, MissingAdapterConfigError, RepoNotFoundError,
)
from hf_time.io import TensorInfo
from hf_time.lowrank.adapters import (
    ADAPTER_CONFIG, ADAPTER_PICKLE, ADAPTER_WEIGHTS, LoraAdapter, check_adapter_config, map_to_base,
)
from hf_time.merges.factors import LoraModule
from hf_time.refs import ResolvedRef, parse_ref

logger = logging.getLogger(__name__)


class LoraExpertSource:
    """A weight source presenting base + ΔW for one LoRA expert (see :class:`hf_time.engine.WeightSource`).

    Args:
        base: the base model's source (a :class:`hf_time.io.Checkpoint`).
        factors: base tensor name -> a callable returning that module's :class:`LoraModule`.
        transposed: base tensor names whose weight is stored as ΔWᵀ.
    """

    def __init__(self, base, factors: Mapping[str, Callable[[], LoraModule]], transposed: frozenset[str] = frozenset()):
        self.base = base
        self._factors = dict(factors)
        self._transposed = transposed

    @classmethod
    def from_adapter(cls, base, adapter: LoraAdapter, targets: Mapping[str, str]) -> "LoraExpertSource":
        """The source of ``adapter`` over ``base``; ``targets`` maps module path -> base tensor name."""
        factors = {t: (lambda p=p: adapter.factors(p)) for p, t in targets.items()}
        transposed = frozenset(t for p, t in targets.items() if adapter.modules[p].transposed)
        return cls(base, factors, transposed)

    @property
    def infos(self) -> Mapping[str, TensorInfo]:
        return self.base.infos

    def delta(self, name: str) -> torch.Tensor | None:
        """ΔW of tensor ``name`` in the base's orientation (fresh float32), or None if not adapted."""
        make = self._factors.get(name)
        if make is None:
            return None
        delta = make().delta(torch.float32)
        return delta.T.contiguous() if name in self._transposed else delta

    def get(self, name: str) -> torch.Tensor:
        base = self.base.get(name)
        delta = self.delta(name)
        return base if delta is None else delta.add_(base)

    def read_into(self, name: str, buffer: torch.Tensor) -> torch.Tensor:
        """The base tensor (a view of ``buffer``) or, for an adapted module, a fresh float32 base + ΔW."""
        base = self.base.read_into(name, buffer)
        delta = self.delta(name)
        return base if delta is None else delta.add_(base)


def open_lora_experts(hub, refs: Sequence[ResolvedRef], *, allow_pickle: bool = False) -> dict[int, LoraAdapter]:
    """Open the references that are PEFT adapters (their files include ``adapter_config.json``).

    The config is read and checked first; only then are the adapter's own files downloaded (they
    are small: the factors). Other references (full models) are left to the caller.

    Returns:
        index in ``refs`` -> the opened adapter.

    Raises:
        MissingAdapterConfigError: adapter weights without ``adapter_config.json``.
        UnsupportedAdapterError: DoRA, LoRA bias, modules_to_save... (nothing is downloaded).
    """
    out = {}
    for i, res in enumerate(refs):
        files = hub.list_files(res)
        if ADAPTER_CONFIG not in files:
            if any(f.split("/")[-1] in (ADAPTER_WEIGHTS, ADAPTER_PICKLE) for f in files):
                raise MissingAdapterConfigError(
                    f"{res.ref} has adapter weights but no {ADAPTER_CONFIG}; upload the config PeftModel.save_pretrained "
                    "wrote next to them")
            continue
        check_adapter_config(hub.read_json(res, ADAPTER_CONFIG) or {}, str(res.ref))
        patterns = [ADAPTER_CONFIG, ADAPTER_WEIGHTS] + ([ADAPTER_PICKLE] if allow_pickle else [])
        out[i] = LoraAdapter(hub.download(res, patterns), name=str(res.ref), allow_pickle=allow_pickle)
    return out


def hub_base_id(text: str | None) -> str | None:
    """The Hub repo id in a ``base_model_name_or_path``, or None for a local (training) path."""
    if not text:
        return None
    try:
        ref = parse_ref(text)
    except (InvalidReferenceError, RepoNotFoundError):
        return None
    return None if ref.is_local else ref.repo_id


def check_adapters(base_res: ResolvedRef, base_infos: Mapping[str, TensorInfo],
                   adapters: Sequence[LoraAdapter]) -> list[dict[str, str]]:
    """Check adapters against the base (ids, then module names and shapes) and map their modules.

    Returns:
        per adapter, module path -> base tensor name.

    Raises:
        IncompatibleExpertsError: adapters for different bases (naming both and the fix), a module
            the base lacks, a shape mismatch, or adapters that disagree on ``fan_in_fan_out``.
    """
    base_name = str(base_res.ref)
    base_id = None if base_res.ref.is_local else base_res.ref.repo_id
    first: tuple[str, str] | None = None  # (base id, adapter name) of the first adapter naming a Hub base
    for adapter in adapters:
        claimed = hub_base_id(adapter.base_model)
        if claimed is None:
            logger.info("adapter %s names base %r (not a Hub id): checking it by module names and shapes only",
                        adapter.name, adapter.base_model)
            continue
        if base_id is not None and claimed.lower() != base_id.lower():
            raise IncompatibleExpertsError(
                f"adapter {adapter.name} was trained on {claimed} but the merge base is {base_id}; "
                f"merge it onto --base {claimed}, or use adapters trained on {base_id}", expected=base_id, found=claimed)
        if first is not None and first[0].lower() != claimed.lower():
            raise IncompatibleExpertsError(
                f"adapters for different bases: {first[1]} was trained on {first[0]} but {adapter.name} on {claimed}; "
                "merge only adapters of one base", expected=first[0], found=claimed)
        first = first or (claimed, adapter.name)
    fifo = {bool(a.config.get("fan_in_fan_out", False)) for a in adapters}
    if len(fifo) > 1:
        raise IncompatibleExpertsError("the adapters disagree on fan_in_fan_out; they cannot be of the same base model")
    return [map_to_base(a, base_name, base_infos) for a in adapters]

