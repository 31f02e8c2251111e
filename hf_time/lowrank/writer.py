"""Writing standard PEFT adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``).

Outputs of hf_time's adapter methods fold every scaling into the factors, so their config says
scaling 1: ``lora_alpha = r`` per module, no rsLoRA (``alpha_pattern`` mirrors ``rank_pattern``
when ranks differ between modules). Keys are PEFT's (``base_model.model.<path>.lora_A.weight``...),
so ``PeftModel.from_pretrained`` loads the folder and computes exactly B @ A for every module.

``target_modules`` is the list of leaf names (``["q_proj", "v_proj"]``) when those cover exactly the
adapted modules of the base, else the list of full module paths, so PEFT never creates a module the
file has no factors for. Writing goes into a folder the caller made (normally the temporary folder
of :func:`hf_time.io.atomic_output_dir`), so a failed write never leaves a half adapter behind.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from hf_time.io import TensorInfo
from hf_time.lowrank.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX

# Fields reset on every written config: they described how the inputs were trained or laid out.
_RESET = {
    "use_rslora": False, "use_dora": False, "lora_bias": False, "bias": "none", "modules_to_save": None,
    "layers_to_transform": None, "layers_pattern": None, "exclude_modules": None, "init_lora_weights": True,
    "inference_mode": True, "trainable_token_indices": None, "target_parameters": None,
}


def adapter_key(path: str, factor: str, embedding: bool) -> str:
    """PEFT's saved key of factor ``"A"`` or ``"B"`` of module ``path``."""
    return f"{PEFT_PREFIX}{path}.lora_embedding_{factor}" if embedding else f"{PEFT_PREFIX}{path}.lora_{factor}.weight"


def target_modules(paths: Iterable[str], targets: Mapping[str, str], base_infos: Mapping[str, TensorInfo]) -> list[str]:
    """Leaf names when they select exactly the adapted modules of the base, else full module paths.

    Args:
        paths: the adapted module paths.
        targets: module path -> base tensor name.
        base_infos: the base's tensors (to count how many modules a leaf name would select).
    """
    paths = sorted(paths)
    by_leaf = collections.Counter(p.rsplit(".", 1)[-1] for p in paths)
    for leaf, count in by_leaf.items():
        selected = sum(1 for n, i in base_infos.items() if len(i.shape) == 2 and (n == f"{leaf}.weight" or n.endswith(f".{leaf}.weight")))
        if selected != count:
            return paths
    if len({targets[p] for p in paths}) != len(paths):
        return paths
    return sorted(by_leaf)


def adapter_config(template: Mapping[str, Any], *, ranks: Mapping[str, int], targets: list[str], base_model: str | None,
                   revision: str | None) -> dict[str, Any]:
    """A LoRA config with scaling 1 for every module (alpha = r), based on an input adapter's config.

    Args:
        template: an input adapter's config (task type, fan_in_fan_out, dropout... are kept).
        ranks: module path -> output rank.
        targets: ``target_modules`` (see :func:`target_modules`).
        base_model: ``base_model_name_or_path`` (the merge base's repo id or folder).
        revision: the base's commit sha (PEFT's ``revision``), or None.
    """
    common = collections.Counter(ranks.values()).most_common(1)[0][0] if ranks else 8
    pattern = {re.escape(p): r for p, r in sorted(ranks.items()) if r != common}
    cfg = {k: v for k, v in template.items()}
    cfg.update(_RESET)
    cfg.update(r=common, lora_alpha=common, rank_pattern=pattern, alpha_pattern=dict(pattern), target_modules=targets,
               base_model_name_or_path=base_model, revision=revision, peft_type="LORA")
    return cfg


def write_adapter(folder: str | Path, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                  metadata: Mapping[str, str] | None = None) -> list[str]:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into an existing folder.

    Returns:
        The written file names.
    """
    from hf_time.io import write_safetensors

    folder = Path(folder)
    write_safetensors(folder / ADAPTER_WEIGHTS, tensors, metadata)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    return [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
