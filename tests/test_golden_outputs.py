"""Golden outputs: the sha256 of every weight file each registered method writes on tiny fixtures.

These hashes pin the *numbers* hf_time produces, independently of how the code that produces them is
organised: a refactor must leave every one of them unchanged, and a change of behaviour must update
them on purpose (regenerate with ``HF_TIME_REGEN_GOLDEN=1 pytest tests/test_golden_outputs.py`` and say
why in the commit). Every registered method must have an entry, so a new method cannot skip this.

Cases: every dense method on three full experts (and task arithmetic / TIES with a LoRA expert among
them, and with LiNeS), every low-rank method on three LoRA adapters, an RMM revert (adapter and
dense), every sequential method folded over three experts, and a 2-step timeline per technique
family (dense EMA chain, sequential fold) on the embedded Hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_time.hashing import sha256_file
from hf_time.merges import list_methods
from test_lora_adapters import save_tiny_lora
from tiny import save_tiny_llama

GOLDEN = Path(__file__).parent / "golden" / "output_hashes.json"
REGEN = os.environ.get("HF_TIME_REGEN_GOLDEN") == "1"

# Parameters that make each method do real work on the fixtures (defaults often keep everything).
DENSE_PARAMS = {
    "linear": {},
    "task_arithmetic": {"lambda": 0.7},
    "ties": {"density": 0.5},
    "dare_linear": {"density": 0.6, "seed": 3},
    "dare_ties": {"density": 0.6, "seed": 3},
    "breadcrumbs": {"density": 0.6, "gamma": 0.05},
    "breadcrumbs_ties": {"density": 0.6, "gamma": 0.05},
    "model_stock": {},
    "magmax": {"lambda": 0.9},
    "slerp": {"t": 0.3},
    "passthrough": {"scale": 0.5},
    "pcb": {"ratio": 0.3},
    "darex_q": {"density": 0.3, "seed": 3},
}
ONE_EXPERT = ("slerp", "passthrough")
LOWRANK_PARAMS = {
    "lora_cat": {},
    "lora_svd": {"rank": 3, "method": "ties", "method_params": "density=0.5"},
    "rmm": {"p": 1},
}
SEQUENTIAL_PARAMS = {
    "ema": {"w": 0.4},
    "continual_task_arithmetic": {"lambda": 0.3},
    "continual_average": {},
    "opcm": {"alpha": 0.5},
}


def _weight_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.safetensors"))}


@pytest.fixture(scope="module")
def golden():
    """The recorded hashes, and a dict the cases fill; with REGEN, written back at the end."""
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    seen: dict[str, dict[str, str]] = {}
    yield recorded, seen
    if REGEN:
        GOLDEN.write_text(json.dumps({**recorded, **seen}, indent=2, sort_keys=True) + "\n")


def _check(golden, case: str, hashes: dict[str, str]) -> None:
    recorded, seen = golden
    seen[case] = hashes
    if REGEN:
        return
    assert case in recorded, f"no golden hashes for {case!r}; run with HF_TIME_REGEN_GOLDEN=1 and commit them"
    assert hashes == recorded[case], f"{case}: output weights changed"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    base = save_tiny_llama(d / "base", 0)
    experts = [save_tiny_llama(d / f"e{i}", i, base=base, max_shard_size="40KB" if i == 2 else None) for i in (1, 2, 3)]
    adapters = [save_tiny_lora(d / f"a{i}", base, i, r=4, alpha=8) for i in (1, 2, 3)]
    return base, experts, adapters


DATA_PARAMS = {"fisher": {}}


def test_every_method_has_a_golden_case():
    covered = set(DENSE_PARAMS) | set(LOWRANK_PARAMS) | set(SEQUENTIAL_PARAMS) | set(DATA_PARAMS)
    assert {s.name for s in list_methods()} <= covered


def write_synthetic_fishers(experts) -> None:
    """A deterministic Fisher (seeded by the expert's position) beside each expert, once."""
    import torch

    from hf_time.fisher import save_fisher, weights_fingerprint
    from hf_time.io import Checkpoint

    for i, e in enumerate(experts):
        if not (e / "fisher.safetensors").exists():
            ck = Checkpoint(e)
            g = torch.Generator().manual_seed(i)
            tensors = {n: torch.rand(info.shape, generator=g) ** 4 for n, info in ck.infos.items() if info.is_float}
            save_fisher(e, tensors, {"model": str(e), "weights": weights_fingerprint(e)})


@pytest.mark.parametrize("method", sorted(DATA_PARAMS))
def test_data(models, tmp_path, golden, method):
    """Data-aware methods on the three experts with a synthetic, deterministic Fisher beside each."""
    from hf_time.api import merge

    base, experts, _ = models
    write_synthetic_fishers(experts)
    out = merge(str(base), [str(e) for e in experts], method, params=DATA_PARAMS[method], weights=[0.5, 0.3, 0.2],
                out=tmp_path / "m", progress=False).out_dir
    _check(golden, f"data/{method}", _weight_hashes(out))


@pytest.mark.parametrize("method", sorted(DENSE_PARAMS))
def test_dense(models, tmp_path, golden, method):
    from hf_time.api import merge

    base, experts, _ = models
    chosen = experts[:1] if method in ONE_EXPERT else experts
    weights = None if method in (*ONE_EXPERT, "model_stock") else [0.5, 0.3, 0.2]
    out = merge(str(base), [str(e) for e in chosen], method, params=DENSE_PARAMS[method], weights=weights,
                out=tmp_path / "m", progress=False).out_dir
    _check(golden, f"dense/{method}", _weight_hashes(out))


def test_dense_per_tensor_values_and_slices(models, tmp_path, golden):
    """Gradients with filters, and an output stacked from layer ranges (issue 11)."""
    from hf_time.api import merge
    from hf_time.slices import OutputSlice, SliceSource

    base, experts, _ = models
    t = [{"filter": "self_attn", "value": [0.0, 0.8]}, {"filter": "mlp", "value": [0.9, 0.1]}, {"value": 0.5}]
    out = merge(str(base), [str(experts[0])], "slerp", params={"t": t}, out=tmp_path / "g", progress=False).out_dir
    _check(golden, "dense/slerp+gradient-filters", _weight_hashes(out))
    from hf_time.config import ExpertSpec, MergeConfig

    slices = (OutputSlice((SliceSource(str(experts[0]), (0, 2)),)), OutputSlice((SliceSource(str(experts[1]), (1, 2)),)))
    config = MergeConfig(base=str(experts[0]), experts=(ExpertSpec(str(experts[0])), ExpertSpec(str(experts[1]))),
                         method="passthrough", slices=slices)
    out = merge(config=config, out=tmp_path / "s", progress=False).out_dir
    _check(golden, "dense/passthrough+slices", _weight_hashes(out))


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_dense_with_lora_expert_and_lines(models, tmp_path, golden, method):
    from hf_time.api import merge

    base, experts, adapters = models
    out = merge(str(base), [str(experts[0]), str(adapters[0])], method, params=DENSE_PARAMS[method],
                lines=(0.5, 0.5), out=tmp_path / "m", progress=False).out_dir
    _check(golden, f"dense+lora+lines/{method}", _weight_hashes(out))


@pytest.mark.parametrize("method", sorted(LOWRANK_PARAMS))
def test_lowrank(models, tmp_path, golden, method):
    from hf_time.api import merge

    base, _, adapters = models
    weights = None if method == "rmm" else [0.5, 1.0, 0.25]
    out = merge(str(base), [str(a) for a in adapters], method, params=LOWRANK_PARAMS[method], weights=weights,
                out=tmp_path / "m", progress=False).out_dir
    _check(golden, f"lowrank/{method}", _weight_hashes(out))


def test_rmm_revert(models, tmp_path, golden):
    from hf_time.api import merge
    from hf_time.api import revert

    base, _, adapters = models
    snap = merge(str(base), [str(a) for a in adapters], "rmm", params={"p": 1}, out=tmp_path / "s", progress=False).out_dir
    adapter = revert(snap, 1, out=tmp_path / "adapter", progress=False).out_dir
    dense = revert(snap, 2, out=tmp_path / "dense", dense=True, progress=False).out_dir
    _check(golden, "revert/adapter", _weight_hashes(adapter))
    _check(golden, "revert/dense", _weight_hashes(dense))


@pytest.mark.parametrize("method", sorted(SEQUENTIAL_PARAMS))
def test_sequential(models, tmp_path, golden, method):
    from hf_time.api import fold

    base, experts, _ = models
    previous = state = None
    for t, expert in enumerate(experts, start=1):
        res = fold(previous, base, expert, method, tmp_path / f"f{t}", params=SEQUENTIAL_PARAMS[method], state=state,
                   progress=False)
        previous, state = res.out_dir, json.loads(json.dumps(res.state))
        _check(golden, f"sequential/{method}/t{t}", _weight_hashes(res.out_dir))


@pytest.mark.parametrize("strategy", [
    {"init": "ema", "deploy": "ema", "method": "linear"},
    {"init": "base", "deploy": "merge_all", "method": "ties", "params": {"density": 0.5}},
    {"init": "latest", "deploy": "ema", "method": "opcm"},
], ids=["ema-linear", "merge_all-ties", "opcm"])
def test_timeline(hub, tmp_path, golden, strategy):
    from test_timeline_common import fake_evaluator, save_tiny_bert, timeline_dict
    from test_timeline_hub import _noisy_trainer

    from hf_time.hub import Hub
    from hf_time.timeline.config import timeline_config_from_dict
    from hf_time.timeline.runner import run_timeline

    h = Hub(endpoint=hub.url)
    name = f"golden-{strategy['method']}-{strategy['deploy']}"
    h.publish(save_tiny_bert(tmp_path / "base", seed=2), f"tests/{name}-base", commit_message="tiny base")
    cfg = timeline_dict(tmp_path, f"tests/{name}-base", name, **strategy)
    cfg["tasks"] = cfg["tasks"][:2]
    config = timeline_config_from_dict(cfg)
    run_timeline(config, hub=h, work_dir=tmp_path / "work", trainer=_noisy_trainer, evaluator=fake_evaluator,
                 progress=False)
    for t in (1, 2):
        for repo in (config.repo_id, f"{config.repo_id}-experts"):
            folder = h.download(h.resolve(f"{repo}@step-{t}"), ["*.safetensors"])
            _check(golden, f"timeline/{name}/{repo.split('/')[-1]}/step-{t}", _weight_hashes(folder))
