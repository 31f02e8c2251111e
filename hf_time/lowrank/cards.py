"""Model cards of low-rank outputs: merged adapters, RMM snapshots and reverted experts.

Rendered from ``model_cards/{adapter_merge,rmm,rmm_revert}.md`` through huggingface_hub's
``ModelCard``/``ModelCardData``, like :mod:`hf_time.cards`; no network access. Only Hub models go
into ``base_model`` (the Hub rejects paths).
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from hf_time.cards import template_text


def _entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    repo_id, sha = entry.get("repo_id"), entry.get("sha")
    link = f"[{repo_id}](https://huggingface.co/{repo_id})" if repo_id else f"`{entry['ref']}`"
    return {**entry, "link": link, "short_sha": sha[:10] if sha else None, "load_id": repo_id or entry.get("ref")}


def _hub_ids(*entries: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(e["repo_id"] for e in entries if e.get("repo_id")))


def render_adapter_merge_card(lineage: Mapping[str, Any], config_yaml: Mapping[str, Any], title: str | None = None,
                              repo: str | None = None) -> str:
    """README.md of a merged adapter (``lora_cat``, ``lora_svd``): a PEFT adapter of the base."""
    from huggingface_hub import ModelCard, ModelCardData

    base = _entry(lineage["base"])
    experts = [_entry(e) for e in lineage["experts"]]
    modules = lineage.get("modules") or {}
    ranks = sorted({m["rank"] for m in modules.values()})
    energies = {p: m["energy_kept"] for p, m in modules.items() if "energy_kept" in m}
    energy = None
    if energies:
        worst = min(energies, key=energies.get)
        energy = {"min": energies[worst], "worst": worst, "mean": sum(energies.values()) / len(energies)}
    data = ModelCardData(base_model=base.get("repo_id"), library_name="peft",
                         tags=["hf_time", "lora", "merge", lineage["method"]], base_model_relation="adapter")
    card = ModelCard.from_template(
        data, template_str=template_text("adapter_merge"), title=title or "Merged LoRA adapter", method=lineage["method"],
        summary=lineage.get("summary"), paper=lineage.get("paper"), parameters=lineage.get("parameters") or {},
        base=base, experts=experts, modules=modules, repo=repo, energy=energy,
        rank_text=" / ".join(map(str, ranks)) if ranks else "-",
        slices=any("slices" in m for m in modules.values()),
        config_yaml=yaml.safe_dump(dict(config_yaml), sort_keys=False))
    return str(card)


def render_rmm_card(lineage: Mapping[str, Any], config_yaml: Mapping[str, Any], title: str | None = None,
                    repo: str | None = None) -> str:
    """README.md of an RMM snapshot: the experts it reverts to, their errors and the storage ratio."""
    from huggingface_hub import ModelCard, ModelCardData

    base = _entry(lineage["base"])
    experts = [_entry(e) for e in lineage["experts"]]
    data = ModelCardData(base_model=_hub_ids(base, *experts) or None, library_name="hf_time",
                         tags=["hf_time", "lora", "rmm", "reversible-merge"], base_model_relation="merge")
    card = ModelCard.from_template(
        data, template_str=template_text("rmm"), title=title or "Reversible LoRA merge (RMM)", base=base, experts=experts,
        p=lineage["p"], centered=lineage["centered"], storage=lineage["storage"], summary=lineage.get("summary"),
        paper=lineage.get("paper"), n_modules=len(lineage.get("modules") or {}), tail_energy=lineage.get("tail_energy", 0.0),
        repo=repo, config_yaml=yaml.safe_dump(dict(config_yaml), sort_keys=False))
    return str(card)


def render_revert_card(lineage: Mapping[str, Any], title: str | None = None) -> str:
    """README.md of an expert reverted from an RMM snapshot (an adapter, or full weights with ``dense``)."""
    from huggingface_hub import ModelCard, ModelCardData

    base, source, expert = _entry(lineage["base"]), _entry(lineage["source"]), _entry(lineage["expert"])
    dense = bool(lineage.get("dense"))
    data = ModelCardData(
        base_model=(_hub_ids(base, expert) or None) if dense else base.get("repo_id"),
        library_name="transformers" if dense else "peft", tags=["hf_time", "lora", "rmm", "reverted"],
        base_model_relation="merge" if dense else "adapter")
    card = ModelCard.from_template(
        data, template_str=template_text("rmm_revert"), title=title or f"{expert['name']} (reverted from RMM)",
        base=base, source=source, expert=expert, index=lineage["index"], p=lineage["p"], centered=lineage["centered"],
        n_experts=lineage["n_experts"], dense=dense)
    return str(card)
