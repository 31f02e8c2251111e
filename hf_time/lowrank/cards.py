"""Model cards of low-rank outputs: merged adapters, RMM snapshots and reverted experts.

Rendered from ``model_cards/{adapter_merge,rmm,rmm_revert}.md`` through huggingface_hub's
``ModelCard``/``ModelCardData``, from the output's :class:`~hf_time.lineage.Lineage`, like
:mod:`hf_time.cards`; no network access. Only Hub models go into ``base_model`` (the Hub rejects paths).
"""

from __future__ import annotations

from hf_time.cards import config_yaml, hub_ids, model_entry, render_template
from hf_time.lineage import ExpertRecord, Lineage


def _expert(e: ExpertRecord) -> dict:
    return model_entry(e, weight=e.weight, name=e.name or e.short_name, **dict(e.details))


def render_adapter_merge_card(lineage: Lineage, title: str | None = None, repo: str | None = None) -> str:
    """README.md of a merged adapter (``lora_cat``, ``lora_svd``): a PEFT adapter of the base."""
    from huggingface_hub import ModelCardData

    method = lineage.method
    base = model_entry(lineage.base)
    experts = [_expert(e) for e in lineage.experts]
    modules = dict(lineage.output.details.get("modules") or {})
    ranks = sorted({m["rank"] for m in modules.values()})
    energies = {p: m["energy_kept"] for p, m in modules.items() if "energy_kept" in m}
    energy = None
    if energies:
        worst = min(energies, key=energies.get)
        energy = {"min": energies[worst], "worst": worst, "mean": sum(energies.values()) / len(energies)}
    data = ModelCardData(base_model=lineage.base.repo_id, library_name="peft",
                         tags=["hf_time", "lora", "merge", method.name], base_model_relation="adapter")
    card = render_template(
        "adapter_merge", data, title=title or "Merged LoRA adapter", method=method.name,
        summary=method.summary, paper=method.paper, parameters=dict(method.parameters), base=base, experts=experts,
        modules=modules, repo=repo, energy=energy, rank_text=" / ".join(map(str, ranks)) if ranks else "-",
        slices=any("slices" in m for m in modules.values()), config_yaml=config_yaml(lineage))
    return str(card)


def render_rmm_card(lineage: Lineage, title: str | None = None, repo: str | None = None) -> str:
    """README.md of an RMM snapshot: the experts it reverts to, their errors and the storage ratio."""
    from huggingface_hub import ModelCardData

    details = lineage.output.details
    data = ModelCardData(base_model=hub_ids(lineage.base, *lineage.experts) or None, library_name="hf_time",
                         tags=["hf_time", "lora", "rmm", "reversible-merge"], base_model_relation="merge")
    card = render_template(
        "rmm", data, title=title or "Reversible LoRA merge (RMM)",
        base=model_entry(lineage.base), experts=[_expert(e) for e in lineage.experts], p=details["p"],
        centered=details["centered"], storage=details["storage"], summary=lineage.method.summary,
        paper=lineage.method.paper, n_modules=len(details.get("modules") or {}),
        tail_energy=details.get("tail_energy", 0.0), repo=repo, config_yaml=config_yaml(lineage))
    return str(card)


def render_revert_card(lineage: Lineage, title: str | None = None, repo: str | None = None) -> str:
    """README.md of an expert reverted from an RMM snapshot (an adapter, or full weights with ``dense``)."""
    from huggingface_hub import ModelCardData

    details = lineage.details
    expert = _expert(lineage.experts[0])
    dense = bool(details.get("dense"))
    data = ModelCardData(
        base_model=(hub_ids(lineage.base, *lineage.experts) or None) if dense else lineage.base.repo_id,
        library_name="transformers" if dense else "peft", tags=["hf_time", "lora", "rmm", "reverted"],
        base_model_relation="merge" if dense else "adapter")
    card = render_template(
        "rmm_revert", data, title=title or f"{expert['name']} (reverted from RMM)",
        base=model_entry(lineage.base), source=model_entry(lineage.source), expert=expert, index=details["index"],
        p=details["p"], centered=details["centered"], n_experts=details["n_experts"], dense=dense)
    return str(card)
