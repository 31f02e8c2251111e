"""The diagonal Fisher information of a model on its task data, and the ``fisher.safetensors`` it is stored in.

Fisher merging (Matena & Raffel, NeurIPS 2022, https://arxiv.org/abs/2111.09832) weights every
parameter of every expert by its diagonal Fisher F_i = E_x E_{y∼p_θ(·|x)} [(∂ log p_θ(y|x)/∂θ)²],
estimated from N examples of the expert's task with one gradient per example (squares of per-example
gradients, never the square of a batch gradient). By default y is *sampled* from the model's own
predictive distribution, as in the paper; ``empirical=True`` uses the gold label instead (the
"empirical Fisher", cheaper to explain, biased).

What p_θ(y|x) is, per model kind (the project's scorers, so no classification head is needed):
* **Encoder** (head-free): p(y|x) = softmax_k(s·cos(e(x), e(d_k))) over the task's label
  descriptions d_k (s = ``logit_scale``, 20). The description embeddings are computed once with
  the model and *detached*: they act as a frozen zero-shot head, as CLIP's text embeddings do in
  the Fisher merging of FusionBench's CLIP experiments. (Deviation: training back-propagates
  through them; here only the text path carries the per-example gradient.)
* **Causal LM** (label / completion likelihood): each example is its prompt and completion (the
  verbalizer of its label for a classification task); log p(y|x) = Σ_t log p(y_t | x, y_<t) over the
  completion tokens, with y_t sampled from the model at each position (teacher forcing on the
  reference prefix) or the reference tokens with ``empirical``.

The stored file holds one float32 tensor per floating tensor of the model's checkpoint (same names
and shapes; zeros where the checkpoint tensor is not a trainable parameter) and its provenance in
the safetensors metadata (:data:`PROVENANCE_KEY`): the model, its weight-file hashes, the task and
the data's source and content key, N, sampled or empirical. The merge checks the hashes against
the expert it merges before downloading anything (:mod:`hf_time.pipeline.executors.data`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hf_time.errors import ConfigError, CorruptCheckpointError

logger = logging.getLogger(__name__)

FISHER_FILE = "fisher.safetensors"
PROVENANCE_KEY = "hf_time_fisher"
FORMAT = "hf_time.fisher/1"


@dataclass(frozen=True)
class FisherConfig:
    """How a Fisher is estimated.

    Attributes:
        n_examples: N training examples (the first N of the task's train split, in its seeded order).
        empirical: use the gold label/completion instead of sampling y from the model.
        max_length: token cap per text (encoders) or prompt + completion (causal LMs).
        logit_scale: encoders: the temperature s of the cosine logits (as in training).
        seed: seeds the sampled labels.
        word_embeddings: also estimate the word-embedding matrix (False: stored as zeros, so a Fisher
            merge averages it with the expert weights; right for experts trained with frozen word
            embeddings, hf_time's default, whose embeddings are all the base's, and ~2x faster on MiniLM).
    """

    n_examples: int = 256
    empirical: bool = False
    max_length: int = 32
    logit_scale: float = 20.0
    seed: int = 0
    word_embeddings: bool = True

    def __post_init__(self) -> None:
        problems = [p for ok, p in ((self.n_examples >= 1, f"n_examples must be >= 1, got {self.n_examples}"),
                                    (self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}"),
                                    (self.logit_scale > 0, f"logit_scale must be > 0, got {self.logit_scale}")) if not ok]
        if problems:
            raise ConfigError.from_problems("invalid Fisher settings", problems)


# -- the estimator (model and per-example losses in, squared-gradient means out) -------------------------
def diagonal_fisher(params: Mapping[str, torch.Tensor], losses: Iterator[torch.Tensor], n: int, *,
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """Mean over ``n`` per-example losses of the squared gradient of each parameter.

    Args:
        params: the trainable parameters by name (``requires_grad``).
        losses: one scalar loss per example (−log p(y|x)); each is back-propagated on its own.
        n: how many losses to take.

    Returns:
        name -> float32 tensor of the parameter's shape.
    """
    names = list(params)
    tensors = [params[k] for k in names]
    sums = [torch.zeros(t.shape, dtype=torch.float32, device=t.device) for t in tensors]
    taken = 0
    for loss in tqdm(losses, total=n, desc="Fisher", disable=not progress, leave=False):
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for acc, g in zip(sums, grads):
            if g is not None:
                acc.addcmul_(g.float(), g.float())
        taken += 1
        if taken == n:
            break
    if taken == 0:
        raise ConfigError("no examples to estimate the Fisher from; the task's train split is empty")
    return {k: s.div_(taken) for k, s in zip(names, sums)}


def encoder_losses(model, tokenizer, texts: list[str], labels: list[int], descriptions: list[str],
                   config: FisherConfig) -> Iterator[torch.Tensor]:
    """−log p(y|x) per example for a head-free encoder, y sampled from the model (or the label)."""
    from hf_time.evaluation import embed

    with torch.no_grad():
        heads = embed(model, tokenizer, descriptions, max_length=config.max_length)  # a frozen zero-shot head
    g = torch.Generator().manual_seed(config.seed)
    for text, label in zip(texts, labels):
        logp = F.log_softmax(config.logit_scale * embed(model, tokenizer, [text], max_length=config.max_length) @ heads.T,
                             dim=-1)[0]
        y = label if config.empirical else int(torch.multinomial(logp.detach().exp().cpu(), 1, generator=g))
        yield -logp[y]


def lm_losses(model, tokenizer, examples: list, config: FisherConfig) -> Iterator[torch.Tensor]:
    """−log p(completion | prompt) per example for a causal LM, tokens sampled from the model (or the reference)."""
    from hf_time.lm_encoding import IGNORE, encode_examples, pad_id_of, pad_left

    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(config.seed)
    for enc in encode_examples(examples, tokenizer, config.max_length):
        batch = {k: v.to(device) for k, v in pad_left([enc], pad_id_of(tokenizer)).items()}
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}, use_cache=False).logits
        labels = batch["shift_labels"]
        keep = labels[0] != IGNORE
        logp = F.log_softmax(logits[0, keep].float(), dim=-1)
        if config.empirical:
            targets = labels[0, keep]
        else:
            targets = torch.multinomial(logp.detach().exp().cpu(), 1, generator=g).squeeze(1).to(device)
        yield -logp.gather(1, targets.view(-1, 1)).sum()


# -- from a model folder to fisher.safetensors --------------------------------------------------------
def _checkpoint_names(folder: Path) -> dict[str, Any]:
    from hf_time.io import read_safetensors_header, weight_files

    files, is_pickle = weight_files(folder)
    if is_pickle:
        raise ConfigError(f"{folder} has only pickle weights; convert it to safetensors before computing its Fisher")
    infos: dict[str, Any] = {}
    for f in files:
        infos.update(read_safetensors_header(folder / f))
    return infos


def _by_checkpoint_name(model, infos: Mapping[str, Any]) -> dict[str, str]:
    """checkpoint tensor name -> parameter name of the loaded model (same name, or with/without its prefix)."""
    params = dict(model.named_parameters())
    prefix = getattr(model, "base_model_prefix", "") or ""
    out = {}
    for name in infos:
        for candidate in (name, name.removeprefix(prefix + "."), f"{prefix}.{name}"):
            if candidate in params:
                out[name] = candidate
                break
    return out


def compute_fisher(model_dir: str | Path, task, config: FisherConfig = FisherConfig(), *, device: str | None = None,
                   progress: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The diagonal Fisher of the model in ``model_dir`` on ``task``'s training data, by checkpoint tensor name.

    Args:
        model_dir: a full model folder (encoder or causal LM) with its tokenizer.
        task: a :class:`~hf_time.tasks.TextTask` (encoders) or an LM task (causal LMs).

    Returns:
        (tensors for :func:`save_fisher`, stats: examples used, seconds).

    Raises:
        IncompatibleTaskError: a text task on a causal LM or an LM task on an encoder.
    """
    from hf_time.errors import IncompatibleTaskError
    from hf_time.evaluation import is_causal_lm, load_model
    from hf_time.lm_task_types import is_lm_task

    folder = Path(model_dir)
    infos = _checkpoint_names(folder)
    model, tokenizer = load_model(folder, device=device)
    model.float().eval()  # eval: no dropout, so a gradient is the model's own
    causal = is_causal_lm(model)
    if causal != is_lm_task(task):
        what = "a causal LM" if causal else "an encoder"
        raise IncompatibleTaskError(f"task {task.name!r} cannot score {what} ({folder}): give an encoder a text task and a "
                                    "causal LM a classification/sft task (or a built-in *_prompt task)")
    for p in model.parameters():
        p.requires_grad_(True)
    if not config.word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    n = min(config.n_examples, len(task.train))
    if causal:
        examples = task.examples("train")[:n]
        losses = lm_losses(model, tokenizer, examples, config)
    else:
        rows = task.train.select(range(n))
        losses = encoder_losses(model, tokenizer, list(rows["text"]), list(rows["label"]),
                                list(task.label_descriptions), config)
    mapping = _by_checkpoint_name(model, infos)
    params = {p: t for p, t in model.named_parameters() if p in set(mapping.values()) and t.requires_grad}
    start = time.perf_counter()
    fisher = diagonal_fisher(params, losses, n, progress=progress)
    seconds = time.perf_counter() - start
    out = {}
    for name, info in infos.items():
        if not info.is_float:
            continue
        found = mapping.get(name) in fisher
        out[name] = fisher[mapping[name]].cpu() if found else torch.zeros(info.shape, dtype=torch.float32)
    return out, {"n_examples": n, "seconds": round(seconds, 3)}


def save_fisher(folder: str | Path, tensors: Mapping[str, torch.Tensor], provenance: Mapping[str, Any]) -> Path:
    """Write ``fisher.safetensors`` (byte-reproducible) with ``provenance`` in its metadata."""
    from hf_time.io import write_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {PROVENANCE_KEY: json.dumps({"format": FORMAT, **provenance}, sort_keys=True)}
    path = folder / FISHER_FILE
    write_safetensors(path, dict(tensors), meta)
    return path


def parse_provenance(metadata: Mapping[str, str] | None, where: str) -> dict[str, Any]:
    """The provenance stored in a Fisher file's metadata.

    Raises:
        CorruptCheckpointError: no hf_time provenance, or not JSON (named with ``where``).
    """
    raw = (metadata or {}).get(PROVENANCE_KEY)
    try:
        data = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorruptCheckpointError(f"{where} has no hf_time Fisher provenance ({PROVENANCE_KEY} metadata); "
                                     "recompute it with `hf-time fisher`")
    return data


def read_local_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance of a local ``fisher.safetensors`` (header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return parse_provenance(f.metadata(), str(path))


def weights_fingerprint(folder: str | Path) -> dict[str, dict[str, str]]:
    """The weight files of a model folder with their sha256 and git blob ids (what the Hub reports)."""
    from hf_time.hashing import git_blob_sha1, sha256_file
    from hf_time.io import weight_files

    folder = Path(folder)
    files, _ = weight_files(folder)
    return {f: {"sha256": sha256_file(folder / f), "blob": git_blob_sha1(folder / f)} for f in files}


def config_record(config: FisherConfig) -> dict[str, Any]:
    return asdict(config)



# -- checks before a merge (from headers and file ids only) --------------------------------------------
def weight_file_names(files: list[str], index: Mapping[str, Any] | None) -> list[str]:
    """The weight files of a model from its file list (and its shard index when it has one)."""
    from hf_time.io import SAFE_INDEX, SAFE_SINGLE

    if SAFE_INDEX in files and index is not None:
        return sorted(set((index.get("weight_map") or {}).values()))
    if SAFE_SINGLE in files:
        return [SAFE_SINGLE]
    return sorted(f for f in files if f.endswith(".safetensors") and "/" not in f and f != FISHER_FILE
                  and not f.startswith("adapter_"))


def _same_file(recorded: Mapping[str, str], current: Mapping[str, str]) -> bool:
    common = [k for k in ("sha256", "blob") if k in recorded and k in current]
    return bool(common) and all(recorded[k] == current[k] for k in common)


def statistic_problems(expert: str, provenance: Mapping[str, Any], current: Mapping[str, Mapping[str, str]],
                       fisher_infos: Mapping[str, Any], base_infos: Mapping[str, Any] | None,
                       base: str | None) -> list[str]:
    """Why a stored Fisher cannot be used for ``expert`` in this merge (empty: it can).

    Args:
        expert: the expert's reference as written.
        provenance: the Fisher file's provenance.
        current: the expert's weight files now, with their content ids (:meth:`Hub.file_hashes`).
        fisher_infos, base_infos: tensor infos of the Fisher file and of the merge's base.
        base: the merge's base reference (pinned), compared with the one the Fisher recorded, if any.
    """
    problems = []
    recorded = provenance.get("weights") or {}
    model = provenance.get("model", "?")
    if set(recorded) != set(current) or not all(_same_file(recorded[f], current[f]) for f in current):
        problems.append(f"fisher.safetensors of {expert} was computed on other weights ({model}): a Fisher of another "
                        f"model or revision; recompute it with `hf-time fisher {expert} --task "
                        f"{provenance.get('task', 'TASK')}`")
    recorded_base = provenance.get("base")
    if recorded_base and base and recorded_base != base:
        problems.append(f"fisher.safetensors of {expert} was computed for base {recorded_base}, this merge's base is {base}; "
                        "merge onto that base or recompute the Fisher with --base")
    if base_infos is not None:
        wanted = {k: tuple(v.shape) for k, v in base_infos.items() if v.is_float}
        have = {k: tuple(v.shape) for k, v in fisher_infos.items()}
        missing = sorted(set(wanted) - set(have))
        wrong = sorted(k for k in set(wanted) & set(have) if wanted[k] != have[k])
        if missing or wrong:
            name = (missing or wrong)[0]
            found = "absent" if missing else f"shape {have[name]}"
            problems.append(f"fisher.safetensors of {expert} does not fit the base: tensor {name!r} is {found}, the base "
                            f"has shape {wanted[name]} (a Fisher of a model of another base); recompute it")
    return problems
