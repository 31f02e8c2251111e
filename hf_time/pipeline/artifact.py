"""The artifact stage: the files an executor wrote, and the typed :class:`~hf_time.lineage.Lineage` of them.

This module is where every lineage is created: :func:`merge_lineage` from the plan that was
executed and the inputs it read (so it records what ran, with every parameter resolved), and
:func:`training_lineage` for a finetuned expert. Executors describe what they wrote with an
:class:`Output`; nothing else assembles lineage records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hf_time.align.config import to_data
from hf_time.hashing import sha256_file
from hf_time.io import copy_files
from hf_time.lineage import ExpertRecord, Lineage, MethodRecord, OutputRecord, RefRecord
from hf_time.pipeline.plan import Plan
from hf_time.pipeline.resolve import Inputs

# Files carried over from the base so the output loads with from_pretrained (config, tokenizer).
CARRIED_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
    "added_tokens.json", "chat_template.jinja", "sentencepiece.bpe.model", "spiece.model",
)


@dataclass(frozen=True)
class Output:
    """What an executor wrote into the output folder.

    Attributes:
        format: ``model``, ``adapter`` or ``rmm``.
        files: the weight files (hashed into the lineage).
        details: the format's own figures (module table, storage...).
        expert_details: per expert, figures specific to this output (reconstruction errors...).
        names: per expert, a display name (None: derived from the reference).
        state: a sequential method's state after this fold.
    """

    format: str
    files: tuple[str, ...]
    details: Mapping[str, Any] = field(default_factory=dict)
    expert_details: tuple[Mapping[str, Any], ...] = ()
    names: tuple[str | None, ...] = ()
    state: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Artifact:
    """A complete output folder (weights and carried files) and its lineage."""

    folder: Path
    lineage: Lineage


# sentence-transformers models (modules.json): the module list, its settings and each module's folder
# configuration, so the merge loads as the same SentenceTransformer (pooling, normalisation, max length).
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")


def sentence_transformers_files(src: Path) -> list[str]:
    """The non-weight files a sentence-transformers model needs besides the transformer itself."""
    modules = src / "modules.json"
    if not modules.is_file():
        return []
    files = [f for f in SENTENCE_TRANSFORMERS_FILES if (src / f).is_file()]
    try:
        entries = json.loads(modules.read_text())
    except (OSError, json.JSONDecodeError):
        return files
    for entry in entries if isinstance(entries, list) else []:
        folder = entry.get("path") if isinstance(entry, dict) else None
        if not folder or "/" in folder.strip("/") or folder.startswith(".") or not (src / folder).is_dir():
            continue
        for path in sorted((src / folder).iterdir()):
            if path.is_file() and path.suffix in (".json", ".txt"):  # a module's weights (Dense) are not merged
                files.append(f"{folder}/{path.name}")
    return files


def carry_base_files(src: Path, dst: Path, dtype: str | None) -> list[str]:
    """Copy the base's config, tokenizer and (for sentence-transformers) module files; with ``dtype``
    the config says it (the output loads in that dtype)."""
    copied = copy_files(src, dst, [*CARRIED_FILES, *sentence_transformers_files(src)])
    if dtype is not None and (dst / "config.json").is_file():
        from hf_time.io import parse_dtype

        cfg = json.loads((dst / "config.json").read_text())
        cfg["dtype"] = str(parse_dtype(dtype)).removeprefix("torch.")
        cfg.pop("torch_dtype", None)
        (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return copied


def file_hashes(folder: Path, files: Sequence[str]) -> dict[str, str]:
    return {f: sha256_file(folder / f) for f in files}


def merge_lineage(plan: Plan, inputs: Inputs, folder: Path, output: Output) -> Lineage:
    """The lineage of a merge or fold, from the plan that ran and the inputs it read."""
    method = plan.method
    tp = plan.tensor_params
    experts = []
    for i, (inp, weight) in enumerate(zip(inputs.experts, plan.recorded_weights())):
        ref = RefRecord.from_resolved(inp.res)
        public = {p.attr: p.name for p in method.parameters()}
        params = {public[k]: v for k, v in (plan.expert_params[i] if plan.expert_params else {}).items()}
        if tp is not None and not tp.layered:  # schedules of this expert's own parameters
            params.update({k: v for k, v in tp.expert_record(i).items() if k != "weight"})
        experts.append(ExpertRecord(**vars(ref), weight=weight, parameters=params,
                                    name=output.names[i] if output.names else None,
                                    details=output.expert_details[i] if output.expert_details else {}))
    record = MethodRecord(method.name, method.kind, method.summary, method.paper, plan.parameters, plan.lines)
    refs = [RefRecord.from_resolved(m.res).pinned for m in (inputs.base, *inputs.experts)]
    return Lineage(
        kind="fold" if method.kind == "sequential" else "merge", method=record,
        base=RefRecord.from_resolved(inputs.base.res), experts=tuple(experts),
        previous=None if inputs.previous is None else RefRecord.from_resolved(inputs.previous.res),
        state=output.state, slices=tp.slices_record(refs) if tp is not None and tp.layered else (),
        tokenizer=plan.tokenizer.recorded(refs) if plan.tokenizer is not None else None,
        details={"align": to_data(plan.align)} if plan.align is not None else {},
        output=OutputRecord(output.format, file_hashes(folder, output.files), plan.dtype, plan.device, output.details))


def _expert_settings(e: Any) -> dict[str, Any]:
    """An MoE expert's own settings as its lineage records them (prompts, residual scale when set)."""
    out: dict[str, Any] = {"positive_prompts": list(e.positive_prompts)}
    if e.negative_prompts:
        out["negative_prompts"] = list(e.negative_prompts)
    if e.residual_scale is not None:
        out["residual_scale"] = e.residual_scale
    return out


