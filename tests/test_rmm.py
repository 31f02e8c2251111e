"""RMM: exact reversion at p = n − 1, SVD-tail error below, storage accounting, revert and its bad inputs."""

import json

import pytest
import torch

from hf_time.api import merge
from hf_time.cli import main
from hf_time.errors import ConfigError, IncompatibleExpertsError, UnknownExpertError
from hf_time.merges.factors import LoraModule
from hf_time.api import revert
from hf_time.merges import TensorContext, get
from hf_time.merges.rmm import factor_basis, reconstruct
from test_lora_adapters import IDS, peft_deltas, peft_model, save_tiny_lora
from tiny import save_tiny_llama


def _modules(n, r=6, out=10, inp=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [LoraModule(torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g), 0.5 + i) for i in range(n)]


def _svd_tail(x: torch.Tensor, p: int) -> float:
    """Σ_{k>p} σ_k² of every position's r×n matrix, computed independently with svdvals."""
    s = torch.linalg.svdvals(x.permute(2, 1, 0).double())
    return float((s[:, p:] ** 2).sum())


@pytest.mark.parametrize("centered", [True, False])
def test_factor_basis_error_is_the_svd_tail(centered):
    n, r, positions = 5, 6, 9
    x = torch.randn(n, r, positions, generator=torch.Generator().manual_seed(1))
    xc = x - x.mean(0) if centered else x
    for p in range(1, n):
        mean, basis, coeffs, tail = factor_basis(x, p, centered)
        assert basis.shape == (p, r, positions) and coeffs.shape == (n, p, positions)
        assert (mean is None) != centered
        err = float((reconstruct(mean, basis, coeffs) - x).double().square().sum())
        assert err == pytest.approx(_svd_tail(xc, p), rel=1e-5, abs=1e-9)
        assert tail == pytest.approx(_svd_tail(xc, p), rel=1e-6, abs=1e-9)
        # basis vectors are orthonormal at every position
        gram = torch.einsum("krq,lrq->qkl", basis.double(), basis.double())
        torch.testing.assert_close(gram, torch.eye(p, dtype=torch.float64).expand_as(gram), atol=1e-5, rtol=0)
    # centred, p = n - 1 reconstructs exactly
    if centered:
        mean, basis, coeffs, _ = factor_basis(x, n - 1, True)
        torch.testing.assert_close(reconstruct(mean, basis, coeffs), x, rtol=0, atol=1e-5)


def test_rmm_method_exact_at_n_minus_1_and_storage():
    spec = get("rmm")
    n, r, out, inp = 4, 6, 10, 7
    mods = _modules(n, r, out, inp)
    ctx = TensorContext(name="w", weights=(1.0,) * n)
    res = spec.fn(mods, spec.make_config({}), ctx)  # p defaults to n - 1
    for i, m in enumerate(mods):
        a = reconstruct(res.tensors["A.mean"], res.tensors["A.basis"], res.tensors["A.coefficients"][i])
        bt = reconstruct(res.tensors["B.mean"].T, res.tensors["B.basis"].transpose(1, 2), res.tensors["B.coefficients"][i])
        torch.testing.assert_close(a, m.a, rtol=0, atol=1e-5)
        torch.testing.assert_close(bt.T, m.b, rtol=0, atol=1e-5)
        assert res.stats["delta_sq_error"][i] <= 1e-9 * res.stats["delta_sq_norm"][i]
    # storage: (p(r+n)+r) numbers per position instead of r·n (shared/design/methods.md §4)
    for p, centered in ((1, True), (2, False)):
        res = spec.fn(mods, spec.make_config({"p": p, "centered": centered}), ctx)
        per_position = p * (r + n) + (r if centered else 0)
        assert res.stats["stored"] == per_position * (out + inp) and res.stats["original"] == r * n * (out + inp)
        assert sum(res.stats["factor_sq_error"]) == pytest.approx(res.stats["tail_energy"], rel=1e-5)
        # the ΔW error is the true one (checked against the dense products)
        a = reconstruct(res.tensors.get("A.mean"), res.tensors["A.basis"], res.tensors["A.coefficients"][0])
        mb = res.tensors.get("B.mean")
        b = reconstruct(None if mb is None else mb.T, res.tensors["B.basis"].transpose(1, 2), res.tensors["B.coefficients"][0]).T
        direct = float(((b @ a - mods[0].b @ mods[0].a) * mods[0].scaling).double().square().sum())
        assert res.stats["delta_sq_error"][0] == pytest.approx(direct, rel=1e-4)


