"""The MoE upcycling config: mergekit-moe's YAML keys, declared with :func:`hf_time.schema.field`.

::

    base_model: org/base              # attention, norms, embeddings and head come from here
    architecture: mixtral             # or qwen2_moe (alias: qwen); default: mixtral for Llama/Mistral, qwen2_moe for Qwen2
    gate_mode: hidden                 # hidden (= hidden_last) | hidden_avg | cheap_embed | random | uniform_random
    experts_per_token: 2
    dtype: bfloat16
    experts:
      - source_model: org/math        # its MLP becomes expert 0 of every layer
        positive_prompts: ["Solve for x", "Compute the integral"]
        negative_prompts: ["Write a poem"]
      - source_model: org/code
        positive_prompts: ["def fibonacci(n):"]
    shared_experts: []                # qwen2_moe: at most one, always active

Every problem is reported at once with its key path, before any network call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from hf_time import schema
from hf_time.errors import ConfigError

GATE_MODES = ("hidden", "hidden_last", "hidden_avg", "cheap_embed", "random", "uniform_random")
ARCHITECTURES = ("mixtral", "qwen2_moe")
_ARCH_ALIASES = {"qwen": "qwen2_moe", "qwen2": "qwen2_moe", "qwen2_moe": "qwen2_moe", "mixtral": "mixtral"}
# Dense model types each output architecture can take its attention from unchanged.
SOURCES = {"mixtral": ("llama", "mistral"), "qwen2_moe": ("qwen2", "llama", "mistral")}


@dataclass(frozen=True)
class MoeExpert:
    """One expert: the dense model whose MLPs it takes, and the prompts its router vector comes from."""

    source_model: str = schema.field(help="org/name[@rev] or a folder: a finetune of the base")
    positive_prompts: tuple[str, ...] = schema.field((), "prompts to route to this expert")
    negative_prompts: tuple[str, ...] = schema.field((), "prompts to route away from it")
    residual_scale: float | None = schema.field(None, "multiply its down_proj (its write to the residual stream)")
    noise_scale: float | None = schema.field(None, "not supported: random noise on the expert weights")


@dataclass(frozen=True)
class MoeConfig:
    """A complete, reproducible description of one upcycling (the MoE YAML, typed)."""

    base_model: str = schema.field(help="the dense base: attention, norms, embeddings and head")
    experts: tuple[MoeExpert, ...] = schema.field(help="[{source_model, positive_prompts, negative_prompts}]")
    gate_mode: str = schema.field("hidden", "router initialisation", choices=GATE_MODES)
    experts_per_token: int = schema.field(2, "experts each token is routed to (top-k)", ge=1)
    shared_experts: tuple[MoeExpert, ...] = schema.field((), "qwen2_moe: at most one expert every token uses")
    architecture: str | None = schema.field(None, "mixtral or qwen2_moe (default: from the base's model type)")
    dtype: str | None = schema.field(None, "output dtype (default: the base's)")
    seed: int = schema.field(0, "seed of random / uniform_random routers", ge=0)
    device: str = schema.field("cpu", "where hidden states are computed")
    out: str | None = schema.field(None, "output folder")
    push_to: str | None = schema.field(None, "Hub repo to publish to")
    tag: str | None = schema.field(None, "tag of the published commit")
    name: str | None = schema.field(None, "a name (informational)")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The settings the lineage records (inputs are recorded pinned, separately)."""
        return {"architecture": self.architecture, "gate_mode": self.gate_mode,
                "experts_per_token": self.experts_per_token, "dtype": self.dtype, "seed": self.seed}


def check(config: MoeConfig, problems: list[str]) -> None:
    """Cross-field rules that need no model: counts, prompts, architecture name, unsupported keys."""
    n = len(config.experts)
    if n == 0:
        problems.append("experts: list at least one {source_model, positive_prompts}")
    elif config.experts_per_token > n:
        problems.append(f"experts_per_token: {config.experts_per_token} is more than the {n} expert(s)")
    if config.architecture is not None and config.architecture not in _ARCH_ALIASES:
        problems.append(f"architecture: {config.architecture!r} is not supported; use mixtral or qwen2_moe (mergekit's "
                        "deepseek and qwen3 outputs are not implemented)")
    if config.shared_experts and len(config.shared_experts) > 1:
        problems.append("shared_experts: at most one (qwen2_moe has a single shared expert)")
    prompts = config.gate_mode not in ("random", "uniform_random")
    for where, experts in (("experts", config.experts), ("shared_experts", config.shared_experts)):
        for i, e in enumerate(experts):
            if e.noise_scale is not None:
                problems.append(f"{where}[{i}].noise_scale: not supported (random noise makes the output "
                                "irreproducible); remove it")
            if prompts and where == "experts" and not e.positive_prompts:
                problems.append(f"{where}[{i}].positive_prompts: gate_mode {config.gate_mode} needs prompts for every "
                                "expert (or use gate_mode: random)")
    if prompts and n > 1 and len({(e.positive_prompts, e.negative_prompts) for e in config.experts}) == 1:
        problems.append("experts: every expert has the same prompts, so the router could not tell them apart; give "
                        "each expert prompts of its own")


def architecture_of(config: MoeConfig) -> str | None:
    """The canonical output architecture asked for (None: chosen from the base's model type)."""
    return None if config.architecture is None else _ARCH_ALIASES.get(config.architecture)


def moe_config_from_dict(data: Any, source: str = "config") -> MoeConfig:
    """A :class:`MoeConfig` from parsed YAML, every problem reported at once.

    Raises:
        ConfigError: one entry in ``problems`` per bad key or value, each with its key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    problems: list[str] = []
    config = schema.build(MoeConfig, data, problems=problems)
    if config is not None:
        check(config, problems)
    if problems:
        raise ConfigError.from_problems(f"invalid MoE config {source}", problems)
    return config


def load_moe_config(path: str | os.PathLike) -> MoeConfig:
    """Read a MoE config YAML file (mergekit-moe's keys).

    Raises:
        ConfigError: unreadable YAML or invalid content (all problems listed).
    """
    from hf_time.config import read_yaml

    return moe_config_from_dict(read_yaml(path, "MoE config"), source=os.fspath(path))


__all__ = ["ARCHITECTURES", "GATE_MODES", "MoeConfig", "MoeExpert", "architecture_of", "check", "load_moe_config",
           "moe_config_from_dict"]
