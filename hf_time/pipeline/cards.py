"""Which card a snapshot gets: chosen from its lineage (what was done, and what was written)."""

from __future__ import annotations

from hf_time.align.card import render_align_card
from hf_time.cards import render_expert_card, render_merge_card
from hf_time.lineage import Lineage
from hf_time.lowrank.cards import render_adapter_merge_card, render_rmm_card, render_revert_card
from hf_time.moe.card import render_moe_card


def render_card(lineage: Lineage, *, title: str | None = None, repo: str | None = None) -> str:
    """The README.md of a snapshot, rendered from its lineage.

    Args:
        lineage: the snapshot's lineage.
        title: the card's title (default: the renderer's own).
        repo: the repo it is published to (shown in load and revert commands).
    """
    if lineage.kind == "revert":
        return render_revert_card(lineage, title=title, repo=repo)
    if lineage.kind == "align":
        return render_align_card(lineage, title=title, repo=repo)
    if lineage.kind == "moe":
        return render_moe_card(lineage, title=title)
    if lineage.kind == "train":
        return render_expert_card(lineage, title or "Expert", adapter=lineage.output.format == "adapter")
    if lineage.output.format == "rmm":
        return render_rmm_card(lineage, title=title, repo=repo)
    if lineage.output.format == "adapter":
        return render_adapter_merge_card(lineage, title=title, repo=repo)
    return render_merge_card(lineage, title=title)
