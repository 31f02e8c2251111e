"""Every registered method on every available device gives the CPU's result (issue 13.4).

Parametrized over the devices this machine has: the CPU always, CUDA when present (the GPU check script,
benchmarks/gpu_check.sh, runs this module on a GPU machine). Dense, data-aware, low-rank and sequential methods all
run through the public API with ``device=...``; outputs are compared tensor by tensor with the CPU run.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_time.api import fold, merge
from hf_time.merges import get, list_methods
from hf_time.merges.rmm import reconstruct
from test_golden_outputs import DATA_PARAMS, DENSE_PARAMS, LOWRANK_PARAMS, SEQUENTIAL_PARAMS, write_synthetic_fishers
from test_lora_adapters import save_tiny_lora
from tiny import save_tiny_llama

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Random drops draw from a per-device generator, so DARE masks differ between devices by design.
DEVICE_RNG = {"dare_linear", "dare_ties", "darex_q"}
# SVD and eigh factors are defined up to the sign of each component, and LAPACK (CPU) and cuSOLVER (CUDA)
# choose differently: these outputs are compared by what their factors determine.
SIGNED_FACTORS = {"lora_svd", "rmm"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("devices")
    base = save_tiny_llama(d / "base", 0)
    experts = [save_tiny_llama(d / f"e{i}", i, base=base) for i in (1, 2, 3)]
    adapters = [save_tiny_lora(d / f"a{i}", base, i, r=4, alpha=8) for i in (1, 2, 3)]
    return base, experts, adapters


def _run(kind: str, method: str, models, out, device: str):
    base, experts, adapters = models
    if kind == "dense":
        limit = get(method).max_experts
        chosen = experts[:limit] if limit else experts
        return merge(str(base), [str(e) for e in chosen], method, params=DENSE_PARAMS[method], device=device,
                     out=out, progress=False).out_dir
    if kind == "data":  # statistics (a Fisher) stored beside each expert
        write_synthetic_fishers(experts)
        return merge(str(base), [str(e) for e in experts], method, params=DATA_PARAMS[method], device=device,
                     out=out, progress=False).out_dir
    if kind == "lowrank":
        return merge(str(base), [str(a) for a in adapters], method, params=LOWRANK_PARAMS[method], device=device,
                     out=out, progress=False).out_dir
    previous = state = None
    for t, expert in enumerate(experts, start=1):
        res = fold(previous, base, expert, method, out / f"t{t}", params=SEQUENTIAL_PARAMS[method], state=state,
                   device=device, progress=False)
        previous, state = res.out_dir, json.loads(json.dumps(res.state))
    return previous


def _tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _determined(tensors):
    """The products a low-rank output stands for: B @ A of each LoRA module, and each expert's A and B
    reconstructed from an RMM basis (as :meth:`hf_time.lowrank.snapshot.RmmSnapshot.factors` does)."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(".lora_A.weight"):
            out[name.removesuffix(".lora_A.weight")] = tensors[name.replace(".lora_A.", ".lora_B.")] @ t
        elif name.endswith(".A.basis"):
            path = name.removesuffix(".A.basis")
            mean_b = tensors.get(f"{path}.B.mean")
            out[f"{path}.A"] = reconstruct(tensors.get(f"{path}.A.mean"), t, tensors[f"{path}.A.coefficients"])
            out[f"{path}.B"] = reconstruct(None if mean_b is None else mean_b.T,
                                           tensors[f"{path}.B.basis"].transpose(1, 2), tensors[f"{path}.B.coefficients"])
        elif not name.endswith((".lora_B.weight", ".basis", ".coefficients", ".mean")):
            out[name] = t
    return out


def test_determined_products_are_invariant_under_sign_flips():
    a, b = torch.randn(3, 8), torch.randn(8, 3)
    flip = torch.tensor([1.0, -1.0, -1.0])
    lora = _determined({"m.lora_A.weight": a, "m.lora_B.weight": b})
    torch.testing.assert_close(_determined({"m.lora_A.weight": flip[:, None] * a, "m.lora_B.weight": b * flip})["m"],
                               lora["m"])
    assert not torch.allclose(_determined({"m.lora_A.weight": flip[:, None] * a, "m.lora_B.weight": b})["m"], lora["m"])
    basis_a, coeff_a, basis_b, coeff_b = torch.randn(1, 4, 8), torch.randn(3, 1, 8), torch.randn(1, 8, 4), torch.randn(3, 1, 8)
    rmm = {"m.A.basis": basis_a, "m.A.coefficients": coeff_a, "m.B.basis": basis_b, "m.B.coefficients": coeff_b}
    flipped = {"m.A.basis": -basis_a, "m.A.coefficients": -coeff_a, "m.B.basis": basis_b, "m.B.coefficients": coeff_b}
    got, expected = _determined(flipped), _determined(rmm)
    assert got.keys() == {"m.A", "m.B"}
    for key in got:
        torch.testing.assert_close(got[key], expected[key])
    torch.testing.assert_close(expected["m.A"][1], coeff_a[1, 0][None, :] * basis_a[0])


CASES = [(s.kind, s.name) for s in list_methods()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,method", CASES, ids=[m for _, m in CASES])
def test_every_method_on_every_device_matches_the_cpu(models, tmp_path, device, kind, method):
    reference = _tensors(_run(kind, method, models, tmp_path / "cpu", "cpu"))
    got = _tensors(_run(kind, method, models, tmp_path / f"on-{device}", device))
    assert got.keys() == reference.keys()
    if device != "cpu" and method in SIGNED_FACTORS:
        got, reference = _determined(got), _determined(reference)
    for name, expected in reference.items():
        assert torch.isfinite(got[name].float()).all(), name
        if device == "cpu":
            assert torch.equal(got[name], expected), name  # deterministic on one device
        elif method not in DEVICE_RNG:
            torch.testing.assert_close(got[name], expected, rtol=1e-4, atol=1e-5, msg=f"{method} {name} on {device}")
    if device != "cpu" and method in DEVICE_RNG:  # other masks than the CPU's, but the same ones every time
        again = _tensors(_run(kind, method, models, tmp_path / f"again-on-{device}", device))
        assert all(torch.equal(again[name], got[name]) for name in got), f"{method} on {device} is not reproducible"


def test_cuda_is_covered_where_present():
    """On a machine with CUDA the device list includes it, so the check above is not CPU-only there."""
    assert ("cuda" in DEVICES) == torch.cuda.is_available()
