"""The low-rank pipeline: LoRA adapters in, a PEFT adapter or an RMM snapshot out.

:func:`merge_lowrank` runs every registry method of kind ``lowrank``; :func:`hf_time.api.merge`
hands them over, so the CLI and Python API are the same as for dense merges. The data flows one
way, as in the dense pipeline:

refs -> pinned shas -> adapter configs checked (nothing downloaded yet) -> adapter files (small)
-> base checked from its safetensors headers only (base weights are never downloaded) -> the method
per module (union of the adapters' modules) -> adapter folder or RMM snapshot + lineage + card
-> atomic rename -> one Hub commit.

Each output format (the method config's ``output``: ``"adapter"`` or ``"rmm"``) is one small class
that writes its files and its lineage entries; the pipeline never branches on a method name.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml
from tqdm.auto import tqdm

from hf_time import __version__
from hf_time.api import MergeResult, _ref_record
from hf_time.cards import LINEAGE_FILE, sha256_file, write_json
from hf_time.config import ExpertSpec, MergeConfig
from hf_time.engine import layer_index
from hf_time.errors import ConfigError, IncompatibleExpertsError, OutputExistsError
from hf_time.hub import MODEL_PATTERNS, PICKLE_PATTERNS, Hub, require_weights
from hf_time.io import Checkpoint, TensorInfo, atomic_output_dir, parse_dtype
from hf_time.lowrank import writer
from hf_time.lowrank.adapters import LoraAdapter
from hf_time.lowrank.cards import render_adapter_merge_card, render_rmm_card
from hf_time.lowrank.factors import ModuleResult
from hf_time.lowrank.snapshot import RMM_KIND, RMM_WEIGHTS, tensor_name
from hf_time.lowrank.sources import check_adapters, open_lora_experts
from hf_time.merges import MethodSpec, TensorContext, get, tensor_seed
from hf_time.refs import ResolvedRef

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Module:
    """One module of the union: the base tensor it adapts, its output path, and each expert's path."""

    tensor: str
    path: str
    embedding: bool
    paths: tuple[str | None, ...]


@dataclass(frozen=True)
class Inputs:
    """Everything read before the method runs: pinned refs, opened adapters, the module union."""

    base: ResolvedRef
    experts: tuple[ResolvedRef, ...]
    adapters: tuple[LoraAdapter, ...]
    base_infos: Mapping[str, TensorInfo]
    targets: tuple[Mapping[str, str], ...]
    modules: tuple[Module, ...]
    names: tuple[str, ...]


def _validate(config: MergeConfig) -> tuple[MethodSpec, Any]:
    spec = get(config.method)
    n = len(config.experts)
    if n < spec.min_experts or (spec.max_experts is not None and n > spec.max_experts):
        raise ConfigError(f"method {spec.name!r} needs at least {spec.min_experts} adapters, got {n}")
    method_config = spec.make_config(config.params)
    spec.check_expert_params([e.params for e in config.experts])
    problems = list(getattr(method_config, "check_n_experts", lambda n: [])(n))
    weights = [e.weight for e in config.experts]
    if any(not math.isfinite(w) for w in weights):
        problems.append("expert weights must be finite numbers")
    if not getattr(spec.config_cls, "uses_weights", True) and any(w != 1 for w in weights):
        problems.append(f"{spec.name} keeps every expert; expert weights do not apply (got {weights})")
    if config.lines:
        problems.append("LiNeS (--lines) scales dense task vectors; it does not apply to low-rank methods")
    if problems:
        raise ConfigError.from_problems(f"invalid {spec.name} merge", problems)
    return spec, method_config


def _display_names(refs: Sequence[ResolvedRef]) -> list[str]:
    short = [(r.ref.repo_id or str(r.ref.path)).rstrip("/").split("/")[-1] for r in refs]
    if len(set(short)) == len(short):
        return short
    full = [str(r.ref) for r in refs]
    return full if len(set(full)) == len(full) else [f"{i}:{s}" for i, s in enumerate(full)]


def _base_infos(hub: Hub, res: ResolvedRef, allow_pickle: bool) -> Mapping[str, TensorInfo]:
    infos = hub.tensor_infos(res)
    if infos is None:  # pickle-only base: names and shapes need the file itself
        require_weights(infos, res, allow_pickle, hub.list_files(res))
        infos = Checkpoint(hub.download(res, MODEL_PATTERNS + PICKLE_PATTERNS), allow_pickle=True).infos
    return infos


