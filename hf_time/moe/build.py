"""``hf-time moe``: dense experts of one base upcycled into a Mixtral or Qwen2-MoE model, as a snapshot.

The same stages as every hf_time output: check the config (no network), pin and check every input
from metadata (config, safetensors headers: experts must be finetunes of the base), download,
compute the routers (:mod:`hf_time.moe.router`), stream the tensors into shards
(:mod:`hf_time.moe.layout`), then the lineage (kind ``moe``, built in
:mod:`hf_time.pipeline.artifact`), the one snapshot writer (``hf_time.json``, ``merge_config.yaml``
that reruns this, the card) and, with ``push_to``, one commit.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_time import __version__
from hf_time.atomic import atomic_output_dir
from hf_time.compat import check_compatible
from hf_time.errors import ConfigError
from hf_time.hub import MODEL_PATTERNS, Hub, PublishResult, require_weights
from hf_time.io import Checkpoint, ShardedSafetensorsWriter, parse_dtype, plan_shards
from hf_time.layers import find_stack
from hf_time.lineage import Lineage, RefRecord
from hf_time.moe.config import SOURCES, MoeConfig, architecture_of
from hf_time.moe.layout import moe_hf_config, pieces
from hf_time.moe.router import embed_vector, hidden_vector, prompt_gates, random_gates
from hf_time.pipeline.artifact import carry_base_files, moe_lineage
from hf_time.pipeline.cards import render_card
from hf_time.pipeline.plan import check_device
from hf_time.pipeline.resolve import pin
from hf_time.pipeline.snapshot import publish_snapshot, write_snapshot

logger = logging.getLogger(__name__)
EXPERT_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]
SHARD_BYTES = 5 * 10**9


@dataclass(frozen=True)
class MoeResult:
    """What :func:`build_moe` produced: the folder, its lineage, and the published commit."""

    out_dir: Path
    lineage: Lineage
    published: PublishResult | None = None


@dataclass(frozen=True)
class _Input:
    res: Any
    read: Any
    hf_config: dict
    infos: dict


def _resolve(hub: Hub, ref: str) -> _Input:
    res, read = pin(hub, ref)
    infos = hub.tensor_infos(read)
    if infos is None:
        require_weights(None, res, False, list(hub.list_files(read)))
    cfg = hub.read_json(read, "config.json")
    if cfg is None:
        raise ConfigError(f"{ref} has no config.json; MoE upcycling needs a transformers model")
    return _Input(res, read, cfg, infos)


def _architecture(config: MoeConfig, base_type: str | None) -> str:
    arch = architecture_of(config) or ("qwen2_moe" if base_type == "qwen2" else "mixtral")
    if base_type not in SOURCES[arch]:
        raise ConfigError(f"architecture {arch} takes {' or '.join(SOURCES[arch])} models, but the base is "
                          f"{base_type!r}")
    if arch == "mixtral" and config.shared_experts:
        raise ConfigError("shared_experts: mixtral has no shared expert; use architecture: qwen2_moe")
    return arch


def _gates(config: MoeConfig, base_dir: Path, base_ck: Checkpoint, stack, hidden: int, device: str):
    """Router rows (L, E, H) and, for a shared expert with prompts (or random modes), its gate (L, 1, H)."""
    wanted = list(config.experts) + [e for e in config.shared_experts
                                     if e.positive_prompts or config.gate_mode in ("random", "uniform_random")]
    if config.gate_mode in ("random", "uniform_random"):
        gates = random_gates(config.gate_mode, stack.num_layers, len(wanted), hidden, config.seed)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        if config.gate_mode.startswith("hidden"):
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device).eval()
            average = config.gate_mode == "hidden_avg"
            gates = prompt_gates(wanted, lambda prompts: hidden_vector(model, tokenizer, prompts, average))
            del model
        else:
            embed_name = next(n for n in base_ck.infos if n.endswith("embed_tokens.weight"))
            embed = base_ck.get(embed_name)
            gates = prompt_gates(wanted, lambda prompts: embed_vector(embed, tokenizer, prompts, stack.num_layers))
    n = len(config.experts)
    return gates[:, :n], (gates[:, n:] if gates.shape[1] > n else None)


def build_moe(config: MoeConfig, *, out: str | os.PathLike | None = None, overwrite: bool = False,
              push_to: str | None = None, tag: str | None = None, private: bool | None = None,
              hub: Hub | None = None, progress: bool = True, title: str | None = None) -> MoeResult:
    """Upcycle ``config``'s experts into a MoE model, write it as a snapshot, optionally publish it.

    Raises:
        ConfigError: a bad config, device or dtype (before any network call), an architecture that
            cannot hold the base, or a base without Llama-style MLPs.
        IncompatibleExpertsError: an expert that is not a finetune of the base (from headers).
        OutputExistsError: the output folder exists and ``overwrite`` is False.
    """
    problems: list[str] = []
    check_device(config.device, problems)
    if config.dtype is not None:
        try:
            parse_dtype(config.dtype)
        except ConfigError as e:
            problems.append(f"dtype: {e}")
    out = out or config.out
    if out is None:
        problems.append("no output folder given; pass --out DIR (or `out:` in the config)")
    if problems:
        raise ConfigError.from_problems("invalid MoE config", problems)
    push_to, tag = push_to or config.push_to, tag or config.tag
    hub = hub or Hub()
    if push_to:
        hub.check_publish(push_to)
    base = _resolve(hub, config.base_model)
    experts = [_resolve(hub, e.source_model) for e in config.experts]
    shared = [_resolve(hub, e.source_model) for e in config.shared_experts]
    check_compatible(str(base.res.ref), base.hf_config, base.infos,
                     [(str(m.res.ref), m.hf_config, m.infos) for m in experts + shared])
    arch = _architecture(config, base.hf_config.get("model_type"))
    stack = find_stack(base.infos, base.hf_config, str(base.res.ref))
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        base_dir = hub.download(base.read, MODEL_PATTERNS)
        cks = [Checkpoint(base_dir)] + [Checkpoint(hub.download(m.read, EXPERT_PATTERNS)) for m in experts + shared]
        gates, shared_gates = _gates(config, base_dir, cks[0], stack, base.hf_config["hidden_size"], config.device)
        dtype = parse_dtype(config.dtype) if config.dtype else _stored_dtype(base.hf_config, cks[0])
        plan = pieces(cks[0].infos, stack, arch, len(experts), bool(shared), gates, shared_gates,
                      [e.residual_scale for e in config.experts + config.shared_experts], dtype)
        files = _write(tmp, plan, cks, progress)
        carry_base_files(base_dir, tmp, None)
        hf_cfg = moe_hf_config(base.hf_config, arch, len(experts), config.experts_per_token,
                               str(dtype).removeprefix("torch."))
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2, sort_keys=True) + "\n")
        lineage = moe_lineage(config, arch, RefRecord.from_resolved(base.res),
                              [RefRecord.from_resolved(m.res) for m in experts],
                              [RefRecord.from_resolved(m.res) for m in shared], tmp, files, config.dtype,
                              {"num_layers": stack.num_layers, "router_norms": _norms(gates)})
        write_snapshot(tmp, lineage, card=render_card(lineage, title=title, repo=push_to))
    out_dir = Path(out).absolute()
    logger.info("%d expert(s) upcycled into a %s model at %s", len(experts), arch, out_dir)
    message = f"hf_time: {arch} MoE of {len(experts)} expert(s)"
    published = publish_snapshot(hub, out_dir, push_to, lineage, message=message, tag=tag, private=private)
    return MoeResult(out_dir, lineage, published)


def _stored_dtype(hf_config: dict, ck: Checkpoint) -> torch.dtype:
    name = hf_config.get("dtype") or hf_config.get("torch_dtype")
    if isinstance(name, str):
        return parse_dtype(name)
    return next((i.torch_dtype for i in ck.infos.values() if i.is_float), torch.float32)


def _norms(gates: torch.Tensor) -> list[list[float]]:
    """Per layer and expert, the router row's norm (1 for prompt modes: a quick check in the lineage)."""
    return [[round(float(v), 6) for v in row] for row in gates.norm(dim=-1)]


def _write(folder: Path, plan, cks, progress: bool) -> list[str]:
    writer = ShardedSafetensorsWriter(folder, plan_shards([p.info for p in plan], SHARD_BYTES), {"hf_time": __version__})

    def read(model: int, name: str) -> torch.Tensor:
        return cks[model].get(name)

    for piece in tqdm(plan, desc="writing the MoE", unit="tensor", disable=not progress):
        writer.write(piece.info.name, piece.make(read).to(piece.info.torch_dtype).contiguous())
    return writer.close()


def with_out(config: MoeConfig, out: str | None) -> MoeConfig:
    """``config`` with its output folder replaced (the CLI's ``--out``)."""
    return replace(config, out=out) if out else config
