"""Finetuning one expert head-free, as CLIP trains its text tower, with optional replay and LoRA.

Objective (encoder bases, BertModel-like): mean-pool the last hidden states over real tokens,
L2-normalise, and take ``logits = logit_scale · cos(text, description)`` against the label
descriptions of the example's own task; cross-entropy on the true description. The description
embeddings come from the model being trained and are recomputed, with gradient, at every step (one
extra forward pass over a handful of short phrases, cheap next to the texts): they move with the
text embeddings instead of going stale, exactly as head-free evaluation will compute them.

Replay: a batch holds ``round(batch_size · replay_fraction)`` examples from a replay pool of past
tasks and the rest from the current task. A replay pool is a ``datasets.Dataset`` with columns
``text`` (str), ``label`` (int, an index into the row's own descriptions), ``label_descriptions``
(list of str, the row's task's descriptions in label order) and ``task`` (str, informational); build
one with :func:`replay_pool`. Each row carries its own descriptions, so pools of any tasks
concatenate with ``datasets.concatenate_datasets`` and need no side table. Each example competes only
against its own task's descriptions (other tasks' phrases are masked out of its softmax): head-free
scoring never asks a model to tell a movie review from a question about a person.

The loop is ``transformers.Trainer`` with a custom ``compute_loss``. Measured on MiniLM (batch 16 ×
32 tokens, word embeddings frozen, 1 CPU thread, 15 steps, 3 alternating runs, CPU seconds because
the shared machine's wall clock was too noisy): 7.6-8.0 s per run against 7.2-7.5 s for a plain
AdamW loop doing the same batches (load and save included), i.e. ~0.50 vs ~0.47 s/step, about 5%.
That buys the HF stack's accelerator handling, schedules, optimizers and clipping for free. Batches
are planned up front (:func:`plan_batches`) and fed in order as an iterable dataset, which Trainer
does not reshuffle, so the replay mix of every batch is exactly as planned. Trainer saves and logs
nothing itself.

Output: a standard transformers folder (safetensors, config.json, tokenizer files, plus the
sentence-transformers metadata of the base when present) or, with ``config.lora``, a standard PEFT
adapter folder; both also hold ``training_stats.json`` (:class:`TrainingStats`). The folder is
written next to ``out_dir`` and renamed into place only when complete.
"""

from __future__ import annotations

import logging
import tempfile
import time

from pathlib import Path
from typing import Any, Mapping, Sequence

import datasets
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer, Trainer, set_seed

from hf_time import progress
from hf_time.batching import mix_batches
from hf_time.errors import ConfigError, OutputExistsError
from hf_time.evaluation import is_causal_config, mean_pool, resolve_device
from hf_time.io import atomic_output_dir, copy_files
from hf_time.lm_task_types import is_lm_task
from hf_time.tasks import TextTask
from hf_time.trainer_common import (  # noqa: F401  (STATS_FILE, TrainingStats re-exported)
    STATS_FILE,
    add_lora,
    TrainingStats,
    summarize_losses,
    training_arguments,
    training_label,
    use_labelled_progress,
)
from hf_time.training_config import LoraSpec, TrainingConfig  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

REPLAY_FEATURES = datasets.Features({
    "text": datasets.Value("string"), "label": datasets.Value("int64"),
    "label_descriptions": datasets.Sequence(datasets.Value("string")), "task": datasets.Value("string")})
# sentence-transformers metadata of the base, copied so a full-finetune expert stays loadable there.
_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json")


def replay_pool(tasks: Sequence, *, n_per_task: int | None = None, seed: int = 0) -> datasets.Dataset:
    """A replay pool of training examples of past tasks, each carrying its own label descriptions.

    Causal-LM tasks get a causal-LM pool instead (:func:`hf_time.lm_tasks.lm_replay_pool`), which
    :func:`finetune` on a causal-LM task accepts as ``replay``.

    Args:
        tasks: the past tasks, all text tasks or all causal-LM tasks.
        n_per_task: examples taken per task (a seeded sample of its train split); None takes all.
        seed: seeds the sample.

    Raises:
        ConfigError: text tasks and causal-LM tasks mixed in one pool.
    """
    lm = [is_lm_task(t) for t in tasks]
    if any(lm):
        if not all(lm):
            raise ConfigError("a replay pool cannot mix text tasks (encoders) and causal-LM tasks")
        from hf_time.lm_tasks import lm_replay_pool

        return lm_replay_pool(tasks, n_per_task=n_per_task, seed=seed)
    parts = []
    for task in tasks:
        train = task.train.shuffle(seed=seed)
        train = train.select(range(min(n_per_task, len(train)))) if n_per_task is not None else train
        parts.append(datasets.Dataset.from_dict(
            {"text": list(train["text"]), "label": list(train["label"]),
             "label_descriptions": [list(task.label_descriptions)] * len(train), "task": [task.name] * len(train)},
            features=REPLAY_FEATURES))
    return datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_dict(
        {k: [] for k in REPLAY_FEATURES}, features=REPLAY_FEATURES)


