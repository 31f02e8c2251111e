"""A shared trunk with one head per model: how ZipIt! and PLeaS merges of models of different inits are stored.

Layout of the folder (no remote code; every weight file is plain safetensors)::

    config.json, model.safetensors   the trunk: a standard bare model (BertModel, LlamaModel...) holding the
                                     merged embeddings and the first ``trunk_layers`` merged blocks; loads
                                     with ``AutoModel.from_pretrained``
    heads/<i>/config.json            model i's own config, unchanged
    heads/<i>/model.safetensors      model i's own tensors after the trunk: its blocks trunk_layers..L-1
                                     and what follows them (final norm, pooler, task head), original names
    heads/<i>/unmerge.safetensors    ``index`` [hidden]: the trunk feature each of model i's residual dims
                                     reads (ZipIt!'s unmerge U_i as an index; a permutation for PLeaS)
    multihead.json                   the format, ``trunk_layers`` and the heads in order

:class:`MultiHeadModel` is the small head module that runs it: the trunk once, then for every model its
own architecture (its config's class) with the embeddings replaced by the trunk's output gathered
through ``unmerge`` and its first ``trunk_layers`` blocks removed. It returns each model's usual
output (logits for a classifier or an LM, hidden states for a bare encoder), in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from hf_time.io import write_safetensors

FORMAT = "hf_time.multihead"
MANIFEST = "multihead.json"
# family -> (embedding module, block list) inside the base model
_PARTS = {"bert": ("embeddings", "encoder.layer"), "llama": ("embed_tokens", "layers")}


@dataclass(frozen=True)
class Head:
    """One model's part after the trunk: its config, its own tensors and its unmerge index."""

    name: str
    config: Mapping[str, Any]
    tensors: Mapping[str, torch.Tensor]
    unmerge: torch.Tensor


def trunk_class(model_type: str) -> str:
    """The bare model class of a model type (``bert`` -> ``BertModel``)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return MODEL_MAPPING_NAMES[model_type]


def save_multihead(folder: Path, trunk: Mapping[str, torch.Tensor], trunk_config: Mapping[str, Any], heads: Sequence[Head],
                   trunk_layers: int, metadata: Mapping[str, str]) -> list[str]:
    """Write the trunk, every head and the manifest into ``folder``; returns the weight files written."""
    (folder / "config.json").write_text(json.dumps(dict(trunk_config), indent=2, sort_keys=True) + "\n")
    write_safetensors(folder / "model.safetensors", {k: v.contiguous() for k, v in trunk.items()}, metadata)
    files = ["model.safetensors"]
    entries = []
    for i, head in enumerate(heads):
        sub = folder / "heads" / str(i)
        sub.mkdir(parents=True)
        (sub / "config.json").write_text(json.dumps(dict(head.config), indent=2, sort_keys=True) + "\n")
        write_safetensors(sub / "model.safetensors", {k: v.contiguous() for k, v in head.tensors.items()}, metadata)
        write_safetensors(sub / "unmerge.safetensors", {"index": head.unmerge.to(torch.int64).contiguous()}, metadata)
        files += [f"heads/{i}/model.safetensors", f"heads/{i}/unmerge.safetensors"]
        entries.append({"folder": f"heads/{i}", "name": head.name,
                        "architecture": (head.config.get("architectures") or ["?"])[0]})
    manifest = {"format": FORMAT, "version": 1, "trunk_layers": trunk_layers, "heads": entries}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return files


class _Injected(nn.Module):
    """Stands in for a head's embeddings: returns the trunk's output, gathered into this model's basis."""

    def __init__(self):
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:  # the embeddings' arguments are not needed
        return self.value


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, dotted: str, value: nn.Module) -> None:
    *parents, last = dotted.split(".")
    setattr(_get(module, ".".join(parents)) if parents else module, last, value)


class MultiHeadModel(nn.Module):
    """The trunk and one head per model; ``forward`` returns each model's output, in order.

    Args:
        trunk: the bare model holding the merged blocks.
        heads: each model's architecture with its first blocks removed and its embeddings injected.
        unmerge: per head, the trunk feature each of its residual dims reads.
        family: ``bert`` or ``llama``.
    """

    def __init__(self, trunk: nn.Module, heads: Sequence[nn.Module], unmerge: Sequence[torch.Tensor], family: str):
        super().__init__()
        self.trunk, self.heads, self.family = trunk, nn.ModuleList(heads), family
        for i, u in enumerate(unmerge):
            self.register_buffer(f"unmerge_{i}", u.to(torch.long), persistent=False)

    @classmethod
    def from_pretrained(cls, ref: str | Path) -> "MultiHeadModel":
        """Load a folder written by :func:`save_multihead`, or a Hub repo holding one (float32, eval mode).

        Raises:
            ValueError: not a multi-head folder, or a head whose weights do not fit its config.
        """
        import transformers
        from safetensors.torch import load_file

        from hf_time.align.spec import BERT_TYPES

        folder = Path(ref)
        if not folder.is_dir():  # a Hub reference: pinned and downloaded by hf_time.hub, like every input
            from hf_time.hub import Hub

            hub = Hub()
            folder = hub.download(hub.resolve(str(ref)))
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{folder} is not an hf_time multi-head folder (no {MANIFEST} of format {FORMAT})")
        k = int(manifest["trunk_layers"])
        trunk = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        family = "bert" if trunk.config.model_type in BERT_TYPES else "llama"
        if family == "llama":
            trunk.norm = nn.Identity()  # heads apply their own final norm to the residual stream
        embed, blocks = _PARTS[family]
        heads, unmerge = [], []
        for entry in manifest["heads"]:
            sub = folder / entry["folder"]
            config = transformers.AutoConfig.from_pretrained(sub)
            model = getattr(transformers, entry["architecture"])(config)
            base = model.base_model
            prefix = f"{model.base_model_prefix}." if base is not model else ""
            missing, unexpected = model.load_state_dict(load_file(sub / "model.safetensors"), strict=False)
            own = {f"{prefix}{embed}.", *(f"{prefix}{blocks}.{i}." for i in range(k))}
            stray = [m for m in missing if not m.startswith(tuple(own)) and not m.endswith("position_ids")]
            if stray or unexpected:
                raise ValueError(f"{sub}: weights do not fit {entry['architecture']} (missing {stray[:3]}, "
                                 f"unexpected {list(unexpected)[:3]})")
            _set(base, blocks, nn.ModuleList(list(_get(base, blocks))[k:]))
            _set(base, embed, _Injected())
            heads.append(model.eval())
            unmerge.append(load_file(sub / "unmerge.safetensors")["index"])
        return cls(trunk, heads, unmerge, family).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> list:
        """Each model's output for the same tokens (``token_type_ids`` and the like go to the trunk too)."""
        extra = {"use_cache": False} if self.family == "llama" else {}
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask, **kwargs, **extra).last_hidden_state
        outputs = []
        for i, head in enumerate(self.heads):
            embed = _get(head.base_model, _PARTS[self.family][0])
            embed.value = hidden.index_select(-1, getattr(self, f"unmerge_{i}"))
            try:
                outputs.append(head(input_ids=input_ids, attention_mask=attention_mask, **kwargs, **extra))
            finally:
                embed.value = None
        return outputs
