"""RMM — reversible merging of low-rank weights: a shared basis plus per-expert coefficients.

Paper: Alipour & Mohammadi Amiri, "Reversible Model Merging for Low-rank Weights",
https://arxiv.org/abs/2510.14163 (closed form reconstructed in shared/design/methods.md §4).

Independently for every module and every factor position — each column j of A (r, in) and each row
o of B (out, r) — the n experts' r-vectors are stacked as X ∈ R^{r×n}. With μ the mean over experts
(centred, default; μ = 0 uncentred) and X̄ = X − μ1ᵀ = U Σ Vᵀ:

    basis Z = U[:, :p] (r×p),   coefficients C = Zᵀ X̄ = Σ_p V_pᵀ (p×n),   x̂_i = μ + Z c_i.

So x̂_i is μ plus the orthogonal projection of x̄_i on the top-p left singular vectors; the squared
error summed over experts is exactly the SVD tail Σ_{k>p} σ_k². Centred, X̄ has rank <= n − 1, so
p = n − 1 reverts every expert exactly (uncentred needs p = n, which would store more than the
experts themselves, so p >= n is refused). Storage per position is p(r + n) + r numbers (the mean
r, the basis p·r, the coefficients p·n; uncentred p(r + n)) instead of n·r for the n adapters.

Batching: the n×n Gram matrix X̄ᵀX̄ = V Σ² Vᵀ of a position is no larger than X̄ (n <= r for
typical adapters), so each factor of a module is ONE batched float64 ``eigh`` over all its positions
(``in`` small matrices for A, ``out`` for B), and Z = X̄ V_p Σ_p⁻¹. The Gram matrices themselves are
built with n(n+1)/2 vectorised products, not P tiny matmuls. Components with σ below 1e-7·σ_max of their position are treated as zero (their
contribution to any reconstruction is below that). Experts are stored unscaled; each keeps its own
PEFT scaling, applied when it is reverted.

Stored tensors per module (logical names; positions last so expert i's coefficients are one slice):
``A.mean`` (r, in), ``A.basis`` (p, r, in), ``A.coefficients`` (n, p, in), ``B.mean`` (out, r),
``B.basis`` (p, out, r), ``B.coefficients`` (n, p, out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from hf_time.errors import ConfigError, IncompatibleExpertsError
from hf_time.merges.factors import LoraModule, ModuleResult
from hf_time.merges.lora_cat import STRICT_HELP
from hf_time.merges.registry import TensorContext, param, register

PAPER = "https://arxiv.org/abs/2510.14163"
SIGMA_RTOL = 1e-7


@dataclass(frozen=True)
class RmmConfig:
    p: int | None = param(None, "basis size per factor position, 1 <= p <= n-1 (default n-1: exact reversion)", ge=1)
    centered: bool = param(True, "subtract the experts' mean before the SVD (the paper's); false: uncentred variant")
    strict: bool = param(False, STRICT_HELP)

    def basis_size(self, n: int) -> int:
        """The p used for ``n`` experts (n − 1 when not set)."""
        return self.p if self.p is not None else n - 1


def check_p(config: RmmConfig, n_experts: int | None) -> list[str]:
    """Problems with p for ``n`` experts (checked before anything is downloaded)."""
    n = n_experts
    if n is not None and config.p is not None and config.p >= n:
        return [f"p must be at most n - 1 = {n - 1} for {n} experts, got p = {config.p} (p = n - 1 already reverts exactly)"]
    return []


def factor_basis(x: Tensor, p: int, centered: bool = True) -> tuple[Tensor | None, Tensor, Tensor, float]:
    """The RMM basis of one factor: n experts' r-vectors at P positions.

    Args:
        x: (n, r, P) stacked factor columns (A as stored; Bᵀ for B). Not modified.
        p: basis size (1 <= p < n).
        centered: subtract the mean over experts first.

    Returns:
        (mean (r, P) or None, basis (p, r, P), coefficients (n, p, P), tail) in float32, where
        tail = Σ over positions of the discarded eigenvalues Σ_{k>p} σ_k² (float64 sum).
    """
    n, r, positions = x.shape
    x64 = x.to(torch.float64)
    mean = x64.mean(0) if centered else None
    xc = (x64 - mean) if centered else x64
    # Gram matrices of all positions at once. n is small, so n(n+1)/2 vectorised products over
    # (r, P) beat a batched matmul of P tiny matrices (~3x on CPU).
    gram = x64.new_empty(positions, n, n)
    for i in range(n):
        for j in range(i, n):
            gram[:, i, j] = gram[:, j, i] = (xc[i] * xc[j]).sum(0)
    evals, evecs = torch.linalg.eigh(gram)  # ascending, one small eigh per position
    evals = evals.clamp_min(0)
    k = min(p, n)
    lam = evals[:, n - k:].flip(-1).T  # (k, P), descending
    v = evecs[:, :, n - k:].flip(-1).permute(2, 1, 0)  # (k, n, P): v[k, i] = weight of expert i in component k
    sigma = lam.sqrt()
    keep = sigma > SIGMA_RTOL * sigma[:1].clamp_min(torch.finfo(torch.float64).tiny)
    proj = sum(v[:, i, None, :] * xc[i] for i in range(n))  # (k, r, P) = X̄ V_p, i.e. Z Σ
    safe = torch.where(keep, sigma, torch.ones_like(sigma))
    basis = torch.where(keep[:, None], proj / safe[:, None], torch.zeros_like(proj))
    coeffs = torch.where(keep[None], v.transpose(0, 1) * sigma[None], torch.zeros((), dtype=v.dtype))  # (n, k, P)
    tail = float(evals[:, : n - k].sum()) + float((lam * ~keep).sum())
    mean32 = None if mean is None else mean.float()
    return mean32, basis.float().contiguous(), coeffs.float().contiguous(), tail


def reconstruct(mean: Tensor | None, basis: Tensor, coefficients: Tensor) -> Tensor:
    """x̂ = μ + Σ_k c_k z_k at every position.

    Args:
        mean: (r, P) or None (uncentred).
        basis: (p, r, P).
        coefficients: (p, P) for one expert, or (n, p, P) for all of them.

    Returns:
        (r, P), or (n, r, P) for all experts.
    """
    single = coefficients.dim() == 2
    c = coefficients[None] if single else coefficients
    out = sum(c[:, k, None, :] * basis[k] for k in range(basis.shape[0]))
    if mean is not None:
        out = out + mean
    return out[0] if single else out


def _stack(modules: Sequence[LoraModule | None], ctx: TensorContext) -> tuple[Tensor, Tensor, list[float]]:
    present = [m for m in modules if m is not None]
    ranks = sorted({m.rank for m in present})
    if len(ranks) > 1:
        found = [m.rank if m is not None else None for m in modules]
        raise IncompatibleExpertsError(
            f"rmm needs equal LoRA ranks per module; {ctx.name} has ranks {found} across the experts. "
            "Train the adapters with the same r, or use lora_cat / lora_svd, which accept any ranks",
            tensor=ctx.name, expected=ranks[0], found=found)
    ref = present[0]
    xa = torch.stack([(m.a if m is not None else torch.zeros_like(ref.a)).float() for m in modules])
    xb = torch.stack([(m.b if m is not None else torch.zeros_like(ref.b)).float().T for m in modules])
    return xa, xb, [m.scaling if m is not None else 0.0 for m in modules]


def _delta_errors(xa: Tensor, xb: Tensor, a_hat: Tensor, bt_hat: Tensor, scalings: Sequence[float]) -> tuple[list[float], list[float]]:
    """Per expert ‖ΔŴ_i − ΔW_i‖² and ‖ΔW_i‖² without forming any (out, in) product, batched over experts.

    ΔŴ − ΔW = E_B Â + B E_A with E = reconstructed − original, i.e. [E_B, B] @ [Â; E_A]; its squared
    norm is tr((MᵀM)(NNᵀ)). Working on the errors themselves (not ‖ΔŴ‖² − 2⟨ΔŴ, ΔW⟩ + ‖ΔW‖²)
    keeps tiny errors accurate in float32.
    """
    b, e_b = xb.transpose(1, 2), (bt_hat - xb).transpose(1, 2)  # (n, out, r)
    e_a = a_hat - xa  # (n, r, in)
    m = torch.cat([e_b, b], 2)  # (n, out, 2r)
    nn = torch.cat([a_hat, e_a], 1)  # (n, 2r, in)
    err = (torch.bmm(m.transpose(1, 2), m).double() * torch.bmm(nn, nn.transpose(1, 2)).double()).sum((1, 2))
    norm = (torch.bmm(xb, b).double() * torch.bmm(xa, xa.transpose(1, 2)).double()).sum((1, 2))
    s2 = torch.tensor([s * s for s in scalings], dtype=torch.float64, device=err.device)
    return (err.clamp_min(0) * s2).tolist(), (norm.clamp_min(0) * s2).tolist()


# Every expert is kept (that is what makes it reversible): there is nothing to weight.
@register("rmm", kind="lowrank", config=RmmConfig, paper=PAPER, min_experts=2, output="rmm", requires_equal_ranks=True,
          uses_weights=False, check=check_p)
def rmm(modules: Sequence[LoraModule | None], config: RmmConfig, ctx: TensorContext) -> ModuleResult:
    """RMM: per-position basis + per-expert coefficients from which every adapter can be reverted."""
    n = len(modules)
    p = config.basis_size(n)
    if not 1 <= p <= n - 1:
        raise ConfigError(f"rmm: p must be in 1..{n - 1} for {n} experts, got {p}")
    xa, xb, scalings = _stack(modules, ctx)
    ma, za, ca, tail_a = factor_basis(xa, p, config.centered)
    mb, zb, cb, tail_b = factor_basis(xb, p, config.centered)
    a_hat, bt_hat = reconstruct(ma, za, ca), reconstruct(mb, zb, cb)
    delta_err, delta_norm = _delta_errors(xa, xb, a_hat, bt_hat, scalings)
    factor_err = ((a_hat - xa).square().sum((1, 2)).double() + (bt_hat - xb).square().sum((1, 2)).double()).tolist()
    factor_norm = (xa.square().sum((1, 2)).double() + xb.square().sum((1, 2)).double()).tolist()
    tensors = {"A.basis": za, "A.coefficients": ca, "B.basis": zb.transpose(1, 2).contiguous(), "B.coefficients": cb}
    if config.centered:
        tensors["A.mean"], tensors["B.mean"] = ma, mb.T.contiguous()
    stats = {"factor_sq_error": factor_err, "factor_sq_norm": factor_norm, "delta_sq_error": delta_err,
             "delta_sq_norm": delta_norm, "tail_energy": tail_a + tail_b, "rank": int(xa.shape[1]),
             "stored": sum(t.numel() for t in tensors.values()), "original": xa.numel() + xb.numel()}
    return ModuleResult(tensors, stats)
