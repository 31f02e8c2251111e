"""``hf-time align``: an expert re-expressed in a reference's basis, as a snapshot.

The same stages as every hf_time output: the settings checked (no network), both models pinned and
checked from metadata (:mod:`hf_time.align.inputs`), downloaded, matched (weight matching streams
one block at a time; activation matching runs both models on task texts), the expert's tensors
streamed through the permutations into shards, the permutations saved next to them
(``alignment.safetensors``), then the lineage (kind ``align``, built in
:mod:`hf_time.pipeline.artifact`), the one snapshot writer and, with ``push_to``, one commit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hf_time import __version__
from hf_time.align.activation_matching import activation_matching
from hf_time.align.activations import matching_points, moments, sample_texts, token_batches
from hf_time.align.config import MatchingConfig
from hf_time.align.inputs import ModelIn, download, resolve_pair, shared_tensors
from hf_time.align.models import check_tokenizers, load_model
from hf_time.align.perms import Alignment, permute_tensor
from hf_time.align.spec import ArchSpec, arch_spec
from hf_time.align.weight_matching import MatchResult, weight_matching
from hf_time.atomic import atomic_output_dir, check_output_free
from hf_time.errors import ConfigError
from hf_time.hub import Hub, PublishResult
from hf_time.io import Checkpoint, ShardedSafetensorsWriter, plan_shards, write_safetensors
from hf_time.lineage import ExpertRecord, Lineage, MethodRecord
from hf_time.pipeline.artifact import align_lineage, carry_base_files
from hf_time.pipeline.cards import render_card
from hf_time.pipeline.snapshot import publish_snapshot, write_snapshot

logger = logging.getLogger(__name__)

ALIGNMENT_FILE = "alignment.safetensors"
SHARD_BYTES = 5 * 10**9
PAPERS = {"weight": "https://arxiv.org/abs/2209.04836", "activation": "https://arxiv.org/abs/2209.04836"}


@dataclass(frozen=True)
class AlignResult:
    """What :func:`align` produced: the folder, its lineage, the matching, the published commit."""

    out_dir: Path
    lineage: Lineage
    match: MatchResult
    published: PublishResult | None = None


def match(reference: ModelIn, expert: ModelIn, ref_dir: Path, exp_dir: Path, config: MatchingConfig, *,
          progress: bool = True) -> MatchResult:
    """Permutations mapping the downloaded ``expert`` onto ``reference`` (weight or activation matching)."""
    if config.method == "weight":
        with Checkpoint(ref_dir) as ra, Checkpoint(exp_dir) as eb:
            return weight_matching(reference.spec, ra, eb, config, shared=shared_tensors(reference, expert),
                                   progress=progress)
    from transformers import AutoTokenizer

    check_tokenizers([ref_dir, exp_dir], [reference.name, expert.name])
    tokenizer = AutoTokenizer.from_pretrained(ref_dir)
    texts = sample_texts(config.task, config.examples, config.seed)
    batches = token_batches(tokenizer, texts, batch_size=config.batch_size, max_length=config.max_length)
    models = (load_model(ref_dir, reference.spec), load_model(exp_dir, expert.spec))
    bar = (lambda it: tqdm(it, desc="activation matching: batches", unit="batch", leave=False)) if progress else None
    stats = moments(models, batches, matching_points(reference.spec), progress=bar)
    return activation_matching(reference.spec, stats)


def write_permuted(folder: Path, spec: ArchSpec, ck: Checkpoint, alignment: Alignment, *, progress: bool = True,
                   label: str = "writing the aligned expert") -> list[str]:
    """Stream every tensor of ``ck`` through ``alignment`` into shards (dtypes and names kept); returns the files."""
    idx = alignment.indices(spec)
    writer = ShardedSafetensorsWriter(folder, plan_shards(list(ck.infos.values()), SHARD_BYTES), {"hf_time": __version__})
    for name in tqdm(list(ck.infos), desc=label, unit="tensor", disable=not progress, leave=False):
        t = ck.get(name)
        writer.write(name, permute_tensor(t, spec.tensors[name], idx).contiguous() if name in spec.tensors else t)
    return writer.close()


def save_alignment(folder: Path, alignment: Alignment, spec: ArchSpec) -> str:
    """Write the permutations (int32, compact form) as ``alignment.safetensors``; returns the file name."""
    write_safetensors(folder / ALIGNMENT_FILE, alignment.to_tensors(),
                      {"hf_time": __version__, "content": "hf_time alignment", "layers": str(spec.layers)})
    return ALIGNMENT_FILE


def load_alignment(path: str | os.PathLike) -> Alignment:
    """The permutations an ``align`` snapshot saved (its folder), or one expert's of a merge with ``--align``
    (the file ``alignment/expert-<i>.safetensors``).

    Raises:
        ConfigError: no alignment file there.
    """
    from safetensors.torch import load_file

    path = Path(path)
    path = path / ALIGNMENT_FILE if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; alignments are saved by `hf-time align`")
    tensors = load_file(path)
    layers = sum(1 for k in tensors if k.endswith(".mlp"))
    return Alignment.from_tensors(tensors, layers)


def method_record(config: MatchingConfig) -> MethodRecord:
    """The lineage's method entry of a matching: its name, summary, paper and every setting."""
    summary = ("Weight matching (Git Re-Basin): permutations maximising Σ⟨W_ref, π(W_expert)⟩ by alternating linear "
               "assignment" if config.method == "weight" else
               "Activation matching (Git Re-Basin): permutations maximising the correlation of activations on task data")
    return MethodRecord(f"{config.method}_matching", "align", summary, PAPERS[config.method], dataclasses.asdict(config))


