"""The Python API: merge experts given by Hub id or folder, and optionally publish the result.

``merge`` is the function the CLI calls. The data flows one way:
refs -> pinned shas -> compatibility from headers -> download (allow-patterns) -> streaming engine
-> lineage + card -> atomic rename -> one Hub commit.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from hf_time import __version__, engine
from hf_time.cards import LINEAGE_FILE, render_merge_card, sha256_file, write_json
from hf_time.compat import check_compatible
from hf_time.config import ExpertSpec, MergeConfig
from hf_time.errors import ConfigError
from hf_time.hub import MODEL_PATTERNS, PICKLE_PATTERNS, Hub, PublishResult, require_weights
from hf_time.io import Checkpoint, atomic_output_dir, copy_files, parse_dtype, parse_size
from hf_time.merges import get
from hf_time.refs import ResolvedRef

logger = logging.getLogger(__name__)

# Files carried over from the base so the output loads with from_pretrained (config, tokenizer).
CARRIED_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
    "added_tokens.json", "chat_template.jinja", "sentencepiece.bpe.model", "spiece.model",
)


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge` produced.

    Attributes:
        out_dir: the merged model folder.
        lineage: the content of its ``hf_time.json``.
        published: the Hub commit, when ``push_to`` was given.
    """

    out_dir: Path
    lineage: dict[str, Any]
    published: PublishResult | None = None


def _ref_record(res: ResolvedRef) -> dict[str, Any]:
    ref = res.ref
    if ref.is_local:
        return {"ref": str(ref.path), "repo_id": None, "revision": None, "sha": None}
    return {"ref": str(ref), "repo_id": ref.repo_id, "revision": ref.revision, "sha": res.sha}


def _validate(config: MergeConfig):
    spec = get(config.method)
    if spec.kind != "dense":
        raise ConfigError(f"method {spec.name!r} is of kind {spec.kind!r}; `merge` runs dense methods (see `hf-time ls`)")
    n = len(config.experts)
    if n < spec.min_experts or (spec.max_experts is not None and n > spec.max_experts):
        want = f"exactly {spec.min_experts}" if spec.min_experts == spec.max_experts else (
            f"at least {spec.min_experts}" + (f" and at most {spec.max_experts}" if spec.max_experts else ""))
        raise ConfigError(f"method {spec.name!r} needs {want} expert(s), got {n}")
    method_config = spec.make_config(config.params)
    expert_params = spec.check_expert_params([e.params for e in config.experts])
    if any(not (w == w and abs(w) != float("inf")) for w in (e.weight for e in config.experts)):
        raise ConfigError("expert weights must be finite numbers")
    return spec, method_config, expert_params



def _open_inputs(hub: Hub, config: MergeConfig, allow_pickle: bool):
    """Pin every reference, check compatibility from configs and headers only, then download what a
    merge needs and open one weight source per expert (a checkpoint, or base + ΔW for a PEFT adapter).

    Returns:
        (base_res, expert_res, base_dir, base checkpoint, expert weight sources)
    """
    base_res = hub.resolve(config.base)
    expert_res = [hub.resolve(e.ref) for e in config.experts]
    # PEFT adapters among the experts (adapter_config.json) enter as base + ΔW (hf_time.lowrank.sources).
    from hf_time.lowrank.sources import LoraExpertSource, check_adapters, open_lora_experts

    lora = open_lora_experts(hub, expert_res, allow_pickle=allow_pickle)
    full = [i for i in range(len(expert_res)) if i not in lora]
    metas = []
    for res in [base_res, *(expert_res[i] for i in full)]:
        infos = hub.tensor_infos(res)
        if infos is None:
            require_weights(infos, res, allow_pickle, hub.list_files(res))
        metas.append((str(res.ref), hub.read_json(res, "config.json"), infos))
    headers_known = all(m[2] is not None for m in metas)  # False only for pickle checkpoints
    if headers_known:
        check_compatible(metas[0][0], metas[0][1], metas[0][2], metas[1:])
    if lora and metas[0][2] is not None:
        lora_targets = dict(zip(lora, check_adapters(base_res, metas[0][2], list(lora.values()))))

    pickles = PICKLE_PATTERNS if allow_pickle else []
    base_dir = hub.download(base_res, MODEL_PATTERNS + pickles)
    expert_dirs = [hub.download(expert_res[i], ["config.json", "*.safetensors", "*.safetensors.index.json"] + pickles)
                   for i in full]
    base_ck = Checkpoint(base_dir, allow_pickle=allow_pickle)
    full_cks = [Checkpoint(d, allow_pickle=allow_pickle) for d in expert_dirs]
    if not headers_known:  # pickle inputs: check now that their tensors are readable
        check_compatible(metas[0][0], metas[0][1], base_ck.infos, [(m[0], m[1], c.infos) for m, c in zip(metas[1:], full_cks)])
    if lora and metas[0][2] is None:
        lora_targets = dict(zip(lora, check_adapters(base_res, base_ck.infos, list(lora.values()))))
    experts = [LoraExpertSource.from_adapter(base_ck, lora[i], lora_targets[i]) if i in lora
               else full_cks[full.index(i)] for i in range(len(expert_res))]
    return base_res, expert_res, base_dir, base_ck, experts


