"""``hf-time merge --align weight|activation``: experts of other inits aligned to the base on the fly.

The dense executor calls :func:`check_alignable` when it binds the plan (from headers: nothing is
downloaded yet) and :func:`align_experts` once the models are open: each full expert is matched to
the base (the reference) and read through its permutations (:class:`PermutedSource`), so the merge
method sees the experts in the base's basis. Each expert's permutations are saved in the output
(``alignment/expert-<i>.safetensors``) and its lineage record carries their digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from hf_time import __version__
from hf_time.align.activation_matching import activation_matching
from hf_time.align.activations import matching_points, moments, sample_texts, token_batches
from hf_time.align.config import MatchingConfig
from hf_time.align.models import check_tokenizers, load_model
from hf_time.align.perms import Alignment, permute_tensor
from hf_time.align.spec import ArchSpec, arch_spec, check_same_shape
from hf_time.align.weight_matching import MatchResult, weight_matching
from hf_time.errors import ConfigError
from hf_time.io import Checkpoint, TensorInfo, write_safetensors


class PermutedSource:
    """A checkpoint read through an alignment: every tensor in the reference's basis (a weight source)."""

    def __init__(self, ck: Checkpoint, spec: ArchSpec, alignment: Alignment):
        self.ck, self.spec, self.idx = ck, spec, alignment.indices(spec)

    @property
    def infos(self) -> Mapping[str, TensorInfo]:
        return self.ck.infos

    @property
    def folder(self) -> Path:
        return self.ck.folder

    def get(self, name: str) -> torch.Tensor:
        t = self.ck.get(name)
        return permute_tensor(t, self.spec.tensors[name], self.idx) if name in self.spec.tensors else t

    def read_into(self, name: str, buffer: torch.Tensor) -> torch.Tensor:
        return self.get(name)  # a permuted copy: the engine converts it to the compute dtype


def check_alignable(inputs) -> None:
    """Before any download: every expert a full model whose layout matches the base's.

    Raises:
        ConfigError: an adapter among the experts (an adapter shares its base's basis by construction).
        UnsupportedArchitectureError, IncompatibleExpertsError: from configs and headers.
    """
    base = inputs.base
    if base.infos is None:
        raise ConfigError(f"--align reads safetensors headers; {base.name} has none (pickle weights)")
    spec = arch_spec(base.hf_config, base.infos, base.name)
    for e in inputs.experts:
        if e.adapter is not None:
            raise ConfigError(f"--align aligns full models of other inits; {e.name} is a LoRA adapter of the base, already "
                              "in its basis: drop --align or merge it separately")
        if e.infos is None:
            raise ConfigError(f"--align reads safetensors headers; {e.name} has none (pickle weights)")
        check_same_shape(spec, arch_spec(e.hf_config, e.infos, e.name), base.infos, e.infos, base.name, e.name)


@dataclass(frozen=True)
class AlignedExperts:
    """The experts read in the base's basis, the permutation files written, and each expert's record."""

    sources: list
    files: tuple[str, ...]
    details: tuple[dict, ...]


def _match(config: MatchingConfig, spec: ArchSpec, espec: ArchSpec, base_dir: Path, base_ck: Checkpoint,
           ck: Checkpoint, progress: bool) -> MatchResult:
    if config.method == "weight":
        shared = {n for n in spec.tensors if n in ck.infos and ck.infos[n].shape == base_ck.infos[n].shape}
        return weight_matching(spec, base_ck, ck, config, shared=shared, progress=progress)
    from transformers import AutoTokenizer

    check_tokenizers([base_dir, ck.folder], ["the base", str(ck.folder)])
    batches = token_batches(AutoTokenizer.from_pretrained(base_dir), sample_texts(config.task, config.examples, config.seed),
                            batch_size=config.batch_size, max_length=config.max_length)
    stats = moments((load_model(base_dir, spec), load_model(ck.folder, espec)), batches, matching_points(spec))
    return activation_matching(spec, stats)


def align_experts(config: MatchingConfig, inputs, base_dir: Path, base_ck: Checkpoint, experts: list, tmp: Path, *,
                  progress: bool = True) -> AlignedExperts:
    """Match every expert to the base and return them as :class:`PermutedSource` (in the base's basis)."""
    import json

    spec = arch_spec(inputs.base.hf_config, base_ck.infos, inputs.base.name)
    sources, files, details = [], [], []
    (tmp / "alignment").mkdir()
    for i, (e, ck) in enumerate(zip(inputs.experts, experts)):
        cfg = e.hf_config or json.loads((ck.folder / "config.json").read_text())
        espec = arch_spec(cfg, ck.infos, e.name)
        result = _match(config, spec, espec, base_dir, base_ck, ck, progress)
        name = f"alignment/expert-{i}.safetensors"
        write_safetensors(tmp / name, result.alignment.to_tensors(), {"hf_time": __version__, "content": "hf_time alignment",
                                                                       "layers": str(spec.layers)})
        sources.append(PermutedSource(ck, espec, result.alignment))
        files.append(name)
        details.append({"alignment": {**result.record(config.method), "file": name}})
    return AlignedExperts(sources, tuple(files), tuple(details))
