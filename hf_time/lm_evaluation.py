"""Scoring causal LMs on causal-LM tasks: label likelihood, completion likelihood, greedy exact match.

* Classification as generation: every label's completion (separator + verbalizer) is scored after
  the prompt by its *length-normalised* log-likelihood (mean log-probability per token, so a
  two-token verbalizer is not penalised against a one-token one); the prediction is the best label.
  When every verbalizer is a single token, one forward pass per prompt scores all labels at once.
* Instruction tasks: the mean per-token log-likelihood of the reference completion, and for
  short-answer tasks the exact match of the greedy answer (both sides stripped, whitespace collapsed,
  case-folded, trailing punctuation dropped).

Sequences are encoded exactly as for training (:mod:`hf_time.lm_encoding`): prompts over
``max_length`` lose tokens from the left, and the number of examples truncated is reported. Each
task yields a :class:`TaskResult` whose ``score`` is the one number a timeline tracks: accuracy,
exact match, or, for long-answer instruction tasks, the per-token likelihood ``exp(mean log-prob)``
(in (0, 1], higher is better).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from hf_time.lm_encoding import Encoded, accepts_logits_to_keep, completion_nll, encode_examples, pad_id_of, pad_left
from hf_time.lm_task_types import InstructionTask, LMExample, LMTask, PromptClassificationTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskResult:
    """How a model did on one task (causal-LM tasks here; text tasks in :mod:`hf_time.evaluation`).

    Attributes:
        task: the task's name.
        metric: what ``score`` is: ``accuracy``, ``exact_match`` or ``token_likelihood``.
        score: the headline number in [0, 1].
        n: test examples scored.
        mean_logprob: mean over examples of the per-token log-likelihood of the reference
            completion (the true label's verbalizer for classification); None for text tasks.
        accuracy: classification accuracy (None for instruction tasks).
        exact_match: greedy exact match (None unless a short-answer instruction task).
        truncated: test examples whose prompt lost tokens to ``max_length`` (None: not counted,
            text tasks).
    """

    task: str
    metric: str
    score: float
    n: int
    mean_logprob: float | None = None
    accuracy: float | None = None
    exact_match: float | None = None
    truncated: int | None = 0


def _length_order(encoded: Sequence[Encoded]) -> list[int]:
    return sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))


@torch.inference_mode()
def completion_logprobs(model, encoded: Sequence[Encoded], *, pad_id: int, batch_size: int = 64,
                        desc: str | None = None) -> list[tuple[float, int]]:
    """``(summed log-probability, token count)`` of each example's completion, given its prompt.

    Batches are formed from examples of similar length (less padding); results are in input order.
    """
    device = next(model.parameters()).device
    keep_last = accepts_logits_to_keep(model)
    order = _length_order(encoded)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, desc=desc, disable=desc is None, leave=False):
        batch = {k: v.to(device) for k, v in pad_left([encoded[i] for i in chunk], pad_id).items()}
        nll = completion_nll(model, batch, keep_last=keep_last).float().cpu()
        for row, i in enumerate(chunk):
            out[i] = (-float(nll[row].sum()), encoded[i].n_completion)
    return out


@torch.inference_mode()
def _next_token_logprobs(model, encoded: Sequence[Encoded], token_ids: Sequence[int], *, pad_id: int,
                         batch_size: int, desc: str | None) -> torch.Tensor:
    """Log-probabilities [N, K] of ``token_ids`` right after each example's prompt (one pass each)."""
    device = next(model.parameters()).device
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    prompts = [Encoded(e.input_ids[: e.n_prompt], 0, e.truncated) for e in encoded]
    order = _length_order(prompts)
    out = torch.empty(len(prompts), len(token_ids))
    ids = torch.tensor(list(token_ids))
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, desc=desc, disable=desc is None, leave=False):
        batch = pad_left([prompts[i] for i in chunk], pad_id)
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "position_ids")}
        logits = model(**inputs, use_cache=False, **keep).logits[:, -1].float().log_softmax(-1).cpu()
        out[chunk] = logits[:, ids]
    return out


