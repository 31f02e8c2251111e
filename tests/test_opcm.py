"""OPCM against a direct computation written independently here (numpy, float64, full SVD)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hf_time.io import Checkpoint
from hf_time.merges import TensorContext
from hf_time.merges.opcm import is_projected, project_out, split_rank
from hf_time.api import fold

W = "model.layers.0.mlp.proj.weight"  # a linear weight inside a block: projected
B = "model.layers.0.mlp.proj.bias"  # other parameter
E = "model.embed_tokens.weight"  # 2-D but an embedding outside the blocks: other parameter
ALPHA = 0.5


def _save(folder, tensors):
    folder.mkdir()
    save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in tensors.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return folder


def _load(folder):
    ck = Checkpoint(folder)
    return {n: ck.get(n).double().numpy() for n in ck.names()}


def _reference_opcm(base, experts, alpha):
    """OPCM step by step as methods.md §3 states it, with numpy's full SVD. Returns θ^(t), λ_t and r per step."""
    norm = lambda d: np.sqrt(sum(float((v**2).sum()) for v in d.values()))  # noqa: E731
    theta = dict(experts[0])
    norms = [norm({k: experts[0][k] - base[k] for k in base})]
    lam, out, ranks = 1.0, [(dict(theta), 1.0)], []
    for expert in experts[1:]:
        tau = {k: expert[k] - base[k] for k in base}
        norms.append(norm(tau))
        s_upd = {}
        for k in base:
            delta = theta[k] - base[k]
            if k == W:
                u, s, vt = np.linalg.svd(delta, full_matrices=True)
                ratios = np.cumsum(s) / s.sum()
                r = next(i for i, x in enumerate(ratios) if x > alpha)
                ranks.append(r)
                p = u.T @ tau[k] @ vt.T
                np.fill_diagonal(p, 0.0)
                p[:r, :r] = 0.0
                s_upd[k] = lam * delta + u @ p @ vt
            else:
                s_upd[k] = lam * delta + tau[k]
        lam = norm(s_upd) / np.mean(norms)
        theta = {k: base[k] + s_upd[k] / lam for k in base}
        out.append((dict(theta), lam))
    return out, norms, ranks


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("opcm_models")
    rng = np.random.default_rng(0)
    base = {W: rng.normal(size=(16, 8)), B: rng.normal(size=16), E: rng.normal(size=(5, 4))}
    experts = [{k: v + 0.1 * rng.normal(size=v.shape) * (i + 1) for k, v in base.items()} for i in range(3)]
    paths = [_save(d / "base", base)] + [_save(d / f"e{i}", e) for i, e in enumerate(experts, 1)]
    # Compare against what was stored (float32), in float64.
    return paths, [_load(p) for p in paths]


def test_split_rank_boundary_is_strict():
    # cumsum/sum = [5, 9, 12.5, 15.5, 18]/18: exactly 0.5 at k = 1, so "> 0.5" first holds at k = 2.
    s = torch.tensor([5.0, 4.0, 3.5, 3.0, 2.5])
    assert split_rank(s, 0.5) == 2
    assert split_rank(s, 0.49) == 1
    assert split_rank(torch.tensor([3.0, 1.0]), 0.75) == 1  # 0.75 is not > 0.75; 1.0 is
    assert split_rank(torch.tensor([3.0, 1.0]), 0.7) == 0
    assert split_rank(torch.zeros(3), 0.5) == 0  # Δ = 0: no direction to protect, FusionBench's argmax gives 0
    assert split_rank(s, 1.0) == 0  # nothing exceeds 1: only the diagonal is removed


def test_project_out_matches_full_svd_formula():
    g = torch.Generator().manual_seed(1)
    for m, n in ((7, 4), (4, 7), (5, 5)):
        delta = torch.randn(m, n, generator=g, dtype=torch.float64)
        tau = torch.randn(m, n, generator=g, dtype=torch.float64)
        before = (delta.clone(), tau.clone())
        got = project_out(delta, tau, ALPHA)
        u, s, vt = np.linalg.svd(delta.numpy(), full_matrices=True)
        r = int(np.argmax(np.cumsum(s) / s.sum() > ALPHA))
        p = u.T @ tau.numpy() @ vt.T
        np.fill_diagonal(p, 0.0)
        p[:r, :r] = 0.0
        np.testing.assert_allclose(got.numpy(), u @ p @ vt, atol=1e-12)
        assert torch.equal(delta, before[0]) and torch.equal(tau, before[1])  # pure


def test_projection_scope():
    ctx = lambda name: TensorContext(name=name, weights=(1.0,), layer=0 if ".layers.0." in name else None)  # noqa: E731
    assert is_projected(ctx(W), (16, 8))
    assert not is_projected(ctx(B), (16,))
    assert not is_projected(ctx(E), (5, 4))
    assert not is_projected(ctx("lm_head.weight"), (5, 4))
    assert not is_projected(ctx("model.layers.0.attn.relative_attention_bias.weight"), (32, 4))


def test_three_steps_match_direct_computation(small_models, tmp_path):
    paths, (base, *experts) = small_models
    expected, norms, ranks = _reference_opcm(base, experts, ALPHA)
    assert max(ranks) >= 2, "the test data should exercise the block P[:r, :r], not only the diagonal"
    previous, state = None, None
    for t, (expert_path, (theta, lam)) in enumerate(zip(paths[1:], expected), start=1):
        res = fold(previous, paths[0], expert_path, "opcm", tmp_path / f"m{t}", params={"alpha": ALPHA},
                   state=state, progress=False)
        got = _load(res.out_dir)
        for k in base:
            np.testing.assert_allclose(got[k], theta[k], rtol=0, atol=2e-6, err_msg=f"step {t}, {k}")
        assert res.state["t"] == t
        assert res.state["lambda"] == pytest.approx(lam, rel=1e-5)
        assert res.state["norms"] == pytest.approx(norms[:t], rel=1e-5)
        previous, state = res.out_dir, json.loads(json.dumps(res.state))
    # The rescale keeps the merged task vector at the mean task-vector norm (λ_t's purpose).
    final = _load(previous)
    merged_norm = np.sqrt(sum(((final[k] - base[k]) ** 2).sum() for k in base))
    assert merged_norm == pytest.approx(np.mean(norms), rel=1e-5)


def test_first_step_is_the_first_expert(small_models, tmp_path):
    paths, (base, e1, *_) = small_models
    res = fold(None, paths[0], paths[1], "opcm", tmp_path / "m1", progress=False)
    got = _load(res.out_dir)
    for k in base:
        assert np.array_equal(got[k], e1[k])  # exactly θ_1, no rounding through θ_0 + τ_1
    tau_norm = np.sqrt(sum(((e1[k] - base[k]) ** 2).sum() for k in base))
    assert res.state["lambda"] == 1.0 and res.state["norms"] == pytest.approx([tau_norm], rel=1e-6)


def test_zero_task_vectors_stay_at_the_base(small_models, tmp_path):
    paths, (base, *_) = small_models
    previous, state = None, None
    for t in (1, 2):
        res = fold(previous, paths[0], paths[0], "opcm", tmp_path / f"z{t}", state=state, progress=False)
        previous, state = res.out_dir, res.state
    got = _load(previous)
    for k in base:
        assert np.array_equal(got[k], base[k])
    assert state["lambda"] == 1.0 and state["norms"] == [0.0, 0.0]
