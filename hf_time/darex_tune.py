"""DAREx-q tuned on unlabeled task data (the paper's q_e): the q whose pruned expert changes the outputs least.

Deng et al., ICLR 2025 (https://arxiv.org/abs/2410.09344), §4: with unlabeled inputs of the task,
choose the global q of an expert by the change of its last-layer outputs, pruned vs unpruned (no
labels needed). Here: for every q of a grid over [1−p, 1], θ_q = θ_0 + m ⊙ τ / q with exactly the
masks ``darex_q`` draws for that expert (same seed, tensor names and expert index), and the change
is the mean over texts of ‖h_q(x) − h(x)‖₂ of the mean-pooled last hidden states. The chosen q is
then given to the merge as a per-expert parameter (``models[i].parameters.q``, or ``-p q=...`` for one).
Deviation: the reference refines its grid around the best value and averages 3 mask seeds; hf_time
scans one grid for the masks the merge will actually use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from hf_time.evaluation import load_model, mean_pool
from hf_time.io import Checkpoint
from hf_time.merges.registry import seeded_generator


def q_grid(p: float, points: int = 11) -> list[float]:
    """``points`` values from 1 − p (DARE) to 1 (no rescale), evenly spaced in log q (at p = 0.99 the
    interesting q lie between 0.01 and 0.2, which an even grid over [0.01, 1] steps over)."""
    lo = 1.0 - p
    return [round(lo ** (1 - k / (points - 1)), 6) for k in range(points)]


@torch.no_grad()
def _pooled(model, tokenizer, texts: Sequence[str], max_length: int) -> torch.Tensor:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])


@torch.no_grad()
def tune_darex_q(base_dir: str | Path, expert_dir: str | Path, texts: Sequence[str], *, density: float, seed: int = 0,
                 index: int = 0, grid: Sequence[float] | None = None, max_length: int = 32) -> tuple[float, dict[float, float]]:
    """The q_e of one expert (encoder) on unlabeled ``texts``, and the output change of every q tried.

    Args:
        base_dir, expert_dir: θ_0 and θ_i (full model folders).
        texts: unlabeled inputs of the expert's task.
        density: 1 − p, as given to ``darex_q``; ``seed`` and ``index`` (the expert's position in the
            merge) select the same masks the merge draws.
    """
    model, tokenizer = load_model(expert_dir, device="cpu")
    reference = _pooled(model, tokenizer, texts, max_length)
    base, expert = Checkpoint(base_dir), Checkpoint(expert_dir)
    params = dict(model.named_parameters())
    prefix = getattr(model, "base_model_prefix", "")
    kept = {}  # tensor name -> (parameter, θ_0, m ⊙ τ)
    for name, info in expert.infos.items():
        target = params.get(name, params.get(name.removeprefix(prefix + ".")))
        if target is None or not info.is_float:
            continue
        theta0 = base.get(name).float()
        tau = expert.get(name).float() - theta0
        mask = torch.rand(tau.shape, generator=seeded_generator(seed, name, offset=index)) < density
        kept[name] = (target, theta0, tau * mask)
    changes = {}
    for q in grid or q_grid(1.0 - density):
        for target, theta0, dropped in kept.values():
            target.copy_(theta0 + dropped / q)
        changes[q] = float((_pooled(model, tokenizer, texts, max_length) - reference).norm(dim=-1).mean())
    best = min(changes, key=lambda q: (changes[q], q))
    return best, changes
