"""Head-free scoring: every model is scored on every task against natural-language label descriptions.

No classification head is trained, so a base model, an expert and any merge of them are scored the
same way on every task, seen or held out, as CLIP is in TIME:

* **Encoder** (BertModel-like, e.g. MiniLM): texts and label descriptions are embedded by mean
  pooling the last hidden states over real tokens and L2-normalising (the sentence-transformers
  recipe); the prediction is the description with the highest cosine similarity.
* **Causal LM**: each description is scored as a continuation of a prompt built from the text, by
  its summed token log-likelihood; the prediction is the highest-scoring description.

Causal-LM tasks (prompt classification, instruction tuning; :mod:`hf_time.lm_task_types`) are scored
by :mod:`hf_time.lm_evaluation`; :func:`evaluate_tasks` takes tasks of every kind and returns each
task's headline score, :func:`evaluate_results` the full :class:`TaskResult` of each.

Accuracy goes through the local `evaluate` module shipped in :mod:`hf_time.metrics` (offline).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from hf_time.errors import IncompatibleTaskError, RepoNotFoundError
from hf_time.lm_evaluation import TaskResult, evaluate_lm_task
from hf_time.lm_task_types import is_lm_task
from hf_time.metrics import ACCURACY_MODULE
from hf_time.progress import SEP, current_subject, libraries_quiet
from hf_time.progress import enabled as bars_enabled
from hf_time.progress import label as bar_label
from hf_time.tasks import TextTask

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 32  # the CPU benchmark setting of offline-assets.md; raise it on a GPU
DEFAULT_PROMPT = "{text}\nThis text is"
_CAUSAL_CLASSES = {c for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for c in ((v,) if isinstance(v, str) else v)}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [B, L, H] over the positions where ``attention_mask`` [B, L] is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def embed(model: PreTrainedModel, tokenizer, texts: Sequence[str], *, max_length: int) -> torch.Tensor:
    """L2-normalised mean-pooled embeddings [N, H] of one batch, with whatever grad mode is active."""
    device = next(model.parameters()).device
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    hidden = model(**enc).last_hidden_state
    return F.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1)


def is_causal_lm(model: PreTrainedModel) -> bool:
    """Whether ``model`` is a causal language model (scored by likelihood rather than embeddings)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__ in _CAUSAL_CLASSES


def merge_adapter(model, adapter_dir: str | Path):
    """``model`` with the PEFT adapter in ``adapter_dir`` merged into its weights (``merge_and_unload``)."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated is_gradient_checkpointing (upstream; harmless).
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def is_causal_config(config) -> bool:
    """Whether a model config's ``architectures`` name a causal-LM class."""
    return any(a in _CAUSAL_CLASSES for a in (getattr(config, "architectures", None) or []))