Example = tuple[str, int, tuple[str, ...]]  # text, label index, the example's own task's descriptions


def plan_batches(task: TextTask, config: TrainingConfig, replay: datasets.Dataset | None = None) -> list[list[Example]]:
    """The examples of every step, fixed up front: seeded epochs over the task and the replay pool."""
    current = [(t, y, task.label_descriptions) for t, y in zip(task.train["text"], task.train["label"])]
    if not current:
        raise ConfigError(f"task {task.name!r} has no training examples")
    past: list[Example] = []
    if replay is not None and len(replay) and config.replay_fraction > 0:
        missing = {"text", "label", "label_descriptions"} - set(replay.column_names)
        if missing:
            raise ConfigError(f"replay pool lacks column(s) {sorted(missing)}; build it with replay_pool()")
        past = [(t, y, tuple(d)) for t, y, d in zip(replay["text"], replay["label"], replay["label_descriptions"])]
        bad = [t for t, y, d in past if not 0 <= y < len(d)]
        if bad:
            raise ConfigError(f"{len(bad)} replay examples have a label outside their own descriptions")
    elif config.replay_fraction > 0:
        logger.info("replay_fraction=%s but no replay pool: training on %s only", config.replay_fraction, task.name)
    return mix_batches(current, past, batch_size=config.batch_size, steps=config.steps,
                       replay_fraction=config.replay_fraction, seed=config.seed)


def collate(batch: Sequence[Example], tokenizer, max_length: int) -> dict[str, Any]:
    """Tokenize a planned batch: texts, the union of their descriptions, and who may pick which."""
    union: dict[str, int] = {}
    for _, _, descs in batch:
        for d in descs:
            union.setdefault(d, len(union))
    allowed = torch.zeros(len(batch), len(union), dtype=torch.bool)
    targets = torch.empty(len(batch), dtype=torch.long)
    for i, (_, label, descs) in enumerate(batch):
        allowed[i, [union[d] for d in descs]] = True
        targets[i] = union[descs[label]]
    tok = dict(padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"text": dict(tokenizer([t for t, _, _ in batch], **tok)), "desc": dict(tokenizer(list(union), **tok)),
            "allowed": allowed, "targets": targets}


def head_free_loss(model, batch: Mapping[str, Any], logit_scale: float) -> torch.Tensor:
    """Cross-entropy of ``logit_scale · cos(text, description)`` over each example's own descriptions."""
    text = F.normalize(mean_pool(model(**batch["text"]).last_hidden_state, batch["text"]["attention_mask"]), dim=-1)
    desc = F.normalize(mean_pool(model(**batch["desc"]).last_hidden_state, batch["desc"]["attention_mask"]), dim=-1)
    logits = (logit_scale * text @ desc.T).masked_fill(~batch["allowed"], float("-inf"))
    return F.cross_entropy(logits, batch["targets"])


class _PlannedStream(torch.utils.data.IterableDataset):
    """The planned examples in order: Trainer does not shuffle an iterable dataset, so each
    consecutive ``batch_size`` chunk is exactly one planned (replay-mixed) batch."""

    def __init__(self, batches: list[list[Example]]):
        self.examples = [e for b in batches for e in b]

    def __iter__(self):
        return iter(self.examples)


class _Collator:
    """:func:`collate`, counting real text tokens for the throughput figure."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length, self.tokens = tokenizer, max_length, 0

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        batch = collate(examples, self.tokenizer, self.max_length)
        self.tokens += int(batch["text"]["attention_mask"].sum())
        return batch


class _HeadFreeTrainer(Trainer):
    """``Trainer`` with the head-free loss; keeps every step's loss (Trainer only logs averages)."""

    def __init__(self, *args, logit_scale: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.logit_scale = logit_scale
        self.step_losses: list[torch.Tensor] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = head_free_loss(model, inputs, self.logit_scale)
        self.step_losses.append(loss.detach())
        return loss


def _prepare_model(model_dir: str | Path, config: TrainingConfig):
    hf_config = AutoConfig.from_pretrained(str(model_dir))
    if is_causal_config(hf_config):
        raise ConfigError(f"{model_dir} is a causal LM ({hf_config.architectures[0]}); "
                          "a text task trains encoder bases (BertModel-like) only; give a causal LM a prompt task "
                          "(hf_time.lm_tasks, or a built-in <task>_prompt)")
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32)  # train in fp32 whatever is stored
    if config.lora is not None:
        model = add_lora(model, config.lora, "FEATURE_EXTRACTION")
    elif config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model, hf_config