def classification_scores(model, tokenizer, task: PromptClassificationTask, *, max_length: int, batch_size: int = 64,
                          split: str = "test", progress: bool = False) -> tuple[torch.Tensor, int]:
    """Length-normalised log-likelihood [N, K] of every label's completion, and the truncated count."""
    prompts, completions, _ = task.candidates(split)
    k = len(completions)
    examples = [LMExample(p, c, "classification", task=task.name) for p in prompts for c in completions]
    encoded = encode_examples(examples, tokenizer, max_length)
    truncated = sum(any(e.truncated for e in encoded[i * k:(i + 1) * k]) for i in range(len(prompts)))
    desc = f"scoring {task.name}" if progress else None
    pad_id = pad_id_of(tokenizer)
    first = [e.input_ids[-1] for e in encoded[:k]]
    if all(e.n_completion == 1 for e in encoded) and len(set(first)) == k:
        # One-token verbalizers: one pass per prompt scores every label (its prompt is the same for all).
        scores = _next_token_logprobs(model, encoded[::k], first, pad_id=pad_id, batch_size=batch_size, desc=desc)
        return scores, truncated
    logp = completion_logprobs(model, encoded, pad_id=pad_id, batch_size=batch_size, desc=desc)
    scores = torch.tensor([s / max(n, 1) for s, n in logp]).view(len(prompts), k)
    return scores, truncated


def normalize_answer(text: str) -> str:
    """Exact-match normal form: whitespace collapsed, case-folded, outer punctuation and quotes stripped."""
    return " ".join(text.split()).casefold().strip(" .,;:!?\"'")


@torch.inference_mode()
def greedy_answers(model, tokenizer, encoded: Sequence[Encoded], *, max_new_tokens: int, batch_size: int = 16,
                   desc: str | None = None) -> list[str]:
    """Greedy continuations of each example's prompt, decoded without special tokens."""
    device = next(model.parameters()).device
    pad_id = pad_id_of(tokenizer)
    prompts = [Encoded(e.input_ids[: e.n_prompt], 0, e.truncated) for e in encoded]
    order = _length_order(prompts)
    out = [""] * len(prompts)
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, desc=desc, disable=desc is None, leave=False):
        batch = pad_left([prompts[i] for i in chunk], pad_id)
        generated = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                                   max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id)
        for row, i in enumerate(chunk):
            out[i] = tokenizer.decode(generated[row, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def evaluate_lm_task(model, tokenizer, task: LMTask, *, max_length: int, batch_size: int = 64, split: str = "test",
                     progress: bool = False) -> TaskResult:
    """Score a causal LM on one causal-LM task (see the module docstring for the metrics).

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer (with a chat template for chat tasks).
        task: the task.
        max_length: token cap per prompt + completion.
        batch_size: sequences per forward pass.
        split: ``"test"`` or ``"train"``.
        progress: show progress bars.

    Raises:
        IncompatibleTaskError: a chat task and a tokenizer without a chat template.
    """
    if isinstance(task, PromptClassificationTask):
        scores, truncated = classification_scores(model, tokenizer, task, max_length=max_length, batch_size=batch_size,
                                                  split=split, progress=progress)
        labels = torch.tensor(task.candidates(split)[2], dtype=torch.long)
        n = len(labels)
        accuracy = float((scores.argmax(-1) == labels).float().mean()) if n else 0.0
        true_logp = float(scores.gather(1, labels.unsqueeze(1)).mean()) if n else 0.0
        result = TaskResult(task.name, "accuracy", accuracy, n, true_logp, accuracy=accuracy, truncated=truncated)
    elif isinstance(task, InstructionTask):
        result = _evaluate_instruction(model, tokenizer, task, max_length=max_length, batch_size=batch_size, split=split,
                                       progress=progress)
    else:
        raise TypeError(f"{type(task).__name__} is not a causal-LM task")
    if result.truncated:
        logger.warning("%s: %d of %d test examples were longer than max_length=%d and lost prompt tokens on the left",
                       task.name, result.truncated, result.n, max_length)
    return result


def _evaluate_instruction(model, tokenizer, task: InstructionTask, *, max_length: int, batch_size: int, split: str,
                          progress: bool) -> TaskResult:
    examples = task.examples(split)
    encoded = encode_examples(examples, tokenizer, max_length)
    desc = f"scoring {task.name}" if progress else None
    logp = completion_logprobs(model, encoded, pad_id=pad_id_of(tokenizer), batch_size=batch_size, desc=desc)
    n = len(examples)
    mean_logprob = sum(s / max(c, 1) for s, c in logp) / n if n else 0.0
    truncated = sum(e.truncated for e in encoded)
    if not task.short_answer:
        return TaskResult(task.name, "token_likelihood", math.exp(mean_logprob), n, mean_logprob, truncated=truncated)
    answers = greedy_answers(model, tokenizer, encoded, max_new_tokens=task.max_new_tokens,
                             batch_size=max(1, batch_size // 4), desc=f"answering {task.name}" if progress else None)
    hits = sum(normalize_answer(a) == normalize_answer(e.completion) for a, e in zip(answers, examples))
    em = hits / n if n else 0.0
    return TaskResult(task.name, "exact_match", em, n, mean_logprob, exact_match=em, truncated=truncated)