def test_rmm_bad_configs():
    spec = get("rmm")
    mods = _modules(3)
    with pytest.raises(ConfigError, match="p must be in 1..2"):
        spec.fn(mods, spec.make_config({"p": 3}), TensorContext(name="w", weights=(1.0,) * 3))
    assert spec.check(spec.make_config({"p": 3}), 3) and not spec.check(spec.make_config({"p": 2}), 3)
    with pytest.raises(ConfigError, match="p must be at most n - 1 = 2"):
        spec.make_config({"p": 3}, n_experts=3)
    uneven = mods[:2] + [LoraModule(torch.randn(2, 7), torch.randn(10, 2))]
    with pytest.raises(IncompatibleExpertsError, match="equal LoRA ranks"):
        spec.fn(uneven, spec.make_config({}), TensorContext(name="w", weights=(1.0,) * 3))


@pytest.fixture(scope="module")
def rmm_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("rmm")
    base = save_tiny_llama(d / "base", 0)
    adapters = [
        save_tiny_lora(d / "sst", base, 1, r=4, alpha=8),
        save_tiny_lora(d / "qa", base, 2, r=4, alpha=8, use_rslora=True),
        save_tiny_lora(d / "code", base, 3, r=4, alpha=16, alpha_pattern={"v_proj": 2}),
    ]
    return d, base, adapters


def test_rmm_snapshot_reverts_every_expert_exactly(rmm_inputs, tmp_path):
    from transformers import AutoModelForCausalLM

    d, base, adapters = rmm_inputs
    res = merge(str(base), [str(a) for a in adapters], "rmm", out=tmp_path / "rmm", progress=False)
    lineage = res.lineage
    details = lineage.output.details
    assert lineage.kind == "merge" and lineage.output.format == "rmm" and details["p"] == 2 and details["centered"] is True
    assert [e.name for e in lineage.experts] == ["sst", "qa", "code"]
    assert all(e.details["reconstruction_error"] < 1e-5 for e in lineage.experts)
    assert details["storage"]["ratio"] == pytest.approx((2 * (4 + 3) + 4) / (4 * 3))
    assert sorted(p.name for p in res.out_dir.iterdir()) == ["README.md", "hf_time.json", "merge_config.yaml", "rmm.safetensors"]
    card = (res.out_dir / "README.md").read_text()
    assert "| 1 | `qa` |" in card and "Storage: **150.0%**" in card and "hf-time revert" in card
    for i, adapter in enumerate(adapters):
        rev = revert(res.out_dir, i, out=tmp_path / f"rev{i}", progress=False)
        cfg = json.loads((rev.out_dir / "adapter_config.json").read_text())
        original = json.loads((adapter / "adapter_config.json").read_text())
        assert cfg["use_rslora"] == original["use_rslora"] and cfg["alpha_pattern"] == original["alpha_pattern"]
        torch.testing.assert_close(peft_model(base, rev.out_dir)(IDS).logits, peft_model(base, adapter)(IDS).logits, rtol=1e-5, atol=1e-5)
    # by name, merged into the base
    dense = revert(res.out_dir, "code", out=tmp_path / "dense", dense=True, progress=False)
    assert dense.lineage.kind == "revert" and dense.lineage.details["index"] == 2 and dense.lineage.details["dense"]
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(dense.out_dir)(IDS).logits,
                               peft_model(base, adapters[2])(IDS).logits, rtol=1e-5, atol=1e-5)


def test_rmm_below_n_minus_1_and_uncentred(rmm_inputs, tmp_path):
    d, base, adapters = rmm_inputs
    refs = [str(a) for a in adapters]
    expected = [peft_deltas(base, a) for a in adapters]
    for params in ({"p": 1}, {"p": 2, "centered": False}):
        res = merge(str(base), refs, "rmm", params=params, out=tmp_path / "rmm", overwrite=True, progress=False)
        errors = []
        for i in range(3):
            rev = revert(res.out_dir, i, out=tmp_path / f"rev{i}", overwrite=True, progress=False)
            got = peft_deltas(base, rev.out_dir)
            num = sum(float((got[p] - expected[i][p]).double().square().sum()) for p in got)
            den = sum(float(expected[i][p].double().square().sum()) for p in got)
            errors.append((num / den) ** 0.5)
        recorded = [e.details["reconstruction_error"] for e in res.lineage.experts]
        assert recorded == pytest.approx(errors, rel=1e-3)
        assert min(errors) > 1e-3  # lossy: the recorded error is the real one, not a bound