def open_inputs(hub: Hub, config: MergeConfig, *, strict: bool, equal_ranks: bool, method: str,
                allow_pickle: bool = False) -> Inputs:
    """Pin and open the base and the adapters, check them, and build the union of adapted modules.

    Raises:
        ConfigError: an expert is not an adapter.
        IncompatibleExpertsError: base mismatch, unknown module, shape mismatch, a module missing
            from an adapter with ``strict``, or different ranks where the method needs equal ones.
    """
    base_res = hub.resolve(config.base)
    expert_res = tuple(hub.resolve(e.ref) for e in config.experts)
    opened = open_lora_experts(hub, expert_res, allow_pickle=allow_pickle)
    full = [str(r.ref) for i, r in enumerate(expert_res) if i not in opened]
    if full:
        raise ConfigError(f"{method} merges LoRA adapters, but {full[0]} has no adapter_config.json (a full model?); "
                          "use a dense method such as task_arithmetic, which takes full and LoRA experts together")
    adapters = tuple(opened[i] for i in range(len(expert_res)))
    base_infos = _base_infos(hub, base_res, allow_pickle)
    targets = tuple(check_adapters(base_res, base_infos, adapters))
    names = tuple(_display_names(expert_res))
    inverse = [{t: p for p, t in tg.items()} for tg in targets]
    modules = []
    for tensor in base_infos:
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
        if equal_ranks and len(set(ranks)) > 1:
            raise IncompatibleExpertsError(
                f"{method} needs equal LoRA ranks per module; {p0!r} has ranks {ranks} in "
                f"{[names[i] for i, _ in present]}. Train the adapters with the same r, or use lora_cat / lora_svd",
                tensor=tensor, expected=ranks[0], found=ranks)
        modules.append(Module(tensor, p0, adapters[i0].modules[p0].embedding, paths))
    return Inputs(base_res, expert_res, adapters, base_infos, targets, tuple(modules), names)


def run_modules(spec: MethodSpec, method_config: Any, inputs: Inputs, weights: Sequence[float], *,
                device: str = "cpu", progress: bool = True) -> dict[str, ModuleResult]:
    """Run the method on every module of the union; returns base tensor name -> result (on CPU)."""
    layers = [layer_index(m.tensor) for m in inputs.modules]
    num_layers = max((i for i in layers if i is not None), default=-1) + 1 or None
    seed = int(getattr(method_config, "seed", 0) or 0)
    results = {}
    for module, layer in zip(tqdm(inputs.modules, desc=f"merging ({spec.name})", unit="module", disable=not progress), layers):
        factors = [None if p is None else a.factors(p) for a, p in zip(inputs.adapters, module.paths)]
        if device != "cpu":
            factors = [None if f is None else type(f)(f.a.to(device), f.b.to(device), f.scaling) for f in factors]
        ctx = TensorContext(name=module.tensor, weights=tuple(weights), layer=layer, num_layers=num_layers,
                            seed=tensor_seed(seed, module.tensor))
        result = spec.fn(factors, method_config, ctx)
        results[module.tensor] = ModuleResult({k: v.cpu() for k, v in result.tensors.items()}, result.stats)
    return results


def _adapter_summary(adapter: LoraAdapter) -> dict[str, Any]:
    cfg = adapter.config
    return {k: cfg.get(k) for k in ("r", "lora_alpha", "use_rslora", "base_model_name_or_path", "target_modules")}


class AdapterOutput:
    """A standard PEFT adapter (``lora_cat``, ``lora_svd``)."""

    @staticmethod
    def write(tmp: Path, inputs: Inputs, results: Mapping[str, ModuleResult], dtype: torch.dtype | None,
              method_config: Any) -> dict[str, Any]:
        dtype = dtype or inputs.adapters[0].dtype
        tensors, ranks, modules = {}, {}, {}
        for m in inputs.modules:
            res = results[m.tensor]
            for factor in ("A", "B"):
                tensors[writer.adapter_key(m.path, factor, m.embedding)] = res.tensors[factor].to(dtype)
            ranks[m.path] = int(res.tensors["A"].shape[0])
            modules[m.path] = {"base_tensor": m.tensor, "embedding": m.embedding, **res.stats, "rank": ranks[m.path]}
        base = inputs.base
        targets = writer.target_modules(ranks, {m.path: m.tensor for m in inputs.modules}, inputs.base_infos)
        cfg = writer.adapter_config(inputs.adapters[0].config, ranks=ranks, targets=targets,
                                    base_model=base.ref.repo_id or str(base.ref.path), revision=base.sha)
        files = writer.write_adapter(tmp, cfg, tensors, {"hf_time": __version__})
        return {"kind": "lowrank_merge", "modules": modules, "files": files}

    render = staticmethod(render_adapter_merge_card)