@progress.libraries_quiet()  # transformers' load/save bars: the labelled training bar covers them
def finetune(model_dir: str | Path, task: TextTask, config: TrainingConfig, out_dir: str | Path, *,
             device: str | torch.device | None = None, replay: datasets.Dataset | None = None,
             overwrite: bool = False) -> Path:
    """Finetune an encoder on ``task`` head-free and save the expert (a causal LM on a causal-LM task).

    Causal-LM tasks (:mod:`hf_time.lm_task_types`) go to :func:`hf_time.lm_training.finetune_lm`
    with the same arguments, so one trainer serves timelines of either kind.

    Args:
        model_dir: a local transformers folder of an encoder (BertModel-like) and its tokenizer.
        task: the task to learn (its train split is used).
        config: the training configuration.
        out_dir: the output folder; it appears only once complete.
        device: ``"cpu"`` forces the CPU; otherwise Trainer uses the accelerator if there is one
            (pick a GPU with ``CUDA_VISIBLE_DEVICES``). Default: CUDA if available, else CPU.
        replay: optional replay pool (see :func:`replay_pool`), mixed in at ``config.replay_fraction``.
        overwrite: replace an existing ``out_dir`` (only after the new one is complete).

    Returns:
        ``out_dir`` as an absolute path: a transformers folder, or a PEFT adapter folder with
        ``config.lora``; either holds ``training_stats.json``.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False (checked before training).
        ConfigError: a causal-LM base, an empty task or a malformed replay pool.
    """
    if is_lm_task(task):
        from hf_time.lm_training import finetune_lm

        return finetune_lm(model_dir, task, config, out_dir, device=device, replay=replay, overwrite=overwrite)
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists; choose another out_dir or pass overwrite=True")
    device = resolve_device(device)
    set_seed(config.seed)  # before the model: LoRA initialisation is random
    model, hf_config = _prepare_model(model_dir, config)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    batches = plan_batches(task, config, replay)
    collator = _Collator(tokenizer, config.max_length)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("finetuning %s on %s: %d steps, %d trainable parameters", model_dir, task.name, config.steps, trainable)

    with tempfile.TemporaryDirectory(prefix="hf_time_trainer_") as scratch:
        trainer = _HeadFreeTrainer(model=model, args=training_arguments(config, scratch, device),
                                   train_dataset=_PlannedStream(batches), data_collator=collator,
                                   logit_scale=config.logit_scale)
        use_labelled_progress(trainer, training_label(task.name, config.steps, config.lora is not None))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    model = trainer.model.eval()

    # One loss per micro-batch: average each step's micro-batches.
    per_step = torch.stack(trainer.step_losses).float().view(-1, config.gradient_accumulation_steps).mean(1)
    per_step = trainer.accelerator.reduce(per_step, "mean")  # DDP: every process's slice (no-op for one)
    tokens = int(trainer.accelerator.reduce(torch.tensor(collator.tokens, device=per_step.device), "sum"))
    losses = [round(x, 5) for x in per_step.cpu().tolist()]
    first_loss, final_loss = summarize_losses(losses)
    stats = TrainingStats(
        task=task.name, steps=config.steps, seconds=round(seconds, 3), s_per_step=round(seconds / config.steps, 4),
        examples=sum(len(b) for b in batches),
        replay_examples=sum(1 for b in batches for e in b if e[2] is not task.label_descriptions),
        tokens=tokens, tokens_per_s=round(tokens / seconds, 1), first_loss=first_loss,
        final_loss=final_loss, trainable_parameters=trainable, device=str(trainer.args.device),
        config=config.to_dict(), losses=tuple(losses))
    if not trainer.is_world_process_zero():
        return out  # the main process writes the one copy
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if config.lora is None:
            stored = getattr(hf_config, "dtype", None)
            if isinstance(stored, torch.dtype) and stored.is_floating_point and stored != torch.float32:
                model.to(stored)  # keep the base's storage dtype so experts and base merge like for like
            copy_files(Path(model_dir), tmp, _ST_FILES)
        model.save_pretrained(str(tmp))
        # PEFT writes a stub card naming the local base path; cards are hf_time.cards' job.
        (tmp / "README.md").unlink(missing_ok=True)
        tokenizer.save_pretrained(str(tmp))
        stats.save(tmp)
    logger.info("saved %s: loss %.4f -> %.4f in %.1f s (%.2f s/step)", out, stats.first_loss, stats.final_loss,
                seconds, stats.s_per_step)
    return out