def test_revert_bad_inputs(rmm_inputs, tmp_path, capsys):
    d, base, adapters = rmm_inputs
    refs = [str(a) for a in adapters]
    with pytest.raises(ConfigError, match="p must be at most n - 1 = 2"):
        merge(str(base), refs, "rmm", params={"p": 3}, out=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="rmm does not weight its experts"):
        merge(str(base), refs, "rmm", weights=[1, 2, 1], out=tmp_path / "x", progress=False)
    uneven = save_tiny_lora(tmp_path / "r2", base, 4, r=2)
    with pytest.raises(IncompatibleExpertsError, match=r"equal LoRA ranks.*\[4, 2\]"):
        merge(str(base), [refs[0], str(uneven)], "rmm", out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    snap = merge(str(base), refs, "rmm", params={"p": 1}, out=tmp_path / "rmm", progress=False).out_dir
    with pytest.raises(UnknownExpertError, match=r"index 3 is out of range.*0: sst, 1: qa, 2: code"):
        revert(snap, 3, out=tmp_path / "r", progress=False)
    with pytest.raises(UnknownExpertError, match="no expert matches 'nope'"):
        revert(snap, "nope", out=tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="has no hf_time.json"):
        revert(adapters[0], 0, out=tmp_path / "r", progress=False)
    cat = merge(str(base), refs, "lora_cat", out=tmp_path / "cat", progress=False).out_dir
    with pytest.raises(ConfigError, match="not an RMM snapshot .*merge with adapter output"):
        revert(cat, 0, out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    assert main(["revert", str(snap), "--expert", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["revert", str(snap), "--expert", "qa", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert "reverted expert 1 (qa)" in capsys.readouterr().out


def test_cards_yaml_headers():
    from huggingface_hub import ModelCard

    from hf_time.lineage import ExpertRecord, Lineage, MethodRecord, OutputRecord, RefRecord
    from hf_time.lowrank.cards import render_adapter_merge_card, render_rmm_card, render_revert_card

    sha = "a" * 40
    base = RefRecord("org/base", "org/base", None, sha)
    adapter = {"r": 8, "lora_alpha": 16, "use_rslora": False}
    experts = (ExpertRecord("org/sst@v1", "org/sst", "v1", "1" * 40, name="sst",
                            details={"adapter": adapter, "reconstruction_error": 0.25}),
               ExpertRecord("/data/qa", name="qa", details={"adapter": adapter, "reconstruction_error": 1e-7}))
    method = MethodRecord("rmm", "lowrank", "RMM.", "https://arxiv.org/abs/2510.14163", {"p": 1, "centered": True})
    details = {"p": 1, "centered": True, "storage": {"stored": 10, "original": 16, "ratio": 0.625},
               "modules": {"m": {"rank": 8}}, "tail_energy": 0.5}
    lineage = Lineage("merge", OutputRecord("rmm", {}, details=details), method, base, experts)
    card = ModelCard(render_rmm_card(lineage, title="t", repo="org/rmm"))
    assert card.data.base_model == ["org/base", "org/sst"] and card.data.base_model_relation == "merge"
    assert "| 0 | `sst` | [org/sst](/org/sst) | `1111111111` | 8 | 16 | 2.500e-01 |" in card.text
    assert "Storage: **62.5%**" in card.text and "hf-time revert org/rmm --expert 0" in card.text
    merged = Lineage("merge", OutputRecord("adapter", {}, details={"modules": {"m": {"rank": 16, "slices": [[0, 8], [8, 16]]}}}),
                     MethodRecord("lora_cat", "lowrank"), base, experts)
    card = ModelCard(render_adapter_merge_card(merged))
    assert card.data.base_model == "org/base" and card.data.base_model_relation == "adapter" and card.data.library_name == "peft"
    assert "removable per expert" in card.text and 'revision="' + sha + '"' in card.text
    reverted = Lineage("revert", OutputRecord("adapter", {}), base=base, experts=experts[:1],
                       source=RefRecord("org/rmm", "org/rmm", None, "b" * 40),
                       details={"index": 0, "p": 1, "centered": True, "n_experts": 2, "dense": False})
    card = ModelCard(render_revert_card(reverted))
    assert card.data.base_model == "org/base" and card.data.base_model_relation == "adapter"
    assert "hf-time revert org/rmm --expert 0 --out ./reverted" in card.text