class RmmOutput:
    """An RMM snapshot (:mod:`hf_time.lowrank.snapshot`)."""

    @staticmethod
    def write(tmp: Path, inputs: Inputs, results: Mapping[str, ModuleResult], dtype: torch.dtype | None,
              method_config: Any) -> dict[str, Any]:
        from hf_time.io import write_safetensors

        n = len(inputs.adapters)
        tensors, modules = {}, {}
        sums = {k: [0.0] * n for k in ("delta_sq_error", "delta_sq_norm", "factor_sq_error", "factor_sq_norm")}
        stored = original = 0
        tail = 0.0
        for m in inputs.modules:
            res = results[m.tensor]
            tensors.update({tensor_name(m.path, k): v.to(dtype or torch.float32).contiguous() for k, v in res.tensors.items()})
            modules[m.path] = {"base_tensor": m.tensor, "embedding": m.embedding, "rank": res.stats["rank"]}
            if any(p not in (None, m.path) for p in m.paths):  # an expert names the module differently
                modules[m.path]["expert_paths"] = list(m.paths)
            for key, acc in sums.items():
                for i, v in enumerate(res.stats[key]):
                    acc[i] += v
            stored, original, tail = stored + res.stats["stored"], original + res.stats["original"], tail + res.stats["tail_energy"]
        write_safetensors(tmp / RMM_WEIGHTS, tensors, {"hf_time": __version__})
        errors = [{"reconstruction_error": _ratio(sums["delta_sq_error"][i], sums["delta_sq_norm"][i]),
                   "factor_error": _ratio(sums["factor_sq_error"][i], sums["factor_sq_norm"][i]),
                   "adapter_config": inputs.adapters[i].config,
                   "missing_modules": [m.path for m in inputs.modules if m.paths[i] is None]} for i in range(n)]
        return {"kind": RMM_KIND, "p": method_config.basis_size(n), "centered": method_config.centered,
                "modules": modules, "files": [RMM_WEIGHTS], "expert_extras": errors,
                "storage": {"stored": stored, "original": original, "ratio": stored / original if original else 0.0},
                "tail_energy": tail}

    render = staticmethod(render_rmm_card)


def _ratio(err: float, norm: float) -> float:
    return math.sqrt(err / norm) if norm > 0 else math.sqrt(err)


OUTPUTS = {"adapter": AdapterOutput, "rmm": RmmOutput}


def merge_lowrank(config: MergeConfig, *, out: str | os.PathLike, push_to: str | None = None, tag: str | None = None,
                  private: bool | None = None, overwrite: bool = False, allow_pickle: bool = False, hub: Hub | None = None,
                  progress: bool = True, title: str | None = None) -> MergeResult:
    """Merge LoRA adapters with a ``lowrank`` method into an adapter or an RMM snapshot; optionally publish.

    Called by :func:`hf_time.api.merge` for methods of kind ``lowrank``; takes the same config.

    Returns:
        A :class:`hf_time.api.MergeResult` (``out_dir`` holds the adapter or the snapshot).

    Raises:
        ConfigError, UnknownMethodError: bad method, parameters (e.g. p >= n) or weights (before any network call).
        OutputExistsError: ``out`` exists and ``overwrite`` is False (before any network call).
        MissingAdapterConfigError, UnsupportedAdapterError, IncompatibleExpertsError: from configs and
            headers, before any weight of the base is read.
    """
    spec, method_config = _validate(config)
    output = OUTPUTS[getattr(spec.config_cls, "output", "adapter")]
    if Path(out).exists() and not overwrite:
        raise OutputExistsError(f"output directory {Path(out).absolute()} already exists; choose another --out or pass --overwrite")
    hub = hub or Hub()
    inputs = open_inputs(hub, config, strict=bool(getattr(method_config, "strict", False)), method=spec.name,
                         equal_ranks=bool(getattr(spec.config_cls, "requires_equal_ranks", False)), allow_pickle=allow_pickle)
    weights = [e.weight for e in config.experts]
    results = run_modules(spec, method_config, inputs, weights, device=config.device, progress=progress)
    pinned = MergeConfig(
        base=inputs.base.pinned, experts=tuple(ExpertSpec(r.pinned, e.weight, dict(e.params)) for r, e in zip(inputs.experts, config.experts)),
        method=config.method, params=dict(config.params), dtype=config.dtype, device=config.device)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        written = output.write(tmp, inputs, results, parse_dtype(config.dtype), method_config)
        extras = written.pop("expert_extras", [{}] * len(inputs.experts))
        lineage = {
            "hf_time_version": __version__, "kind": written.pop("kind"), "method": spec.name, "summary": spec.summary,
            "paper": spec.paper, "parameters": {p.name: getattr(method_config, p.field) for p in spec.parameters()},
            "dtype": config.dtype, "device": config.device, "base": _ref_record(inputs.base),
            "experts": [{**_ref_record(r), "name": name, "weight": w, "adapter": _adapter_summary(a), **x}
                        for r, name, w, a, x in zip(inputs.experts, inputs.names, weights, inputs.adapters, extras)],
        }
        files = written.pop("files")
        lineage.update(written)
        lineage["files"] = {f: sha256_file(tmp / f) for f in files}
        config_yaml = pinned.to_yaml_dict()
        write_json(tmp / LINEAGE_FILE, lineage)
        (tmp / "merge_config.yaml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
        card_title = title or (push_to.split("/")[-1] if push_to else None)
        (tmp / "README.md").write_text(output.render(lineage, config_yaml, title=card_title, repo=push_to))
    out_dir = Path(out).absolute()
    logger.info("merged %d adapters with %s into %s", len(inputs.experts), spec.name, out_dir)
    published = None
    if push_to:
        published = hub.publish(
            out_dir, push_to, tag=tag, private=private,
            commit_message=f"hf_time: {spec.name} of {len(inputs.experts)} LoRA adapter(s)",
            commit_description=f"Base {inputs.base.pinned}; adapters " + ", ".join(r.pinned for r in inputs.experts))
    return MergeResult(out_dir=out_dir, lineage=lineage, published=published)
