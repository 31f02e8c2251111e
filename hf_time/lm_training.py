"""Finetuning a causal LM on a causal-LM task: loss on the completion tokens only, full or LoRA.

The loop is ``transformers.Trainer`` with a :meth:`compute_loss` that scores only the completion
(the verbalizer, the answer, the assistant's turn). Why Trainer and not TRL's ``SFTTrainer``
(measured in ``benchmarks/lm_training.md``): SFTTrainer's value is its dataset preparation, and
that is what hf_time cannot use: its only truncation keeps the start and cuts the completion (hf_time
must cut the prompt's left and keep the answer), it batches in random order (hf_time plans
replay-mixed batches up front), and it computes full-vocabulary logits plus per-step entropy and
token accuracy, which made it 0.3-0.6x a plain loop on a small-model/large-vocabulary run (0.9-1.2x
on SmolLM2-135M, on its own batches). Trainer is the same loop underneath, without a new dependency.

Speed: batches are tokenized once before training (not per step), left-padded, and the LM head
only runs on the last ``max completion + 1`` positions (``logits_to_keep``): for classification the
head and its softmax over the vocabulary shrink to a couple of positions. Against a plain PyTorch
AdamW loop on the same batches (``benchmarks/lm_train_speed.py``, tokens per CPU second, this 2-core
CPU): 2.1-2.3x on classification with a small Llama, 1.1-1.3x with SmolLM2-135M, 0.89-1.07x on SFT
where almost every position is a target; median 1.09x.

Loss: summed token NLL over completion tokens divided by the number of completion tokens in the
whole (accumulated, and across processes) batch, counted from ``shift_labels`` when each step's
micro-batches are fetched; so gradient accumulation and data parallelism give the loss of the full
batch, not a mean of micro-batch means.

Precision (:class:`~hf_time.training_config.TrainingConfig`): ``auto`` trains in bf16 mixed
precision on a GPU that supports it and in float32 on CPU; gradient checkpointing, gradient
accumulation and ``torch.compile`` are passed to Trainer.

Output: a standard transformers folder, or a standard PEFT adapter folder with ``config.lora``;
either with the tokenizer and ``training_stats.json``; written atomically.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Sequence

import datasets
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Trainer, set_seed

from hf_time import progress
from hf_time.batching import mix_batches
from hf_time.errors import ConfigError, IncompatibleTaskError, OutputExistsError
from hf_time.evaluation import is_causal_config, resolve_device
from hf_time.io import atomic_output_dir
from hf_time.lm_encoding import (
    IGNORE,
    Encoded,
    accepts_logits_to_keep,
    completion_nll,
    encode_examples,
    pad_id_of,
    pad_left,
)
from hf_time.lm_task_types import LMExample, LMTask
from hf_time.lm_tasks import replay_examples
from hf_time.trainer_common import (
    TrainingStats,
    add_lora,
    gathered_state_dict,
    resolve_precision,
    summarize_losses,
    training_arguments,
    training_label,
    use_labelled_progress,
)
from hf_time.training_config import TrainingConfig

logger = logging.getLogger(__name__)


def check_causal_base(model_dir: str | Path, task_name: str):
    """The base's config, after checking it is a causal LM.

    Raises:
        IncompatibleTaskError: the base is an encoder (or any non-causal-LM architecture).
    """
    hf_config = AutoConfig.from_pretrained(str(model_dir))
    if not is_causal_config(hf_config):
        arch = (getattr(hf_config, "architectures", None) or [type(hf_config).__name__])[0]
        raise IncompatibleTaskError(f"task {task_name!r} is a generation task but {model_dir} is {arch}, not a causal "
                                    "LM; use a causal-LM base (e.g. SmolLM2) or a text task for encoders")
    return hf_config


def plan_lm_batches(examples: Sequence[Encoded], past: Sequence[Encoded],
                    config: TrainingConfig) -> list[list[tuple[bool, Encoded]]]:
    """Every step's ``(is_replay, example)`` pairs: ``config.replay_fraction`` of each batch from ``past``.

    Raises:
        ConfigError: no training examples.
    """
    if not examples:
        raise ConfigError("the task has no training examples")
    return mix_batches([(False, e) for e in examples], [(True, e) for e in past], batch_size=config.batch_size,
                       steps=config.steps, replay_fraction=config.replay_fraction if past else 0.0, seed=config.seed)


class _PlannedStream(torch.utils.data.IterableDataset):
    """Planned examples in order: Trainer does not reshuffle an iterable dataset, so consecutive
    micro-batches make up exactly one planned batch."""

    def __init__(self, batches: list[list[tuple[bool, Encoded]]]):
        self.examples = [e for b in batches for _, e in b]

    def __iter__(self):
        return iter(self.examples)


class _CompletionTrainer(Trainer):
    """Trainer whose loss is the NLL of completion tokens; keeps every micro-batch's summed loss."""

    loss_is_scaled_for_ga = True  # divided by the whole batch's target count, see compute_loss

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_last = accepts_logits_to_keep(self.model)
        self.sums: list[torch.Tensor] = []
        self.counts: list[torch.Tensor] = []

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of one optimizer step and their total number of loss targets.

        Trainer counts targets only from a ``labels`` key; these batches carry ``shift_labels``.
        """
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batches:
            return batches, None
        count = sum((b["shift_labels"] != IGNORE).sum() for b in batches).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        nll = completion_nll(model, inputs, keep_last=self.keep_last)
        total = nll.sum()
        count = (inputs["shift_labels"] != IGNORE).sum()
        self.sums.append(total.detach())
        self.counts.append(count)
        loss = total / (num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1))
        if self.args.average_tokens_across_devices and self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.args.world_size  # DDP averages gradients over processes; the divisor was global
        return loss


def _load_model(model_dir: str | Path, config: TrainingConfig):
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)  # fp32 master weights
    if config.lora is not None:
        return add_lora(model, config.lora, "CAUSAL_LM")
    if config.freeze_embeddings:
        # With tied embeddings (SmolLM2) this freezes the output head too: the same matrix.
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def _examples(task: LMTask, replay: datasets.Dataset | None, config: TrainingConfig) -> tuple[list[LMExample], list[LMExample]]:
    current = task.examples("train")
    past = replay_examples(replay) if replay is not None and len(replay) and config.replay_fraction > 0 else []
    if replay is None and config.replay_fraction > 0:
        logger.info("replay_fraction=%s but no replay pool: training on %s only", config.replay_fraction, task.name)
    return current, past


@progress.libraries_quiet()  # transformers' load/save bars: the labelled training bar covers them
def finetune_lm(model_dir: str | Path, task: LMTask, config: TrainingConfig, out_dir: str | Path, *,
                device: str | torch.device | None = None, replay: datasets.Dataset | None = None,
                overwrite: bool = False) -> Path:
    """Finetune a causal LM on a causal-LM task (loss on completion tokens only) and save the expert.

    Everything that can be wrong with the inputs is checked before training starts: the base is a
    causal LM, a chat task's tokenizer has a chat template, LoRA targets exist in the model.

    Args:
        model_dir: a local transformers folder of a causal LM and its tokenizer.
        task: a :class:`~hf_time.lm_task_types.PromptClassificationTask` or
            :class:`~hf_time.lm_task_types.InstructionTask`; its train split is used.
        config: the training configuration (``max_length`` caps prompt + completion tokens).
        out_dir: the output folder; it appears only once complete.
        device: ``"cpu"`` forces the CPU; default CUDA if available, else CPU.
        replay: a pool from :func:`hf_time.lm_tasks.lm_replay_pool`, mixed in at
            ``config.replay_fraction``.
        overwrite: replace an existing ``out_dir`` (only after the new one is complete).

    Returns:
        ``out_dir`` as an absolute path: a transformers folder, or a PEFT adapter folder with
        ``config.lora``; either holds the tokenizer and ``training_stats.json``.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False.
        IncompatibleTaskError: an encoder base, or chat messages and no chat template.
        ConfigError: LoRA targets not in the model, an empty task or a malformed replay pool.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists; choose another out_dir or pass overwrite=True")
    hf_config = check_causal_base(model_dir, task.name)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    current, past = _examples(task, replay, config)
    # Tokenizing checks the chat template (IncompatibleTaskError) before any model is loaded.
    batches = plan_lm_batches(encode_examples(current, tokenizer, config.max_length),
                              encode_examples(past, tokenizer, config.max_length), config)
    device = resolve_device(device)
    set_seed(config.seed)  # before the model: LoRA initialisation is random
    model = _load_model(model_dir, config)

    fed = [e for b in batches for _, e in b]
    truncated = sum(e.truncated for e in fed)
    if truncated:
        logger.warning("%s: %d of %d examples fed were longer than max_length=%d and lost prompt tokens on the left",
                       task.name, truncated, len(fed), config.max_length)
    tokens, targets = sum(len(e.input_ids) for e in fed), sum(e.n_completion for e in fed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    precision = resolve_precision(config, device)
    logger.info("finetuning %s on %s: %d steps, %d trainable parameters, %s", model_dir, task.name, config.steps,
                trainable, precision)
    pad_id = pad_id_of(tokenizer)
    with tempfile.TemporaryDirectory(prefix="hf_time_trainer_") as scratch:
        trainer = _CompletionTrainer(model=model, args=training_arguments(config, scratch, device),
                                     train_dataset=_PlannedStream(batches), data_collator=lambda b: pad_left(b, pad_id))
        use_labelled_progress(trainer, training_label(task.name, config.steps, config.lora is not None))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    model = trainer.model.eval()

    ga = config.gradient_accumulation_steps
    # Under DDP each process saw its slice of every batch: sum the slices (a no-op for one process).
    sums = trainer.accelerator.reduce(torch.stack(trainer.sums).float().view(-1, ga).sum(1), "sum")
    counts = trainer.accelerator.reduce(torch.stack(trainer.counts).float().view(-1, ga).sum(1), "sum").clamp(min=1)
    losses = [round(x, 5) for x in (sums / counts).cpu().tolist()]
    first_loss, final_loss = summarize_losses(losses)
    stats = TrainingStats(
        task=task.name, steps=config.steps, seconds=round(seconds, 3), s_per_step=round(seconds / config.steps, 4),
        examples=len(fed), replay_examples=sum(r for b in batches for r, _ in b),
        tokens=tokens, tokens_per_s=round(tokens / seconds, 1), first_loss=first_loss, final_loss=final_loss,
        trainable_parameters=trainable, device=str(trainer.args.device), config=config.to_dict(),
        losses=tuple(losses), target_tokens=targets, truncated=truncated, precision=precision)
    state_dict = gathered_state_dict(trainer)  # collective under FSDP: every process takes part
    if not trainer.is_world_process_zero():
        return out  # the main process writes the one copy (the others read it from the shared folder)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if config.lora is None:
            stored = getattr(hf_config, "dtype", None)
            if isinstance(stored, torch.dtype) and stored.is_floating_point and stored != torch.float32:
                model.to(stored)  # keep the base's storage dtype so experts and base merge like for like
                if state_dict is not None:
                    state_dict = {k: v.to(stored) if v.is_floating_point() else v for k, v in state_dict.items()}
        model.save_pretrained(str(tmp), **({"state_dict": state_dict} if state_dict is not None else {}))
        (tmp / "README.md").unlink(missing_ok=True)  # PEFT's stub card; cards are hf_time.cards' job
        tokenizer.save_pretrained(str(tmp))
        stats.save(tmp)
    logger.info("saved %s: completion loss %.4f -> %.4f in %.1f s (%.0f tokens/s)", out, first_loss, final_loss,
                seconds, stats.tokens_per_s)
    return out
