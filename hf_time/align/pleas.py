"""PLeaS (Nasery et al., CVPR 2025, https://arxiv.org/abs/2407.02447): partial matching, then layer-wise least
squares for the merged weights (pure tensor functions).

1. **Partial matching.** Units are matched across the two models (activation matching); of every MLP
   the best-correlated share of matched pairs is merged and the rest is kept from *both* models, so
   the merged MLP has a chosen width between one model's (all merged) and two (none merged):
   :func:`partial_zip`. The residual stream and the heads are merged fully (one permutation), so the
   result keeps the standard architecture with only ``intermediate_size`` changed (BERT ties heads ×
   head_dim to the hidden size, so a wider residual stream would not be a standard model: deviation
   from the paper, which widens every layer of a ResNet).
2. **Least squares.** Every linear layer of the merged model is fitted to reproduce, in the merged
   basis, what the two models compute: with the merged inputs X* = Σ_e M_e,in x_e and targets
   Y* = Σ_e M_e,out y_e collected on task data,

       W* = argmin_W ‖W X̃* − Y*‖² + λ‖W‖²,   X̃ = [X; 1] (the bias),

   solved in closed form per output group (the reference code runs Adam on the same objective): a
   unit kept from model A reads only merged units and A's own kept units, and likewise for B (the
   reference code's gradient mask). λ is ``ridge`` times the mean input energy.
"""

from __future__ import annotations

import torch

from hf_time.align.zipit import Zip, groups_zip

MERGED, ONLY_A, ONLY_B = 0, 1, 2


def partial_zip(perm: torch.Tensor, matched: torch.Tensor, width: float) -> tuple[Zip, torch.Tensor]:
    """One slot partially merged to ``width`` × n units.

    Args:
        perm: the matching (reference unit i <-> expert unit ``perm[i]``).
        matched: the similarity of each matched pair (e.g. its activation correlation).
        width: merged width relative to n, in [1, 2].

    Returns:
        The zip, and each merged unit's kind (``MERGED``, ``ONLY_A``, ``ONLY_B``): merged pairs first, best
        matched first, then A's kept units, then B's.
    """
    n = perm.numel()
    kept = round((width - 1.0) * n)
    order = torch.argsort(matched, descending=True, stable=True)
    merged, alone = order[: n - kept], order[n - kept:]
    groups = ([[(0, int(i)), (1, int(perm[i]))] for i in merged] + [[(0, int(i))] for i in alone]
              + [[(1, int(perm[i]))] for i in alone])
    kinds = torch.tensor([MERGED] * len(merged) + [ONLY_A] * kept + [ONLY_B] * kept)
    return groups_zip(groups, [n, n]), kinds


class LinearFit:
    """Running Σ x̃x̃ᵀ and Σ y x̃ᵀ of one linear layer in the merged basis (x̃ = [x; 1] when it has a bias)."""

    def __init__(self, n_in: int, n_out: int, bias: bool):
        self.bias = bias
        k = n_in + int(bias)
        self.gram = torch.zeros(k, k, dtype=torch.float64)
        self.cross = torch.zeros(n_out, k, dtype=torch.float64)
        self.count = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add tokens: merged inputs ``x`` [N, n_in] and targets ``y`` [N, n_out]."""
        x = x.to(torch.float64)
        if self.bias:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        self.gram += x.T @ x
        self.cross += y.to(torch.float64).T @ x
        self.count += x.shape[0]

    def solve(self, in_kinds: torch.Tensor, out_kinds: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The least-squares weight [n_out, n_in] (and bias), each output group reading only what it may."""
        n_in = in_kinds.numel()
        weight = torch.zeros(self.cross.shape[0], n_in, dtype=torch.float64)
        bias = torch.zeros(self.cross.shape[0], dtype=torch.float64) if self.bias else None
        for kind in (MERGED, ONLY_A, ONLY_B):
            rows = (out_kinds == kind).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            allowed = torch.ones(n_in, dtype=torch.bool) if kind == MERGED else (in_kinds == MERGED) | (in_kinds == kind)
            cols = allowed.nonzero().squeeze(1)
            if self.bias:
                cols = torch.cat([cols, torch.tensor([n_in])])
            g = self.gram[cols][:, cols]
            lam = ridge * float(g.diagonal().mean()) if ridge > 0 else 0.0
            sol = torch.linalg.solve(g + lam * torch.eye(len(cols), dtype=g.dtype), self.cross[rows][:, cols].T).T
            k = int(allowed.sum())
            weight[rows[:, None], cols[:k][None, :]] = sol[:, :k]
            if self.bias:
                bias[rows] = sol[:, k]
        return weight.float(), None if bias is None else bias.float()
