"""Reverting one expert from an RMM snapshot: a standard PEFT adapter, or full weights (``dense``).

The snapshot (a Hub ref, pinned or not, or a folder) is resolved and its lineage read first, so a
wrong reference or an unknown expert fails before anything is downloaded. The reverted adapter gets
the expert's original ``adapter_config.json`` (its r, lora_alpha, rsLoRA and patterns, hence its
exact PEFT scaling) with ``base_model_name_or_path`` / ``revision`` pointing at the pinned base;
``dense`` streams base + ΔW_i through the same sharded writer as a dense merge.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from hf_time import __version__, engine
from hf_time.api import CARRIED_FILES, MergeResult, _ref_record
from hf_time.cards import LINEAGE_FILE, sha256_file, write_json
from hf_time.errors import OutputExistsError
from hf_time.hub import MODEL_PATTERNS, PICKLE_PATTERNS, Hub
from hf_time.io import Checkpoint, atomic_output_dir, copy_files, parse_dtype, parse_size
from hf_time.lowrank.adapters import module_rank_alpha, peft_scaling
from hf_time.lowrank.cards import render_revert_card
from hf_time.lowrank.factors import LoraModule
from hf_time.lowrank.snapshot import RMM_WEIGHTS, RmmSnapshot, check_lineage, expert_index
from hf_time.lowrank.sources import LoraExpertSource
from hf_time.lowrank.writer import adapter_key, write_adapter

logger = logging.getLogger(__name__)


def expert_modules(lineage: Mapping[str, Any], index: int) -> dict[str, str]:
    """Snapshot module path -> the expert's own module path, for the modules the expert adapted."""
    missing = set(lineage["experts"][index].get("missing_modules") or ())
    out = {}
    for path, module in lineage["modules"].items():
        own = module["expert_paths"][index] if module.get("expert_paths") else (None if path in missing else path)
        if own is not None:
            out[path] = own
    return out


def _base_ref(record: Mapping[str, Any]) -> str:
    return record["ref"] if not record.get("repo_id") else f"{record['repo_id']}@{record['sha']}"


def revert(ref: str | os.PathLike, expert: int | str, *, out: str | os.PathLike, dense: bool = False,
           dtype: str | None = None, push_to: str | None = None, tag: str | None = None, private: bool | None = None,
           overwrite: bool = False, allow_pickle: bool = False, max_shard_size: int | str = "5GB", hub: Hub | None = None,
           progress: bool = True, title: str | None = None) -> MergeResult:
    """Rebuild expert ``expert`` of an RMM snapshot as a PEFT adapter (or, ``dense``, merged into the base).

    Args:
        ref: the snapshot, ``org/name[@rev]`` or a folder.
        expert: 0-based index, or the expert's name / reference as listed in the snapshot's card.
        out: output folder (must not exist unless ``overwrite``).
        dense: write base + ΔW_i as a transformers folder instead of an adapter.
        dtype: output dtype (default: the adapter's float32, or the base's for ``dense``).
        push_to, tag, private: publish the result as one commit.

    Returns:
        A :class:`hf_time.api.MergeResult` whose lineage has ``kind: "rmm_revert"``.

    Raises:
        ConfigError: ``ref`` is not an RMM snapshot.
        UnknownExpertError: no such expert (index out of range or unknown name).
        OutputExistsError: ``out`` exists and ``overwrite`` is False (before any network call).
    """
    if Path(out).exists() and not overwrite:
        raise OutputExistsError(f"output directory {Path(out).absolute()} already exists; choose another --out or pass --overwrite")
    hub = hub or Hub()
    res = hub.resolve(ref)
    lineage = check_lineage(hub.read_json(res, LINEAGE_FILE), str(res.ref))
    index = expert_index(lineage, expert)
    snap = RmmSnapshot(hub.download(res, [RMM_WEIGHTS, LINEAGE_FILE]))
    record = lineage["experts"][index]
    base = lineage["base"]
    cfg = dict(record["adapter_config"], base_model_name_or_path=base.get("repo_id") or base["ref"], revision=base.get("sha"))
    modules = {own: (lineage["modules"][path], *snap.factors(path, index)) for path, own in expert_modules(lineage, index).items()}
    out_dtype = parse_dtype(dtype)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if dense:
            files = _write_dense(tmp, hub, base, cfg, modules, out_dtype, allow_pickle, max_shard_size, progress)
        else:
            tensors = {}
            for own, (module, a, b) in modules.items():
                tensors[adapter_key(own, "A", module["embedding"])] = a.to(out_dtype or torch.float32)
                tensors[adapter_key(own, "B", module["embedding"])] = b.to(out_dtype or torch.float32)
            files = write_adapter(tmp, cfg, tensors, {"hf_time": __version__})
        expert_record = {k: v for k, v in record.items() if k != "adapter_config"}
        out_lineage = {
            "hf_time_version": __version__, "kind": "rmm_revert", "source": _ref_record(res), "index": index,
            "expert": expert_record, "base": base, "p": lineage["p"], "centered": lineage["centered"],
            "n_experts": len(lineage["experts"]), "dense": dense, "files": {f: sha256_file(tmp / f) for f in files},
        }
        write_json(tmp / LINEAGE_FILE, out_lineage)
        card_title = title or (push_to.split("/")[-1] if push_to else None)
        (tmp / "README.md").write_text(render_revert_card(out_lineage, title=card_title))
    out_dir = Path(out).absolute()
    logger.info("reverted expert %d (%s) of %s into %s", index, record["name"], res.pinned, out_dir)
    published = None
    if push_to:
        published = hub.publish(out_dir, push_to, tag=tag, private=private,
                                commit_message=f"hf_time: expert {record['name']} reverted from RMM",
                                commit_description=f"Reverted expert {index} of {res.pinned}")
    return MergeResult(out_dir=out_dir, lineage=out_lineage, published=published)


