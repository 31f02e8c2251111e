"""Reading ``hf_time.json`` files written by hf_time 0.1 (lineage schema 1) as schema 2.

Schema 1 had no version field and one flat layout per ``kind`` (``merge``, ``lowrank_merge``, ``rmm``,
``fold``, ``rmm_revert``, ``timeline``, ``timeline-node``, ``timeline-expert``). Snapshots published
with it stay usable: ``revert`` reads old RMM snapshots, a fold continues an old fold, a timeline
resumes over old steps. Only :meth:`hf_time.lineage.Lineage.from_dict` calls :func:`upgrade`.
"""

from __future__ import annotations

from typing import Any, Mapping

from hf_time.errors import ConfigError

_REF_KEYS = ("ref", "repo_id", "revision", "sha")
_RMM_EXPERT_KEYS = ("reconstruction_error", "factor_error", "adapter_config", "missing_modules")


def _ref(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if d is None else {k: d.get(k) for k in _REF_KEYS}


def _expert(d: Mapping[str, Any], details_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    return {**_ref(d), "weight": d.get("weight", 1.0), "parameters": dict(d.get("parameters") or {}),
            "name": d.get("name"), "details": {k: d[k] for k in details_keys if k in d}}


def _method(d: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {"name": d["method"], "kind": kind, "summary": d.get("summary") or "", "paper": d.get("paper"),
            "parameters": dict(d.get("parameters") or {}), "lines": d.get("lines")}


def upgrade(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A schema-2 dict from a schema-1 one.

    Raises:
        ConfigError: a kind schema 1 never had (not an hf_time lineage).
    """
    kind = data.get("kind")
    files = dict(data.get("files") or {})
    common = {"schema_version": 2, "hf_time_version": data.get("hf_time_version", "0.1.0")}
    if kind == "merge":
        return {**common, "kind": "merge", "method": _method(data, "dense"), "base": _ref(data["base"]),
                "experts": [_expert(e) for e in data["experts"]],
                "output": {"format": "model", "files": files, "dtype": data.get("dtype"), "device": data.get("device")}}
    if kind == "lowrank_merge":
        return {**common, "kind": "merge", "method": _method(data, "lowrank"), "base": _ref(data["base"]),
                "experts": [_expert(e) for e in data["experts"]],
                "output": {"format": "adapter", "files": {f: None for f in files} if isinstance(data.get("files"), list)
                           else files, "details": {"modules": data.get("modules") or {}}}}
    if kind == "rmm":
        details = {k: data[k] for k in ("p", "centered", "modules", "storage", "tail_energy") if k in data}
        return {**common, "kind": "merge", "method": _method(data, "lowrank"), "base": _ref(data["base"]),
                "experts": [_expert(e, _RMM_EXPERT_KEYS) for e in data["experts"]],
                "output": {"format": "rmm", "files": files if isinstance(files, dict) else {}, "details": details}}
    if kind == "fold":
        return {**common, "kind": "fold", "method": _method(data, "sequential"), "base": _ref(data["base"]),
                "experts": [_expert(data["expert"])], "previous": _ref(data.get("previous")), "state": data.get("state"),
                "output": {"format": "model", "files": files, "dtype": data.get("dtype"), "device": data.get("device")}}
    if kind == "rmm_revert":
        return {**common, "kind": "revert", "base": _ref(data["base"]), "source": _ref(data["source"]),
                "experts": [_expert(data["expert"])],
                "details": {k: data.get(k) for k in ("index", "p", "centered", "n_experts", "dense")},
                "output": {"format": "model" if data.get("dense") else "adapter", "files": files}}
    if kind in ("timeline", "timeline-node", "timeline-expert"):
        node = dict(data.get("node") or {})
        state = node.pop("fold_state", None)
        section = {"node": node, **{k: data[k] for k in ("step", "step_key", "strategy", "accuracy", "metrics",
                                                         "base_accuracy") if k in data}}
        details = {k: data[k] for k in ("task", "task_key", "training", "stats") if k in data}
        return {**common, "kind": "train" if kind == "timeline-expert" else "merge", "state": state,
                "timeline": section, "details": details, "output": {"format": "model", "files": files}}
    raise ConfigError(f"{source} is not an hf_time lineage (kind {kind!r}); it may come from another tool")