def load_model(model_dir: str | Path, *, device: str | torch.device | None = None):
    """Load a model folder (full weights or a PEFT adapter) and its tokenizer for scoring.

    Causal-LM checkpoints (per ``config.architectures``) load with ``AutoModelForCausalLM``, anything
    else with ``AutoModel``. An adapter folder is loaded onto its base and merged, so scoring runs at
    full speed.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``.

    Raises:
        RepoNotFoundError: ``model_dir`` does not exist.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise RepoNotFoundError(f"model folder {path} does not exist")
    adapter = path / "adapter_config.json"
    base_dir = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.exists() else str(path)
    auto = AutoModelForCausalLM if is_causal_config(AutoConfig.from_pretrained(base_dir)) else AutoModel
    model = auto.from_pretrained(base_dir)
    if adapter.exists():
        model = merge_adapter(model, path)
    tok_dir = path if (path / "tokenizer_config.json").exists() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    return model.to(resolve_device(device)).eval(), tokenizer


@torch.inference_mode()
def encoder_scores(model, tokenizer, texts: Sequence[str], descriptions: Sequence[str], *, batch_size: int = 64,
                   max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False) -> torch.Tensor:
    """Cosine similarities [N, K] between text and description embeddings."""
    labels = embed(model, tokenizer, descriptions, max_length=max_length)
    chunks = [texts[i: i + batch_size] for i in range(0, len(texts), batch_size)]
    rows = [embed(model, tokenizer, c, max_length=max_length) @ labels.T
            for c in tqdm(chunks, desc="scoring", disable=not progress, leave=False)]
    return torch.cat(rows).float().cpu() if rows else torch.empty(0, len(descriptions))


@torch.inference_mode()
def causal_lm_scores(model, tokenizer, texts: Sequence[str], descriptions: Sequence[str], *, batch_size: int = 64,
                     max_length: int = DEFAULT_MAX_LENGTH, prompt_template: str = DEFAULT_PROMPT,
                     progress: bool = False) -> torch.Tensor:
    """Summed log-likelihood [N, K] of ``" " + description`` after ``prompt_template.format(text=...)``.

    The text is truncated to ``max_length`` tokens before the template's tail is appended, so the
    continuation always follows the full prompt. Pieces are tokenized separately (the text with the
    tokenizer's special tokens, the rest without), which keeps the continuation's tokens identical
    for every text. Sequences are right-padded, so positions need no adjustment.
    """
    device = next(model.parameters()).device
    head, _, tail = prompt_template.partition("{text}")
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    cont_ids = [tokenizer(" " + d, add_special_tokens=False)["input_ids"] for d in descriptions]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    per_batch = max(1, batch_size // len(descriptions))
    out = []
    for start in tqdm(range(0, len(texts), per_batch), desc="scoring", disable=not progress, leave=False):
        chunk = texts[start: start + per_batch]
        prompts = tokenizer([head + t for t in chunk], truncation=True, max_length=max_length)["input_ids"]
        seqs, spans = [], []
        for p in prompts:
            for c in cont_ids:
                spans.append((len(p) + len(tail_ids), len(c)))
                seqs.append(p + tail_ids + c)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logp = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1)
        # Token at position j is predicted by the logits at position j - 1.
        token_logp = logp[:, :-1].gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
        scores = [token_logp[i, s - 1: s - 1 + n].sum() for i, (s, n) in enumerate(spans)]
        out.append(torch.stack(scores).view(len(chunk), len(descriptions)))
    return torch.cat(out) if out else torch.empty(0, len(descriptions))


def predict(model, tokenizer, texts: Sequence[str], descriptions: Sequence[str], *, batch_size: int = 64,
            max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False) -> list[int]:
    """Index of the best-matching description for each text (encoder or causal LM)."""
    scorer = causal_lm_scores if is_causal_lm(model) else encoder_scores
    scores = scorer(model, tokenizer, list(texts), list(descriptions), batch_size=batch_size, max_length=max_length,
                    progress=progress)
    return scores.argmax(-1).tolist()


@functools.lru_cache(maxsize=1)
def _accuracy_metric():
    import evaluate  # slow to import (~5 s): only when accuracy is first computed

    return evaluate.load(str(ACCURACY_MODULE), keep_in_memory=True)


def compute_accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Accuracy through the local `evaluate` module (loaded once per process)."""
    return float(_accuracy_metric().compute(predictions=list(predictions), references=list(references))["accuracy"])


def accuracy_on_task(model_or_dir, tokenizer, task: TextTask, *, batch_size: int = 64,
                     max_length: int = DEFAULT_MAX_LENGTH, device: str | torch.device | None = None,
                     split: str = "test", progress: bool = False) -> float:
    """Head-free accuracy of a model on one split of a task.

    Args:
        model_or_dir: a loaded model (used where it is, restored to its train/eval mode after) or a
            folder for :func:`load_model`.
        tokenizer: the model's tokenizer; may be None when ``model_or_dir`` is a folder.
        task: the task; its ``label_descriptions`` are the candidates.
        batch_size: sequences per forward pass.
        max_length: token cap per text.
        device: where a folder is loaded (default: CUDA if available); ignored for a loaded model.
        split: ``"test"`` or ``"train"``.
        progress: show a progress bar.

    Returns:
        Accuracy in [0, 1].
    """
    if isinstance(model_or_dir, (str, Path)):
        model, loaded_tok = load_model(model_or_dir, device=device)
        tokenizer = loaded_tok if tokenizer is None else tokenizer
    else:
        model = model_or_dir
    data = getattr(task, split)
    was_training = model.training
    model.eval()
    try:
        preds = predict(model, tokenizer, data["text"], task.label_descriptions, batch_size=batch_size,
                        max_length=max_length, progress=progress)
    finally:
        model.train(was_training)
    return compute_accuracy(preds, data["label"])


def folder_name(model_dir: str | Path) -> str:
    """A model folder as a person knows it: a Hub download (``.../models--org--name/snapshots/<sha>``) by
    its repo id, not the sha; any other folder by its name."""
    path = Path(model_dir)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")
    return path.name


@libraries_quiet()  # transformers' "Loading weights" bar: the labelled evaluation bar covers it
def evaluate_results(model_dir: str | Path, tasks: Sequence, *, batch_size: int = 64,
                     max_length: int = DEFAULT_MAX_LENGTH, device: str | torch.device | None = None) -> dict[str, TaskResult]:
    """Load a model folder once and score it on each task's test split, keyed by task name.

    Args:
        model_dir: a transformers folder or a PEFT adapter folder.
        tasks: text tasks and/or causal-LM tasks (the latter need a causal-LM model).
        batch_size: sequences per forward pass.
        max_length: token cap per text (text tasks) or per prompt + completion (causal-LM tasks).
        device: where the model is loaded (default: CUDA if available).

    Raises:
        IncompatibleTaskError: causal-LM tasks and a model that is not a causal LM (checked before
            any scoring).
    """
    model, tokenizer = load_model(model_dir, device=device)
    lm_tasks = [t.name for t in tasks if is_lm_task(t)]
    if lm_tasks and not is_causal_lm(model):
        raise IncompatibleTaskError(f"tasks {lm_tasks} are generation tasks but {model_dir} holds "
                                    f"{type(model).__name__}, not a causal LM; score them with a causal-LM model")
    results = {}
    # Named in words (hf_time.progress.subject) where the caller knows them: a folder name can be a content key.
    n = len(tasks)
    desc = bar_label(f"evaluating {current_subject(folder_name(model_dir))}{SEP}{n} task{'s' if n != 1 else ''}")
    bar = tqdm(tasks, desc=desc, unit="task", leave=False, disable=not bars_enabled())
    for task in bar:
        bar.set_postfix_str(task.name, refresh=False)
        if is_lm_task(task):
            result = evaluate_lm_task(model, tokenizer, task, max_length=max_length, batch_size=batch_size)
        else:
            acc = accuracy_on_task(model, tokenizer, task, batch_size=batch_size, max_length=max_length)
            result = TaskResult(task.name, "accuracy", acc, len(task.test), accuracy=acc, truncated=None)
        results[task.name] = result
        logger.info("%s on %s: %s %.3f", model_dir, task.name, result.metric, result.score)
    return results


def evaluate_tasks(model_dir: str | Path, tasks: Sequence, *, batch_size: int = 64,
                   max_length: int = DEFAULT_MAX_LENGTH, device: str | torch.device | None = None) -> dict[str, float]:
    """Each task's headline score (accuracy for classification), keyed by task name.

    The same as :func:`evaluate_results` reduced to ``TaskResult.score``; text and causal-LM tasks
    may be mixed.
    """
    results = evaluate_results(model_dir, tasks, batch_size=batch_size, max_length=max_length, device=device)
    return {name: r.score for name, r in results.items()}
