"""The low-rank executor: LoRA adapters merged module by module into an adapter or an RMM snapshot.

The base is known from its safetensors headers only — its weights are never downloaded. The
adapted modules of all experts form a union (a module an adapter lacks has ΔW = 0, or is an error
with the method's ``strict``); the method runs once per module on the experts' factors, and the
results are written in the format the method declares (:attr:`LowRankMethod.output`): a standard
PEFT adapter, or an RMM snapshot (:mod:`hf_time.lowrank.snapshot`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from hf_time import __version__
from hf_time.engine import layer_index
from hf_time.errors import IncompatibleExpertsError, NonFiniteError
from hf_time.hub import MODEL_PATTERNS, PICKLE_PATTERNS, Hub
from hf_time.io import Checkpoint, TensorInfo, write_safetensors
from hf_time.lowrank import writer
from hf_time.lowrank.adapters import LoraAdapter
from hf_time.lowrank.snapshot import RMM_WEIGHTS, tensor_name
from hf_time.lowrank.sources import check_adapters
from hf_time.merges import LowRankMethod, TensorContext
from hf_time.merges.factors import ModuleResult
from hf_time.merges.kernels import all_finite
from hf_time.pipeline.artifact import Output
from hf_time.pipeline.plan import Plan
from hf_time.pipeline.resolve import Inputs
from hf_time.progress import enabled as bars_enabled
from hf_time.progress import label as bar_label


@dataclass(frozen=True)
class Module:
    """One module of the union: the base tensor it adapts, its output path, and each expert's path."""

    tensor: str
    path: str
    embedding: bool
    paths: tuple[str | None, ...]


def display_names(names: Sequence[str]) -> list[str]:
    """Short expert names (the repo or folder name) when unique, else the full references."""
    short = [n.rstrip("/").split("@")[0].split("/")[-1] for n in names]
    if len(set(short)) == len(short):
        return short
    return list(names) if len(set(names)) == len(names) else [f"{i}:{s}" for i, s in enumerate(names)]


def base_infos(hub: Hub, inputs: Inputs, plan: Plan) -> Mapping[str, TensorInfo]:
    """The base's tensors: from its headers, or (pickle-only base) from the file itself."""
    if inputs.base.infos is not None:
        return inputs.base.infos
    return Checkpoint(hub.download(inputs.base.read, MODEL_PATTERNS + PICKLE_PATTERNS), allow_pickle=True).infos


def module_union(method: LowRankMethod, strict: bool, adapters: Sequence[LoraAdapter], names: Sequence[str],
                 infos: Mapping[str, TensorInfo], targets: Sequence[Mapping[str, str]]) -> list[Module]:
    """Every base tensor some adapter adapts, in the base's order, with each expert's module path.

    Raises:
        IncompatibleExpertsError: a module missing from an adapter with ``strict``, or different
            ranks where the method needs equal ones.
    """
    inverse = [{t: p for p, t in tg.items()} for tg in targets]
    modules = []
    for tensor in infos:
        paths = tuple(inv.get(tensor) for inv in inverse)
        present = [(i, p) for i, p in enumerate(paths) if p is not None]
        if not present:
            continue
        i0, p0 = present[0]
        if strict and len(present) < len(paths):
            j = paths.index(None)
            raise IncompatibleExpertsError(
                f"strict: adapter {names[j]} does not adapt {p0!r} ({tensor}), which {names[i0]} adapts; "
                "drop strict to treat a missing module as ΔW = 0", tensor=tensor)
        ranks = [adapters[i].modules[p].rank for i, p in present]
        if method.requires_equal_ranks and len(set(ranks)) > 1:
            raise IncompatibleExpertsError(
                f"{method.name} needs equal LoRA ranks per module; {p0!r} has ranks {ranks} in "
                f"{[names[i] for i, _ in present]}. Train the adapters with the same r, or use lora_cat / lora_svd",
                tensor=tensor, expected=ranks[0], found=ranks)
        modules.append(Module(tensor, p0, adapters[i0].modules[p0].embedding, paths))
    return modules


def run_modules(plan: Plan, adapters: Sequence[LoraAdapter], modules: Sequence[Module], names: Sequence[str], *,
                progress: bool = True) -> dict[str, ModuleResult]:
    """Run the method on every module of the union; returns base tensor name -> result (on CPU)."""
    layers = [layer_index(m.tensor) for m in modules]
    num_layers = max((i for i in layers if i is not None), default=-1) + 1 or None
    results = {}
    bar = tqdm(modules, desc=bar_label(f"merging ({plan.method.name})"), unit="module",
               disable=not (progress and bars_enabled()))
    for module, layer in zip(bar, layers):
        factors = [None if p is None else a.factors(p) for a, p in zip(adapters, module.paths)]
        if plan.device != "cpu":
            factors = [None if f is None else type(f)(f.a.to(plan.device), f.b.to(plan.device), f.scaling) for f in factors]
        ctx = TensorContext(name=module.tensor, weights=plan.weights, layer=layer, num_layers=num_layers)
        result = plan.method.fn(factors, plan.config, ctx)
        if not plan.allow_nonfinite and not all(all_finite(v) for v in result.tensors.values()):
            bad = [names[i] for i, f in enumerate(factors)
                   if f is not None and not (all_finite(f.a) and all_finite(f.b))]
            raise NonFiniteError(f"the merge of module {module.path!r} has NaN or Inf"
                                 + (f"; non-finite factors in adapter {', '.join(bad)}" if bad else "")
                                 + ". Nothing was written; fix or drop that adapter, or pass --allow-nonfinite")
        results[module.tensor] = ModuleResult({k: v.cpu() for k, v in result.tensors.items()}, result.stats)
    return results


