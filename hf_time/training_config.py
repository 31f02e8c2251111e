"""How an expert is finetuned: typed configs only, importable without torch or transformers.

Kept apart from :mod:`hf_time.training` so that reading a timeline config (and starting the CLI)
does not pay for importing the training stack.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

from hf_time.errors import ConfigError

_SCHEDULERS = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
# Fields added after timelines were first keyed by to_dict(): written only when set, so the content
# keys (and the reuse of experts on a re-run) of configs that do not use them stay what they were.
_OMITTED_AT_DEFAULT = ("precision", "gradient_accumulation_steps", "gradient_checkpointing", "torch_compile")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA adapter to train instead of the full weights (PEFT ``LoraConfig`` fields)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "value")
    use_rslora: bool = False


@dataclass(frozen=True)
class TrainingConfig:
    """How one expert is finetuned.

    Attributes:
        steps: optimizer steps.
        learning_rate: peak AdamW learning rate (5e-5 suits MiniLM full finetuning; LoRA wants ~1e-3).
        batch_size: examples per step, replay included.
        max_length: token cap per text.
        warmup_ratio: fraction of steps of linear warm-up.
        scheduler: decay after warm-up: "cosine" (TIME's choice), "linear" or "constant".
        weight_decay: AdamW decoupled weight decay, on matrices only (not biases or norms).
        max_grad_norm: gradient clipping (0 disables).
        seed: seeds batch order, dropout and LoRA initialisation.
        freeze_embeddings: freeze the word-embedding matrix: half of MiniLM's parameters and the
            costliest AdamW update; rows of unseen tokens would otherwise only drift by weight decay.
        lora: train a LoRA adapter instead of the full weights.
        replay_fraction: fraction of each batch drawn from the replay pool, in [0, 1).
        logit_scale: the fixed temperature of the cosine logits (20 as in offline-assets.md).
        precision: ``auto`` (bf16 mixed precision on a GPU that supports it, else float32),
            ``fp32`` or ``bf16``. On a CPU ``auto`` is float32.
        gradient_accumulation_steps: split each batch of ``batch_size`` examples into this many
            micro-batches (it must divide ``batch_size``); the step and its loss are unchanged.
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
        torch_compile: compile the model with ``torch.compile`` (GPU; long warm-up, faster steps).
    """

    steps: int = 100
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 32
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    freeze_embeddings: bool = True
    lora: LoraSpec | None = None
    replay_fraction: float = 0.0
    logit_scale: float = 20.0
    precision: str = "auto"
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    torch_compile: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.scheduler in _SCHEDULERS, f"scheduler must be one of {_SCHEDULERS}, got {self.scheduler!r}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, got {self.max_grad_norm}"),
            (0 <= self.replay_fraction < 1, f"replay_fraction must be in [0, 1), got {self.replay_fraction}"),
            (self.logit_scale > 0, f"logit_scale must be > 0, got {self.logit_scale}"),
            (self.lora is None or self.lora.r >= 1, "lora.r must be >= 1"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.gradient_accumulation_steps >= 1 and self.batch_size % self.gradient_accumulation_steps == 0,
             f"gradient_accumulation_steps must be >= 1 and divide batch_size={self.batch_size}, "
             f"got {self.gradient_accumulation_steps}"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ConfigError.from_problems("invalid training config", problems)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainingConfig":
        """Build from plain data (YAML/JSON); unknown keys are errors, ``lora`` may be a mapping."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        lora = data.get("lora")
        if isinstance(lora, Mapping):
            lora_known = {f.name for f in dataclasses.fields(LoraSpec)}
            unknown += [f"lora.{k}" for k in sorted(set(lora) - lora_known)]
            if "target_modules" in lora:
                lora = {**lora, "target_modules": tuple(lora["target_modules"])}
            lora = LoraSpec(**{k: v for k, v in lora.items() if k in lora_known})
        if unknown:
            raise ConfigError.from_problems("invalid training config", [f"unknown key {k!r}" for k in unknown])
        return cls(**{**dict(data), "lora": lora})

    @property
    def micro_batch_size(self) -> int:
        """Examples per forward/backward pass."""
        return self.batch_size // self.gradient_accumulation_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples), the inverse of :meth:`from_dict`.

        The performance options (precision, accumulation, checkpointing, compile) appear only when
        they differ from their defaults, so configs that do not use them keep their content keys.
        """
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        defaults = type(self)()
        return {k: v for k, v in data.items() if k not in _OMITTED_AT_DEFAULT or v != getattr(defaults, k)}
