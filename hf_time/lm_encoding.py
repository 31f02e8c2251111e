"""Tokenizing causal-LM examples: prompt and completion apart, left truncation, left padding.

The prompt and the completion are tokenized separately and concatenated, so the loss mask covers
exactly the completion's tokens (tokenizing the joined string and guessing the boundary, as
prompt-length masking does, can shift it by a token where BPE merges across the seam):

* ``classification``: prompt with the tokenizer's special prefix (BOS, when it adds one), then the
  verbalizer (``" positive"``) without EOS: the labels compete on the same tokens in scoring.
* ``completion``: the same, then EOS after the completion, so the model learns to stop.
* ``chat``: the conversation rendered by the tokenizer's chat template; the prompt is the render of
  all messages but the last with the generation prompt, the completion is the rest of the full render
  (the assistant's answer and the template's end-of-turn marker). Both tokenized without specials:
  the template writes them.

Over-long examples lose prompt tokens from the left (after the special prefix), so the end of the
prompt (the question) and the whole completion stay; an example whose completion alone does not fit
keeps one prompt token and loses the completion's end. Both count as truncated (:class:`Encoded`).

Batches are *left*-padded with explicit ``position_ids``: every row ends with its completion, so the
LM head only has to run on the last ``max completion + 1`` positions (``logits_to_keep``), which for
classification is a few positions out of a hundred (see :func:`completion_nll`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from hf_time.errors import IncompatibleTaskError
from hf_time.lm_task_types import LMExample

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ``input_ids`` ends with the ``n_completion`` completion tokens.

    Attributes:
        input_ids: prompt tokens then completion tokens.
        n_completion: how many trailing tokens are the completion (the loss targets).
        truncated: tokens were dropped to fit ``max_length``.
    """

    input_ids: tuple[int, ...]
    n_completion: int
    truncated: bool

    @property
    def n_prompt(self) -> int:
        return len(self.input_ids) - self.n_completion


def fit(prompt_ids: Sequence[int], completion_ids: Sequence[int], max_length: int, *, keep_prefix: int = 0) -> Encoded:
    """Join prompt and completion tokens into at most ``max_length`` tokens.

    Args:
        prompt_ids: prompt tokens (including any special prefix).
        completion_ids: completion tokens (at least one).
        max_length: the cap on the joined length (>= 2).
        keep_prefix: leading prompt tokens never dropped (the tokenizer's BOS), when room allows.

    Returns:
        The example; prompt tokens are dropped from the left (after the kept prefix) first, and the
        completion's end only when the completion alone leaves no room for one prompt token. With
        an empty prompt the first completion token is context, since nothing predicts it.
    """
    prompt, completion = list(prompt_ids), list(completion_ids)
    if not prompt:  # nothing predicts the first token: it becomes context, not a target
        prompt, completion = completion[:1], completion[1:]
    if len(prompt) + len(completion) <= max_length:
        return Encoded(tuple(prompt + completion), len(completion), False)
    if len(completion) > max_length - 1:
        completion = completion[: max_length - 1]
    room = max_length - len(completion)
    keep = min(keep_prefix, room - 1) if room > 1 else 0
    prompt = prompt[:keep] + prompt[len(prompt) - (room - keep):]
    return Encoded(tuple(prompt + completion), len(completion), True)


def special_prefix(tokenizer) -> list[int]:
    """The tokens the tokenizer puts before any text (``[bos]`` for Llama-2-like, ``[]`` for GPT-2-like)."""
    return list(tokenizer("", add_special_tokens=True)["input_ids"])


def check_chat_template(tokenizer, task_name: str) -> None:
    """Raise before any work if a chat task meets a tokenizer without a chat template.

    Raises:
        IncompatibleTaskError: the tokenizer has no ``chat_template``.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise IncompatibleTaskError(
            f"task {task_name!r} has chat messages but the tokenizer has no chat template; use a chat model's "
            "tokenizer, set tokenizer.chat_template, or give the task prompt/completion columns instead")


def render_chat(tokenizer, messages: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """``(prompt, completion)`` strings of a chat whose last message is the assistant's answer."""
    chat = [{"role": r, "content": c} for r, c in messages]
    prompt = tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(chat, tokenize=False)
    if not full.startswith(prompt):
        raise IncompatibleTaskError("the chat template does not render a conversation's beginning as a prefix of the "
                                    "whole conversation; hf_time cannot tell the answer's tokens apart")
    return prompt, full[len(prompt):]


def encode_examples(examples: Sequence[LMExample], tokenizer, max_length: int) -> list[Encoded]:
    """Tokenize examples (in batches of strings, which fast tokenizers do in parallel) and fit each.

    Raises:
        IncompatibleTaskError: chat examples and a tokenizer without a chat template.
    """
    prefix = special_prefix(tokenizer)
    prompts, completions, with_prefix, eos = [], [], [], []
    for ex in examples:
        if ex.kind == "chat":
            check_chat_template(tokenizer, ex.task)
            prompt, completion = render_chat(tokenizer, ex.messages)
        else:
            prompt, completion = ex.prompt, ex.completion
        prompts.append(prompt)
        completions.append(completion)
        with_prefix.append(ex.kind != "chat")
        eos.append(ex.kind == "completion" and tokenizer.eos_token_id is not None)
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"] if completions else []
    out = []
    for p, c, pre, e in zip(p_ids, c_ids, with_prefix, eos):
        c = list(c) + ([tokenizer.eos_token_id] if e else [])
        if not c:
            raise IncompatibleTaskError(f"an example's completion {completions[len(out)]!r} has no tokens")
        out.append(fit((prefix if pre else []) + list(p), c, max_length, keep_prefix=len(prefix) if pre else 0))
    return out


def pad_id_of(tokenizer) -> int:
    """The padding id: the tokenizer's pad token, else its EOS (causal LMs often have no pad token)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def pad_left(encoded: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a batch; ``shift_labels[i, j]`` is the completion token that position ``j`` predicts, else -100.

    Returns:
        ``input_ids``, ``attention_mask``, ``position_ids`` (0 at each row's first real token) and
        ``shift_labels``, each ``[B, W]``.
    """
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, width - n:] = torch.tensor(e.input_ids)
        mask[i, width - n:] = 1
        # The completion occupies the last n_completion columns; column j predicts token j + 1.
        labels[i, width - e.n_completion - 1: width - 1] = ids[i, width - e.n_completion:]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids, "shift_labels": labels}


def _unwrapped(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward can compute logits for the last positions only."""
    return "logits_to_keep" in inspect.signature(_unwrapped(model).forward).parameters


def completion_nll(model, batch: dict[str, Any], *, keep_last: bool | None = None) -> torch.Tensor:
    """Negative log-likelihood [B, K] of each completion token (0 elsewhere), from one forward pass.

    Only the last ``K = max completion length + 1`` positions go through the LM head when the model
    supports ``logits_to_keep`` (``keep_last`` None: detect it).
    """
    labels = batch["shift_labels"]
    has_label = (labels != IGNORE).any(0)
    k = labels.shape[1] - int(has_label.int().argmax()) if bool(has_label.any()) else 1
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    if keep_last is None:
        keep_last = accepts_logits_to_keep(model)
    if keep_last:
        logits = model(**inputs, logits_to_keep=k, use_cache=False).logits
    else:
        logits = model(**inputs, use_cache=False).logits[:, -k:]
    targets = labels[:, -k:]
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return nll.view(targets.shape)