def align(reference: str, expert: str, config: MatchingConfig = MatchingConfig(), *, out: str | os.PathLike,
          overwrite: bool = False, push_to: str | None = None, tag: str | None = None, private: bool | None = None,
          hub: Hub | None = None, progress: bool = True, title: str | None = None) -> AlignResult:
    """Map ``expert`` onto ``reference``'s basis: the same function, its units permuted like the reference's.

    Args:
        reference, expert: ``org/name[@rev]`` or folders; same architecture and shapes (task heads may differ).
        config: the matching (method, data, iterations, sketch).
        out: output folder (written atomically).
        push_to, tag, private: publish the result as one commit.

    Returns:
        An :class:`AlignResult` whose lineage has kind ``align``.

    Raises:
        ConfigError: bad settings, e.g. activation matching without ``task`` (before any network call).
        UnsupportedArchitectureError: an architecture whose symmetries hf_time does not know.
        IncompatibleExpertsError: bodies of different shapes, or different tokenizers (activation matching).
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    problems = config.problems()
    if out is None:
        problems.append("no output folder given; pass --out DIR")
    if problems:
        raise ConfigError.from_problems("invalid alignment", problems)
    check_output_free(out, overwrite=overwrite)
    hub = hub or Hub()
    if push_to:
        hub.check_publish(push_to)
    ref, (exp,) = resolve_pair(hub, reference, [expert], config.task)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        ref_dir, exp_dir = download(hub, ref), download(hub, exp)
        result = match(ref, exp, ref_dir, exp_dir, config, progress=progress)
        with Checkpoint(exp_dir) as ck:
            files = write_permuted(tmp, exp.spec, ck, result.alignment, progress=progress)
        files.append(save_alignment(tmp, result.alignment, exp.spec))
        carry_base_files(exp_dir, tmp, None)
        expert_record = ExpertRecord(**vars(exp.record), details={"architecture": exp.spec.architecture})
        lineage = align_lineage(method_record(config), ref.record, [expert_record],
                                {"operation": "permute", "alignment": result.record(config.method),
                                 "alignment_file": ALIGNMENT_FILE}, tmp, files, "model")
        write_snapshot(tmp, lineage, card=render_card(lineage, title=title, repo=push_to))
    out_dir = Path(out).absolute()
    logger.info("%s aligned to %s by %s matching into %s", exp.name, ref.name, config.method, out_dir)
    message = f"hf_time: {exp.record.short_name} aligned to {ref.record.short_name}"
    published = publish_snapshot(hub, out_dir, push_to, lineage, message=message, tag=tag, private=private)
    return AlignResult(out_dir, lineage, result, published)


def verify(folder: str | os.PathLike, expert_dir: str | os.PathLike) -> bool:
    """Whether an ``align`` snapshot holds exactly ``expert_dir``'s tensors under its saved permutations."""
    expert_dir, folder = Path(expert_dir), Path(folder)
    alignment = load_alignment(folder)
    with Checkpoint(expert_dir) as src, Checkpoint(folder) as out:
        spec = arch_spec(json.loads((expert_dir / "config.json").read_text()), src.infos, str(expert_dir))
        idx = alignment.indices(spec)
        return set(src.infos) == set(out.infos) and all(
            torch.equal(permute_tensor(src.get(n), spec.tensors[n], idx) if n in spec.tensors else src.get(n), out.get(n))
            for n in src.infos)
