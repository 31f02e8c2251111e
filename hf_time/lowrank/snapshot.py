"""The RMM snapshot format: what a reversible merge stores, and how one expert is read back.

A snapshot folder holds:

* ``rmm.safetensors`` — per adapted module ``<path>``: ``<path>.A.basis`` (p, r, in),
  ``<path>.A.coefficients`` (n, p, in), ``<path>.B.basis`` (p, out, r), ``<path>.B.coefficients``
  (n, p, out) and, centred, ``<path>.A.mean`` (r, in) / ``<path>.B.mean`` (out, r)
  (see :mod:`hf_time.merges.rmm`). Factors are stored unscaled.
* ``hf_time.json`` — lineage with ``kind: "rmm"``: the pinned base and experts, each expert's own
  ``adapter_config`` (so a reverted expert keeps its PEFT scaling), the modules it did not adapt,
  its reconstruction error, p, centring, storage ratio and file hashes; ``modules`` maps each
  module path to its base tensor, rank and whether it is an embedding.
* ``README.md`` — the card, listing the experts it can revert to.

Reading one expert touches the basis and means of each module and only that expert's slice of the
coefficients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from hf_time.cards import LINEAGE_FILE
from hf_time.errors import ConfigError, UnknownExpertError
from hf_time.merges.rmm import reconstruct

RMM_WEIGHTS = "rmm.safetensors"
RMM_KIND = "rmm"


def tensor_name(path: str, logical: str) -> str:
    """Name of a stored RMM tensor: module path + logical name (``A.basis``...)."""
    return f"{path}.{logical}"


def check_lineage(lineage: Mapping[str, Any] | None, source: str) -> Mapping[str, Any]:
    """The lineage of an RMM snapshot, or a ConfigError saying what ``source`` is instead."""
    if lineage is None:
        raise ConfigError(f"{source} has no {LINEAGE_FILE}; revert reads snapshots made with `hf-time merge --method rmm`")
    if lineage.get("kind") != RMM_KIND:
        raise ConfigError(f"{source} is not an RMM snapshot ({LINEAGE_FILE} has kind={lineage.get('kind')!r}); "
                          "revert reads snapshots made with `hf-time merge --method rmm`")
    return lineage


def expert_names(lineage: Mapping[str, Any]) -> list[str]:
    return [e["name"] for e in lineage["experts"]]


def expert_index(lineage: Mapping[str, Any], expert: int | str) -> int:
    """Resolve an expert given by 0-based index, name, or reference as recorded in the lineage.

    Raises:
        UnknownExpertError: out of range or no such name (the message lists the experts).
    """
    experts = lineage["experts"]
    listing = ", ".join(f"{i}: {e['name']}" for i, e in enumerate(experts))
    text = str(expert).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(experts):
            raise UnknownExpertError(f"expert index {i} is out of range: this snapshot holds {len(experts)} experts ({listing})")
        return i
    matches = [i for i, e in enumerate(experts) if text in (e["name"], e.get("ref"), e.get("repo_id"))]
    if len(matches) != 1:
        what = "several experts match" if matches else "no expert matches"
        raise UnknownExpertError(f"{what} {text!r}; give an index or name among: {listing}")
    return matches[0]


class RmmSnapshot:
    """Read access to an RMM snapshot folder.

    Raises:
        ConfigError: the folder is not an RMM snapshot.
    """

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        self.folder = Path(folder)
        path = self.folder / LINEAGE_FILE
        self.lineage = check_lineage(json.loads(path.read_text()) if path.is_file() else None, str(self.folder))
        self._handle = safe_open(str(self.folder / RMM_WEIGHTS), framework="pt")

    @property
    def modules(self) -> Mapping[str, Mapping[str, Any]]:
        return self.lineage["modules"]

    def _get(self, path: str, logical: str) -> torch.Tensor | None:
        name = tensor_name(path, logical)
        return self._handle.get_tensor(name) if name in self._handle.keys() else None

    def factors(self, path: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert ``i``'s reconstructed (A (r, in), B (out, r)) of module ``path``, unscaled."""
        coeff_a = self._handle.get_slice(tensor_name(path, "A.coefficients"))[i]
        coeff_b = self._handle.get_slice(tensor_name(path, "B.coefficients"))[i]
        a = reconstruct(self._get(path, "A.mean"), self._get(path, "A.basis"), coeff_a)
        mean_b = self._get(path, "B.mean")
        bt = reconstruct(None if mean_b is None else mean_b.T, self._get(path, "B.basis").transpose(1, 2), coeff_b)
        return a, bt.T.contiguous()
