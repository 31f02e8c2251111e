"""The card of an ``align`` snapshot (a permuted expert, a ZipIt! or a PLeaS merge), from its lineage."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from hf_time.cards import hub_ids, model_entry, render_template
from hf_time.lineage import Lineage


def command(lineage: Lineage) -> str:
    """The ``hf-time`` command that rebuilds this snapshot from its pinned inputs (settings left at their
    defaults are not repeated; local inputs are shown by their folder's name, as in merge cards)."""
    from hf_time.align.config import MatchingConfig, PLeaSConfig, ZipItConfig

    params = dict(lineage.method.parameters)
    op = lineage.details.get("operation", "permute")
    q = lambda r: shlex.quote(r.pinned if r.repo_id else f"./{Path(r.ref).name}")  # noqa: E731
    if op == "permute":
        parts = ["hf-time align", f"--reference {q(lineage.base)}", f"--expert {q(lineage.experts[0])}",
                 f"--method {params['method']}"]
    else:
        parts = [f"hf-time {op}"] + [f"--expert {q(e)}" for e in lineage.experts]
    parts += [f"--task {t}" for t in params.get("task") or ()]
    defaults = dataclasses.asdict({"permute": MatchingConfig, "zipit": ZipItConfig, "pleas": PLeaSConfig}[op]())
    parts += [f"--param {k}={'none' if v is None else v}" for k, v in params.items()
              if k not in ("method", "task") and k in defaults and defaults[k] != v]
    return " ".join(parts + ["--out ./out"])


def render_align_card(lineage: Lineage, title: str | None = None, repo: str | None = None) -> str:
    """README.md of an ``align`` snapshot."""
    from huggingface_hub import ModelCardData

    op = lineage.details.get("operation", "permute")
    method = lineage.method
    roles = ["expert"] if op == "permute" else [f"model {i}" for i in range(len(lineage.experts))]
    experts = [model_entry(e, role=r) for e, r in zip(lineage.experts, roles)]
    name = title or {"permute": "Aligned model", "zipit": "ZipIt! merge", "pleas": "PLeaS merge"}[op]
    data = ModelCardData(base_model=hub_ids(*lineage.experts) or None, library_name="transformers",
                         tags=["hf_time", "alignment", method.name] + ([] if op == "permute" else ["merge"]),
                         base_model_relation=None if op == "permute" else "merge")
    d = lineage.details
    card = render_template(
        "align", data, title=name, operation=op, method_name=method.name,
        summary=method.summary, paper=method.paper, parameters=dict(method.parameters),
        reference=model_entry(lineage.base) if lineage.base else None, experts=experts,
        alignment=d.get("alignment"), alignment_file=d.get("alignment_file"), blocks=d.get("blocks"),
        layers=d.get("layers"), width=(method.parameters or {}).get("width"), merged_share=d.get("merged_share"),
        heads=d.get("heads"), trunk_class=d.get("trunk_class"), load_id=repo or ".",
        all_pinned=all(r.repo_id for r in lineage.inputs()), command=command(lineage))
    return str(card)