def _adapter_summary(adapter: LoraAdapter) -> dict[str, Any]:
    cfg = adapter.config
    return {k: cfg.get(k) for k in ("r", "lora_alpha", "use_rslora", "base_model_name_or_path", "target_modules")}


def write_adapter(tmp: Path, inputs: Inputs, modules: Sequence[Module], results: Mapping[str, ModuleResult],
                  infos: Mapping[str, TensorInfo], dtype: torch.dtype | None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """A standard PEFT adapter (factors ``A``/``B`` per module, scaling 1). Returns (files, details)."""
    adapters = [e.adapter for e in inputs.experts]
    dtype = dtype or adapters[0].dtype
    tensors, ranks, table = {}, {}, {}
    for m in modules:
        res = results[m.tensor]
        for factor in ("A", "B"):
            tensors[writer.adapter_key(m.path, factor, m.embedding)] = res.tensors[factor].to(dtype)
        ranks[m.path] = int(res.tensors["A"].shape[0])
        table[m.path] = {"base_tensor": m.tensor, "embedding": m.embedding, **res.stats, "rank": ranks[m.path]}
    base = inputs.base.res
    targets = writer.target_modules(ranks, {m.path: m.tensor for m in modules}, infos)
    cfg = writer.adapter_config(adapters[0].config, ranks=ranks, targets=targets,
                                base_model=base.ref.repo_id or str(base.ref.path), revision=base.sha)
    return tuple(writer.write_adapter(tmp, cfg, tensors, {"hf_time": __version__})), {"modules": table}


def _ratio(err: float, norm: float) -> float:
    return math.sqrt(err / norm) if norm > 0 else math.sqrt(err)


def write_rmm(tmp: Path, inputs: Inputs, modules: Sequence[Module], results: Mapping[str, ModuleResult],
              dtype: torch.dtype | None) -> tuple[tuple[str, ...], dict[str, Any], list[dict[str, Any]]]:
    """An RMM snapshot (:mod:`hf_time.lowrank.snapshot`). Returns (files, details, per-expert figures)."""
    adapters = [e.adapter for e in inputs.experts]
    n = len(adapters)
    tensors, table = {}, {}
    sums = {k: [0.0] * n for k in ("delta_sq_error", "delta_sq_norm", "factor_sq_error", "factor_sq_norm")}
    stored = original = 0
    tail = 0.0
    p = None
    for m in modules:
        res = results[m.tensor]
        p = int(res.tensors["A.basis"].shape[0])
        tensors.update({tensor_name(m.path, k): v.to(dtype or torch.float32).contiguous() for k, v in res.tensors.items()})
        table[m.path] = {"base_tensor": m.tensor, "embedding": m.embedding, "rank": res.stats["rank"]}
        if any(q not in (None, m.path) for q in m.paths):  # an expert names the module differently
            table[m.path]["expert_paths"] = list(m.paths)
        for key, acc in sums.items():
            for i, v in enumerate(res.stats[key]):
                acc[i] += v
        stored, original, tail = stored + res.stats["stored"], original + res.stats["original"], tail + res.stats["tail_energy"]
    write_safetensors(tmp / RMM_WEIGHTS, tensors, {"hf_time": __version__})
    per_expert = [{"reconstruction_error": _ratio(sums["delta_sq_error"][i], sums["delta_sq_norm"][i]),
                   "factor_error": _ratio(sums["factor_sq_error"][i], sums["factor_sq_norm"][i]),
                   "adapter_config": adapters[i].config,
                   "missing_modules": [m.path for m in modules if m.paths[i] is None]} for i in range(n)]
    centered = all(tensor_name(m.path, "A.mean") in tensors for m in modules)
    details = {"p": p if p is not None else n - 1, "centered": centered, "modules": table, "tail_energy": tail,
               "storage": {"stored": stored, "original": original, "ratio": stored / original if original else 0.0}}
    return (RMM_WEIGHTS,), details, per_expert


def execute(plan: Plan, inputs: Inputs, hub: Hub, tmp: Path, *, progress: bool = True) -> Output:
    """Run a low-rank merge into ``tmp``; returns what was written."""
    method = plan.method
    assert isinstance(method, LowRankMethod)
    adapters = [e.adapter for e in inputs.experts]
    names = display_names([e.name for e in inputs.experts])
    infos = base_infos(hub, inputs, plan)
    targets = [t if t is not None else check_adapters(inputs.base.res, infos, [a])[0]
               for t, a in zip(inputs.targets or [None] * len(adapters), adapters)]
    modules = module_union(method, bool(plan.config.strict), adapters, names, infos, targets)
    results = run_modules(plan, adapters, modules, names, progress=progress)
    summaries = [{"adapter": _adapter_summary(a)} for a in adapters]
    if method.output == "rmm":
        files, details, per_expert = write_rmm(tmp, inputs, modules, results, plan.torch_dtype)
        summaries = [{**s, **x} for s, x in zip(summaries, per_expert)]
    else:
        files, details = write_adapter(tmp, inputs, modules, results, infos, plan.torch_dtype)
    return Output(method.output, files, details, tuple(summaries), tuple(names))