def merge(
    base: str | None = None,
    experts: Sequence[str | ExpertSpec] = (),
    method: str = "linear",
    *,
    params: Mapping[str, Any] | None = None,
    weights: Sequence[float] | None = None,
    out: str | os.PathLike | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    lines: tuple[float, float] | None = None,
    config: MergeConfig | None = None,
    push_to: str | None = None,
    tag: str | None = None,
    private: bool | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
    max_shard_size: int | str = "5GB",
    hub: Hub | None = None,
    progress: bool = True,
    title: str | None = None,
) -> MergeResult:
    """Merge ``experts`` onto ``base`` with a registry method, write a model folder, optionally publish.

    Either pass the pieces (``base``, ``experts``, ``method``, ``params``...) or a ready
    :class:`MergeConfig` as ``config``.

    Args:
        base: θ_0 as ``org/name[@rev]`` or a folder.
        experts: expert references (or :class:`ExpertSpec` with weight and per-expert params).
        method: registry name (``hf-time ls``).
        params: method parameters by public name, e.g. ``{"density": 0.5, "lambda": 1.0}``.
        weights: one weight per expert (default 1.0 each).
        out: output folder (must not exist unless ``overwrite``).
        dtype: output dtype of floating tensors (default: the base's).
        device: ``cpu`` or ``cuda[:i]``.
        lines: LiNeS (alpha, beta) for task-vector methods.
        push_to: Hub repo id to publish the result to as one commit.
        tag: tag to put on that commit.
        allow_pickle: accept ``pytorch_model.bin`` checkpoints (loaded with ``weights_only=True``).
        max_shard_size: output shard size ("5GB", "500MB" or bytes).
        hub: the :class:`Hub` client to use (default: ``HF_ENDPOINT`` and ambient token).

    Returns:
        A :class:`MergeResult`.

    Raises:
        ConfigError, UnknownMethodError: bad method or parameters (before any network call).
        OutputExistsError: ``out`` exists and ``overwrite`` is False (before any network call).
        RepoNotFoundError, RevisionNotFoundError, IncompatibleExpertsError, UnsafeCheckpointError:
            found from metadata, before any weight is downloaded.
    """
    if config is None:
        if base is None and method != "linear":
            raise ConfigError(f"a base model is required for {method!r}")
        specs = [e if isinstance(e, ExpertSpec) else ExpertSpec(ref=str(e)) for e in experts]
        if weights is not None:
            if len(weights) != len(specs):
                raise ConfigError(f"got {len(weights)} weights for {len(specs)} experts; give one --weight per expert")
            specs = [ExpertSpec(s.ref, float(w), s.params) for s, w in zip(specs, weights)]
        if not specs:
            raise ConfigError("no experts given; pass at least one --expert")
        config = MergeConfig(
            base=str(base if base is not None else specs[0].ref), experts=tuple(specs), method=method,
            params=dict(params or {}), dtype=dtype, device=device, lines=lines, out=None if out is None else str(out),
            push_to=push_to, tag=tag,
        )
    out = out if out is not None else config.out
    if out is None:
        raise ConfigError("no output folder given; pass --out DIR")
    push_to = push_to or config.push_to
    tag = tag or config.tag
    if get(config.method).kind == "lowrank":  # LoRA factors in, adapter or RMM snapshot out: hf_time.lowrank
        from hf_time.lowrank.api import merge_lowrank

        return merge_lowrank(config, out=out, push_to=push_to, tag=tag, private=private, overwrite=overwrite,
                             allow_pickle=allow_pickle, hub=hub, progress=progress, title=title)
    spec, method_config, expert_params = _validate(config)
    out_dtype = parse_dtype(config.dtype)
    if Path(out).exists() and not overwrite:
        from hf_time.errors import OutputExistsError

        raise OutputExistsError(f"output directory {Path(out).absolute()} already exists; choose another --out or pass --overwrite")

    hub = hub or Hub()
    base_res, expert_res, base_dir, base_ck, expert_cks = _open_inputs(hub, config, allow_pickle)

    plan = engine.MergePlan(
        spec=spec, config=method_config, weights=tuple(e.weight for e in config.experts),
        expert_params=tuple(expert_params), dtype=out_dtype, device=config.device, lines=config.lines,
    )
    pinned = MergeConfig(
        base=base_res.pinned, experts=tuple(ExpertSpec(r.pinned, e.weight, dict(e.params)) for r, e in zip(expert_res, config.experts)),
        method=config.method, params=dict(config.params), dtype=config.dtype, device=config.device, lines=config.lines,
    )
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        writer = engine.make_writer(tmp, base_ck.infos, out_dtype, parse_size(max_shard_size), {"hf_time": __version__})
        engine.run(base_ck, expert_cks, plan, writer, progress=progress)
        weight_files = writer.close()
        copy_files(base_dir, tmp, CARRIED_FILES)
        if out_dtype is not None and (tmp / "config.json").is_file():
            cfg = json.loads((tmp / "config.json").read_text())
            cfg["dtype"] = str(out_dtype).removeprefix("torch.")
            cfg.pop("torch_dtype", None)
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        resolved_params = {p.name: getattr(method_config, p.field) for p in spec.parameters()}
        lineage = {
            "hf_time_version": __version__,
            "kind": "merge",
            "method": spec.name,
            "summary": spec.summary,
            "paper": spec.paper,
            "parameters": resolved_params,
            "lines": list(config.lines) if config.lines else None,
            "dtype": config.dtype,
            "device": config.device,
            "base": _ref_record(base_res),
            "experts": [
                {**_ref_record(r), "weight": e.weight, "parameters": dict(e.params)} for r, e in zip(expert_res, config.experts)
            ],
            "files": {f: sha256_file(tmp / f) for f in weight_files},
        }
        config_yaml = pinned.to_yaml_dict()
        write_json(tmp / LINEAGE_FILE, lineage)
        (tmp / "merge_config.yaml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
        card_title = title or (push_to.split("/")[-1] if push_to else None)
        (tmp / "README.md").write_text(render_merge_card(lineage, config_yaml, title=card_title))
    out_dir = Path(out).absolute()
    logger.info("merged %d experts with %s into %s", len(expert_res), spec.name, out_dir)
    published = None
    if push_to:
        published = hub.publish(
            out_dir, push_to, tag=tag, private=private,
            commit_message=f"hf_time: {spec.name} merge of {len(expert_res)} expert(s)",
            commit_description=f"Base {base_res.pinned}; experts " + ", ".join(r.pinned for r in expert_res),
        )
    return MergeResult(out_dir=out_dir, lineage=lineage, published=published)