def _write_dense(tmp: Path, hub: Hub, base: Mapping[str, Any], cfg: Mapping[str, Any], modules: Mapping[str, tuple],
                 out_dtype: torch.dtype | None, allow_pickle: bool, max_shard_size: int | str, progress: bool) -> list[str]:
    """Stream base + ΔW_i into ``tmp`` as a transformers folder; returns the weight files written."""
    base_res = hub.resolve(_base_ref(base))
    base_dir = hub.download(base_res, MODEL_PATTERNS + (PICKLE_PATTERNS if allow_pickle else []))
    base_ck = Checkpoint(base_dir, allow_pickle=allow_pickle)
    factors, transposed = {}, set()
    for own, (module, a, b) in modules.items():
        r, alpha = module_rank_alpha(cfg, own)
        lora = LoraModule(a, b, peft_scaling(r, alpha, bool(cfg.get("use_rslora"))))
        factors[module["base_tensor"]] = lambda lora=lora: lora
        if module["embedding"] or cfg.get("fan_in_fan_out"):
            transposed.add(module["base_tensor"])
    source = LoraExpertSource(base_ck, factors, frozenset(transposed))
    writer = engine.make_writer(tmp, base_ck.infos, out_dtype, parse_size(max_shard_size), {"hf_time": __version__})
    dtypes = {i.name: i.torch_dtype for i in engine.writer_infos(writer)}
    buffer = torch.empty(max((i.nbytes() for i in base_ck.infos.values()), default=0), dtype=torch.uint8)
    for name in tqdm(list(base_ck.infos), desc="writing reverted model", unit="tensor", disable=not progress):
        writer.write(name, source.read_into(name, buffer).to(dtypes[name]))
    files = writer.close()
    copy_files(base_dir, tmp, CARRIED_FILES)
    if out_dtype is not None and (tmp / "config.json").is_file():  # as a dense merge does: load in that dtype
        hf_config = json.loads((tmp / "config.json").read_text())
        hf_config["dtype"] = str(out_dtype).removeprefix("torch.")
        hf_config.pop("torch_dtype", None)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return files
