"""``hf-time zipit`` and ``hf-time pleas``: two models of different inits merged into a multi-head snapshot.

The same stages as every hf_time output: settings checked (no network), both models pinned and checked
from metadata, downloaded, run on task texts (activation moments; PLeaS also fits its layers on a second
pass), merged (:mod:`hf_time.align.merging`), written as a trunk plus one head per model
(:mod:`hf_time.align.multihead`), then the lineage (kind ``align``), the one snapshot writer and, with
``push_to``, one commit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from hf_time import __version__
from hf_time.align.activations import matching_points, moments, sample_texts, token_batches
from hf_time.align.config import PLeaSConfig, ZipItConfig
from hf_time.align.inputs import ModelIn, download, resolve_pair
from hf_time.align.models import check_tokenizers, load_model
from hf_time.align.merging import assemble, fit_linears, pleas_zips, zipit_zips
from hf_time.align.multihead import Head, save_multihead, trunk_class
from hf_time.atomic import atomic_output_dir, check_output_free
from hf_time.errors import ConfigError
from hf_time.hub import Hub, PublishResult
from hf_time.io import Checkpoint, copy_files
from hf_time.lineage import ExpertRecord, Lineage, MethodRecord
from hf_time.pipeline.artifact import CARRIED_FILES, align_lineage
from hf_time.pipeline.cards import render_card
from hf_time.pipeline.snapshot import publish_snapshot, write_snapshot

logger = logging.getLogger(__name__)

SUMMARIES = {
    "zipit": ("ZipIt!: features merged within and across models by activation correlation; later blocks kept per model",
              "https://arxiv.org/abs/2305.03053"),
    "pleas": ("PLeaS: activation matching, partial merging of the MLPs to a target width, layer-wise least squares",
              "https://arxiv.org/abs/2407.02447"),
}


@dataclass(frozen=True)
class MultiHeadResult:
    """What :func:`zipit` or :func:`pleas` produced: the folder, its lineage, the published commit."""

    out_dir: Path
    lineage: Lineage
    published: PublishResult | None = None


def _check(experts: Sequence[str], tasks: Sequence[str], out, overwrite: bool) -> None:
    problems = []
    if len(experts) != 2:
        problems.append(f"ZipIt! and PLeaS here merge exactly 2 models, got {len(experts)}; pass --expert twice")
    if not tasks:
        problems.append("these merges read activations: pass --task NAME (a built-in task whose texts both models read)")
    if out is None:
        problems.append("no output folder given; pass --out DIR")
    if problems:
        raise ConfigError.from_problems("invalid merge of different inits", problems)
    check_output_free(out, overwrite=overwrite)


def _run(operation: str, experts: Sequence[str], config, *, out, overwrite: bool, push_to: str | None, tag: str | None,
         private: bool | None, hub: Hub | None, progress: bool, title: str | None) -> MultiHeadResult:
    _check(experts, config.task, out, overwrite)
    hub = hub or Hub()
    if push_to:
        hub.check_publish(push_to)
    first, (second,) = resolve_pair(hub, experts[0], [experts[1]], config.task)
    inputs: list[ModelIn] = [first, second]
    spec = first.spec
    blocks = spec.layers if operation == "pleas" or config.blocks is None else config.blocks
    if blocks > spec.layers:
        raise ConfigError(f"blocks: {blocks} is more than the {spec.layers} blocks of {first.name}")
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        dirs = [download(hub, m) for m in inputs]
        check_tokenizers(dirs, [m.name for m in inputs])
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(dirs[0])
        texts = sample_texts(config.task, config.examples, config.seed)
        batches = token_batches(tokenizer, texts, batch_size=config.batch_size, max_length=config.max_length)
        models = tuple(load_model(d, m.spec) for d, m in zip(dirs, inputs))
        bar = (lambda label: (lambda it: tqdm(it, desc=label, unit="batch", leave=False))) if progress else (lambda _: None)
        points = matching_points(spec)
        full = [p for p in points if p.startswith(("res.", "mlp."))] if operation == "zipit" else []
        stats = moments(models, batches, points, full=full, progress=bar(f"{operation}: activations"))
        overrides, facts = None, {}
        if operation == "zipit":
            zips = zipit_zips(spec, stats, blocks, alpha=config.alpha, beta=config.beta)
        else:
            zips, kinds = pleas_zips(spec, stats, config.width)
            overrides = fit_linears(spec, models, batches, zips, kinds, config.ridge, progress=bar("pleas: least squares"))
            merged = int((kinds["mlp.0"] == 0).sum())
            facts = {"intermediate_size": zips["mlp.0"].width, "merged_share": f"{100 * merged / spec.intermediate:.0f}%"}
        cks = [Checkpoint(d) for d in dirs]
        try:
            trunk, own = assemble(spec, [m.spec for m in inputs], cks, zips, blocks, overrides)
        finally:
            for ck in cks:
                ck.close()
        trunk_config = {**first.hf_config, "architectures": [trunk_class(spec.model_type)], "num_hidden_layers": blocks,
                        "intermediate_size": facts.get("intermediate_size", spec.intermediate)}
        heads = [Head(m.record.short_name, m.hf_config, tensors, zips["res"].unmerge_index(i))
                 for i, (m, tensors) in enumerate(zip(inputs, own))]
        files = save_multihead(tmp, trunk, trunk_config, heads, blocks, {"hf_time": __version__})
        copy_files(dirs[0], tmp, [f for f in CARRIED_FILES if f != "config.json"])
        summary, paper = SUMMARIES[operation]
        method = MethodRecord(operation, "align", summary, paper, dataclasses.asdict(config))
        details = {"operation": operation, "blocks": blocks, "layers": spec.layers, "tasks": list(config.task),
                   "trunk_class": trunk_class(spec.model_type), **facts,
                   "heads": [{"name": h.name, "architecture": (h.config.get("architectures") or ["?"])[0]} for h in heads]}
        records = [ExpertRecord(**vars(m.record), details={"architecture": m.spec.architecture}) for m in inputs]
        lineage = align_lineage(method, None, records, details, tmp, files, "multihead")
        write_snapshot(tmp, lineage, card=render_card(lineage, title=title, repo=push_to))
    out_dir = Path(out).absolute()
    logger.info("%s merged %s into %s", operation, " and ".join(m.name for m in inputs), out_dir)
    message = f"hf_time: {operation} of {len(inputs)} models"
    published = publish_snapshot(hub, out_dir, push_to, lineage, message=message, tag=tag, private=private)
    return MultiHeadResult(out_dir, lineage, published)


def zipit(experts: Sequence[str], config: ZipItConfig, *, out: str | os.PathLike, overwrite: bool = False,
          push_to: str | None = None, tag: str | None = None, private: bool | None = None, hub: Hub | None = None,
          progress: bool = True, title: str | None = None) -> MultiHeadResult:
    """Merge two models of different inits by ZipIt!, zipping the first ``config.blocks`` blocks.

    Args:
        experts: two references (``org/name[@rev]`` or folders) of one architecture and shape.
        config: the tasks whose texts give the correlations, ``blocks``, ``alpha``, ``beta``...
        out: output folder: a trunk plus one head per model (:mod:`hf_time.align.multihead`).

    Raises:
        ConfigError: not two models, no task, ``blocks`` beyond the depth (before any download).
        UnsupportedArchitectureError, IncompatibleExpertsError: from metadata, before any download.
    """
    return _run("zipit", experts, config, out=out, overwrite=overwrite, push_to=push_to, tag=tag, private=private,
                hub=hub, progress=progress, title=title)


def pleas(experts: Sequence[str], config: PLeaSConfig, *, out: str | os.PathLike, overwrite: bool = False,
          push_to: str | None = None, tag: str | None = None, private: bool | None = None, hub: Hub | None = None,
          progress: bool = True, title: str | None = None) -> MultiHeadResult:
    """Merge two models of different inits by PLeaS to an MLP width of ``config.width`` × one model's.

    Raises:
        ConfigError: not two models or no task (before any download).
        UnsupportedArchitectureError, IncompatibleExpertsError: from metadata, before any download.
    """
    return _run("pleas", experts, config, out=out, overwrite=overwrite, push_to=push_to, tag=tag, private=private,
                hub=hub, progress=progress, title=title)
