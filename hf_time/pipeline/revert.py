"""Reverting one expert of an RMM snapshot, through the same stages as a merge.

resolve (the snapshot pinned, its lineage read: a wrong reference or an unknown expert fails before
anything is downloaded) -> plan (which expert, which output) -> execute (the expert's factors
reconstructed from the basis; ``dense`` streams base + ΔW_i through the sharded writer) -> artifact
(a ``revert`` lineage) -> snapshot -> publish. The reverted adapter gets the expert's original
``adapter_config.json`` (its r, lora_alpha, rsLoRA and patterns, hence its exact PEFT scaling) with
``base_model_name_or_path`` / ``revision`` pointing at the pinned base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from hf_time import __version__, engine
from hf_time.errors import ConfigError
from hf_time.hub import MODEL_PATTERNS, PICKLE_PATTERNS, Hub
from hf_time.io import Checkpoint, parse_dtype
from hf_time.lineage import LINEAGE_FILE, ExpertRecord, Lineage, RefRecord
from hf_time.lowrank.adapters import module_rank_alpha, peft_scaling
from hf_time.lowrank.snapshot import RMM_WEIGHTS, RmmSnapshot, expert_index, expert_modules
from hf_time.lowrank.sources import LoraExpertSource
from hf_time.lowrank.writer import adapter_key, write_adapter
from hf_time.merges.factors import LoraModule
from hf_time.pipeline.artifact import carry_base_files, revert_lineage
from hf_time.refs import ResolvedRef

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevertPlan:
    """Which expert of which snapshot, and how it is written."""

    source: ResolvedRef
    lineage: Lineage
    index: int
    dense: bool
    dtype: str | None
    max_shard_bytes: int
    allow_pickle: bool


def resolve_revert(hub: Hub, ref: str, expert: int | str, *, dense: bool, dtype: str | None, max_shard_bytes: int,
                   allow_pickle: bool) -> RevertPlan:
    """Pin the snapshot and pick the expert from its lineage (nothing downloaded but ``hf_time.json``).

    Raises:
        ConfigError: ``ref`` is not an RMM snapshot.
        UnknownExpertError: no such expert (the message lists them).
    """
    res = hub.resolve(ref)
    lineage = hub.read_lineage(res)
    if lineage is None:
        raise ConfigError(f"{res.ref} has no {LINEAGE_FILE}; revert reads snapshots made with `hf-time merge --method rmm`")
    if lineage.output.format != "rmm":
        raise ConfigError(f"{res.ref} is not an RMM snapshot (its {LINEAGE_FILE} records a {lineage.kind} with "
                          f"{lineage.output.format} output); revert reads snapshots made with `hf-time merge --method rmm`")
    parse_dtype(dtype)
    return RevertPlan(res, lineage, expert_index(lineage, expert), dense, dtype, max_shard_bytes, allow_pickle)


def execute_revert(plan: RevertPlan, hub: Hub, tmp: Path, *, progress: bool = True) -> Lineage:
    """Write expert ``plan.index`` into ``tmp`` (an adapter, or base + ΔW); returns its lineage."""
    lineage, index = plan.lineage, plan.index
    snap = RmmSnapshot(hub.download(plan.source, [RMM_WEIGHTS, LINEAGE_FILE]), lineage)
    record = lineage.experts[index]
    base = lineage.base
    cfg = dict(record.details["adapter_config"], base_model_name_or_path=base.repo_id or base.ref, revision=base.sha)
    table = lineage.output.details["modules"]
    modules = {own: (table[path], *snap.factors(path, index)) for path, own in expert_modules(lineage, index).items()}
    out_dtype = parse_dtype(plan.dtype)
    if plan.dense:
        files = _write_dense(tmp, hub, base, cfg, modules, plan, progress)
    else:
        tensors = {}
        for own, (module, a, b) in modules.items():
            tensors[adapter_key(own, "A", module["embedding"])] = a.to(out_dtype or torch.float32)
            tensors[adapter_key(own, "B", module["embedding"])] = b.to(out_dtype or torch.float32)
        files = write_adapter(tmp, cfg, tensors, {"hf_time": __version__})
    expert = ExpertRecord(**vars(record.ref_record()), name=record.name,
                          details={k: v for k, v in record.details.items() if k != "adapter_config"})
    details = {"index": index, "p": lineage.output.details["p"], "centered": lineage.output.details["centered"],
               "n_experts": len(lineage.experts), "dense": plan.dense}
    return revert_lineage(RefRecord.from_resolved(plan.source), base, expert, details, tmp, files,
                          "model" if plan.dense else "adapter", plan.dtype)


def _write_dense(tmp: Path, hub: Hub, base: RefRecord, cfg: Mapping[str, Any], modules: Mapping[str, tuple],
                 plan: RevertPlan, progress: bool) -> list[str]:
    """Stream base + ΔW_i into ``tmp`` as a transformers folder; returns the weight files written."""
    base_res = hub.resolve(base.pinned)
    base_dir = hub.download(base_res, MODEL_PATTERNS + (PICKLE_PATTERNS if plan.allow_pickle else []))
    base_ck = Checkpoint(base_dir, allow_pickle=plan.allow_pickle)
    factors, transposed = {}, set()
    for own, (module, a, b) in modules.items():
        r, alpha = module_rank_alpha(cfg, own)
        lora = LoraModule(a, b, peft_scaling(r, alpha, bool(cfg.get("use_rslora"))))
        factors[module["base_tensor"]] = lambda lora=lora: lora
        if module["embedding"] or cfg.get("fan_in_fan_out"):
            transposed.add(module["base_tensor"])
    source = LoraExpertSource(base_ck, factors, frozenset(transposed))
    writer = engine.make_writer(tmp, base_ck.infos, parse_dtype(plan.dtype), plan.max_shard_bytes, {"hf_time": __version__})
    dtypes = {i.name: i.torch_dtype for i in engine.writer_infos(writer)}
    buffer = torch.empty(max((i.nbytes() for i in base_ck.infos.values()), default=0), dtype=torch.uint8)
    for name in tqdm(list(base_ck.infos), desc="writing the reverted model", unit="tensor", disable=not progress):
        writer.write(name, source.read_into(name, buffer).to(dtypes[name]))
    files = writer.close()
    carry_base_files(base_dir, tmp, plan.dtype)
    return files
