"""What the encoder and the causal-LM trainers share: Trainer arguments, progress bar, stats file.

Both trainers run ``transformers.Trainer`` on batches planned up front and save the result
themselves, so Trainer is told to save and log nothing; both write a :class:`TrainingStats` next to
the weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from tqdm.auto import tqdm

from hf_time import distributed, progress
from hf_time.training_config import TrainingConfig

STATS_FILE = "training_stats.json"


@dataclass(frozen=True)
class TrainingStats:
    """What a finetuning run did, saved as ``training_stats.json`` in its output folder.

    ``tokens`` counts real (non-padding) tokens; ``final_loss`` is the mean loss over the last
    10% of steps (at least one), less noisy than the last step's. Causal-LM runs also count the
    loss targets (``target_tokens``, the completion tokens) and the examples fed that had to be
    truncated to ``max_length`` (``truncated``); encoder runs leave both None.
    """

    task: str
    steps: int
    seconds: float
    s_per_step: float
    examples: int
    replay_examples: int
    tokens: int
    tokens_per_s: float
    first_loss: float
    final_loss: float
    trainable_parameters: int
    device: str
    config: dict[str, Any]
    losses: tuple[float, ...] = field(default=(), repr=False)
    target_tokens: int | None = None
    truncated: int | None = None
    precision: str | None = None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / STATS_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "TrainingStats":
        data = json.loads((Path(folder) / STATS_FILE).read_text())
        return cls(**{**data, "losses": tuple(data.get("losses", ()))})


def summarize_losses(losses: list[float]) -> tuple[float, float]:
    """``(first loss, mean of the last 10% of losses)``."""
    tail = losses[-max(1, len(losses) // 10):]
    return losses[0], round(sum(tail) / len(tail), 5)


def resolve_precision(config: TrainingConfig, device: torch.device) -> str:
    """``bf16`` or ``fp32``: ``auto`` is bf16 on a CUDA device that supports it, float32 elsewhere."""
    if config.precision != "auto":
        return config.precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def training_arguments(config: TrainingConfig, scratch: str, device: torch.device) -> TrainingArguments:
    """Trainer arguments of a run: the schedule of ``config``, AdamW, no saving and no logging.

    Under ``torchrun``/``accelerate launch`` (:mod:`hf_time.distributed`) ``config.batch_size`` stays
    the examples of one optimizer step: each of the P processes takes ``batch_size / (P × accumulation)``
    per forward pass, and each process reads its own slice of the planned stream (no dispatching from
    rank 0), so a step sees exactly the batch of a one-process run.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``gradient_accumulation_steps × processes``.
    """
    processes = distributed.world().size
    per_device = distributed.per_device_batch(config.batch_size, config.gradient_accumulation_steps, processes)
    return TrainingArguments(
        output_dir=scratch, max_steps=config.steps, per_device_train_batch_size=per_device,
        **({"accelerator_config": {"dispatch_batches": False}} if processes > 1 else {}),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        lr_scheduler_type="constant_with_warmup" if config.scheduler == "constant" else config.scheduler,
        warmup_steps=math.ceil(config.warmup_ratio * config.steps), optim="adamw_torch", seed=config.seed,
        use_cpu=device.type == "cpu", dataloader_pin_memory=device.type == "cuda",
        bf16=resolve_precision(config, device) == "bf16",
        **_checkpointing(config.gradient_checkpointing),
        torch_compile=config.torch_compile,
        # hf_time saves the result itself and logs its own summary: no checkpoints, no per-step prints.
        save_strategy="no", logging_strategy="no", report_to="none", remove_unused_columns=False, label_names=[])


def gathered_state_dict(trainer) -> dict[str, torch.Tensor] | None:
    """The full state dict of an FSDP-sharded model (gathered by every process: call it on all of them),
    or None when ``trainer.model`` holds the full weights already (one process, DDP)."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def _checkpointing(enabled: bool) -> dict[str, Any]:
    # transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    name = ("activation_checkpointing" if any(f.name == "activation_checkpointing"
                                              for f in dataclasses.fields(TrainingArguments)) else "gradient_checkpointing")
    # Non-reentrant checkpointing needs no inputs that require grad, so it works with frozen embeddings and LoRA.
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


class LabelledProgress(ProgressCallback):
    """Trainer's progress bar, labelled with the task being learned, without the metrics dict it
    prints at the end (hf_time logs its own summary)."""

    def __init__(self, description: str):
        super().__init__()
        self.description = description

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc=self.description, unit="step", dynamic_ncols=True)
        self.current_step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def use_labelled_progress(trainer, description: str) -> None:
    """Replace Trainer's default progress bar or metrics print by a :class:`LabelledProgress` saying
    ``description`` within the unit of work in force (:func:`hf_time.progress.label`); no bar at all
    inside :func:`hf_time.progress.quiet`, and none on the non-main processes of a multi-process run
    (hf_time prints its own summary, once)."""
    # Trainer shows a bar (ProgressCallback) or, when transformers' logging is quieter than WARNING
    # (TRANSFORMERS_VERBOSITY=error), prints the metrics dict instead (PrinterCallback): neither is ours.
    trainer.pop_callback(ProgressCallback)
    trainer.pop_callback(PrinterCallback)
    if progress.enabled() and distributed.is_main():
        trainer.add_callback(LabelledProgress(progress.label(description)))


def training_label(task_name: str, steps: int, lora: bool) -> str:
    """What a training bar says: ``"training sms_spam expert · 40 steps"`` (``"LoRA expert"`` for adapters)."""
    return f"training {task_name} {'LoRA ' if lora else ''}expert{progress.SEP}{steps} steps"


def lora_target_problem(model, target_modules: tuple[str, ...]) -> str | None:
    """Why PEFT would not find ``target_modules`` in ``model`` (None when every one is there).

    A target matches a module whose name is it or ends with ``.`` + it, as PEFT matches a list;
    ``("all-linear",)`` always matches.
    """
    if tuple(target_modules) == ("all-linear",):
        return None
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if not missing:
        return None
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    return (f"LoRA target modules {missing} are not in {type(model).__name__}; its linear layers are "
            f"{linear} (set training.lora.target_modules)")


def add_lora(model, spec, task_type: str):
    """Wrap ``model`` in a PEFT LoRA model after checking the targets exist.

    Raises:
        ConfigError: a target module is not in the model (checked before PEFT touches it).
    """
    from peft import LoraConfig, get_peft_model

    from hf_time.errors import ConfigError

    problem = lora_target_problem(model, spec.target_modules)
    if problem:
        raise ConfigError(problem)
    targets = "all-linear" if tuple(spec.target_modules) == ("all-linear",) else list(spec.target_modules)
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                        use_rslora=spec.use_rslora, task_type=task_type)
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated is_gradient_checkpointing (upstream; harmless).
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)