def moe_lineage(config: Any, architecture: str, base: RefRecord, experts: Sequence[RefRecord],
                shared: Sequence[RefRecord], folder: Path, files: Sequence[str], dtype: str | None,
                facts: Mapping[str, Any]) -> Lineage:
    """The lineage of an upcycled MoE (:mod:`hf_time.moe`): pinned inputs, each expert's prompts, the settings."""
    records = [ExpertRecord(**vars(r), parameters=_expert_settings(e)) for r, e in zip(experts, config.experts)]
    records += [ExpertRecord(**vars(r), parameters=_expert_settings(e), details={"role": "shared"})
                for r, e in zip(shared, config.shared_experts)]
    settings = {**config.to_yaml_dict(), "architecture": architecture}
    return Lineage(kind="moe", base=base, experts=tuple(records), details={"config": settings, **dict(facts)},
                   output=OutputRecord("model", file_hashes(folder, files), dtype))


def align_lineage(method: MethodRecord, reference: RefRecord | None, experts: Sequence[ExpertRecord],
                  details: Mapping[str, Any], folder: Path, files: Sequence[str], fmt: str) -> Lineage:
    """The lineage of an alignment (:mod:`hf_time.align`): an expert permuted into ``reference``'s basis, or
    experts of different inits merged (ZipIt!, PLeaS); ``details`` holds the permutations' digest."""
    return Lineage(kind="align", method=method, base=reference, experts=tuple(experts), details=dict(details),
                   output=OutputRecord(fmt, file_hashes(folder, files)))


def revert_lineage(source: RefRecord, base: RefRecord, expert: ExpertRecord, details: Mapping[str, Any],
                   folder: Path, files: Sequence[str], fmt: str, dtype: str | None) -> Lineage:
    """The lineage of one expert rebuilt from an RMM snapshot."""
    return Lineage(kind="revert", source=source, base=base, experts=(expert,), details=dict(details),
                   output=OutputRecord(fmt, file_hashes(folder, files), dtype))


def training_lineage(init: RefRecord, folder: Path, files: Sequence[str], *, fmt: str,
                     details: Mapping[str, Any], timeline: Mapping[str, Any] | None = None) -> Lineage:
    """The lineage of an expert finetuned from ``init`` (task, training config and facts in ``details``)."""
    return Lineage(kind="train", base=init, details=dict(details), timeline=None if timeline is None else dict(timeline),
                   output=OutputRecord(fmt, file_hashes(folder, files)))
