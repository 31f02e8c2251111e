"""The RMM snapshot format: what a reversible merge stores, and how one expert is read back.

A snapshot folder holds:

* ``rmm.safetensors`` — per adapted module ``<path>``: ``<path>.A.basis`` (p, r, in),
  ``<path>.A.coefficients`` (n, p, in), ``<path>.B.basis`` (p, out, r), ``<path>.B.coefficients``
  (n, p, out) and, centred, ``<path>.A.mean`` (r, in) / ``<path>.B.mean`` (out, r)
  (see :mod:`hf_time.merges.rmm`). Factors are stored unscaled.
* ``hf_time.json`` — a merge lineage whose output format is ``rmm``: the pinned base and experts,
  each expert's own ``adapter_config`` (so a reverted expert keeps its PEFT scaling), the modules it
  did not adapt and its reconstruction error (``experts[i].details``); p, centring, storage ratio
  and ``modules`` (each module path's base tensor, rank and whether it is an embedding) in
  ``output.details``.
* ``README.md`` — the card, listing the experts it can revert to.

Reading one expert touches the basis and means of each module and only that expert's slice of the
coefficients.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hf_time.errors import UnknownExpertError
from hf_time.lineage import Lineage
from hf_time.merges.rmm import reconstruct

RMM_WEIGHTS = "rmm.safetensors"


def tensor_name(path: str, logical: str) -> str:
    """Name of a stored RMM tensor: module path + logical name (``A.basis``...)."""
    return f"{path}.{logical}"


def expert_names(lineage: Lineage) -> list[str]:
    return [e.name or e.short_name for e in lineage.experts]


def expert_index(lineage: Lineage, expert: int | str) -> int:
    """Resolve an expert given by 0-based index, name, or reference as recorded in the lineage.

    Raises:
        UnknownExpertError: out of range or no such name (the message lists the experts).
    """
    experts = lineage.experts
    names = expert_names(lineage)
    listing = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    text = str(expert).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(experts):
            raise UnknownExpertError(f"expert index {i} is out of range: this snapshot holds {len(experts)} experts ({listing})")
        return i
    matches = [i for i, e in enumerate(experts) if text in (names[i], e.ref, e.repo_id)]
    if len(matches) != 1:
        what = "several experts match" if matches else "no expert matches"
        raise UnknownExpertError(f"{what} {text!r}; give an index or name among: {listing}")
    return matches[0]


def expert_modules(lineage: Lineage, index: int) -> dict[str, str]:
    """Snapshot module path -> the expert's own module path, for the modules the expert adapted."""
    missing = set(lineage.experts[index].details.get("missing_modules") or ())
    out = {}
    for path, module in lineage.output.details["modules"].items():
        own = module["expert_paths"][index] if module.get("expert_paths") else (None if path in missing else path)
        if own is not None:
            out[path] = own
    return out


class RmmSnapshot:
    """Read access to the factors of an RMM snapshot folder (its lineage read beforehand)."""

    def __init__(self, folder: str | Path, lineage: Lineage):
        from safetensors import safe_open

        self.folder = Path(folder)
        self.lineage = lineage
        self._handle = safe_open(str(self.folder / RMM_WEIGHTS), framework="pt")

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
