"""The one pipeline: options refused before any network call, lineages that say what was done, sequential
merges from the CLI on Hub refs (a chain of commands equals a chain of folds), and the code-shape rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_time.api import fold, merge
from hf_time.hashing import sha256_file
from hf_time.cli import main
from hf_time.errors import ConfigError
from hf_time.hub import Hub
from hf_time.io import Checkpoint
from hf_time.lineage import Lineage
from test_lora_adapters import save_tiny_lora
from tiny import save_tiny_llama

GHOST = "nobody/does-not-exist"  # any network call would fail on it with RepoNotFoundError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    base = save_tiny_llama(d / "base", 0)
    experts = [save_tiny_llama(d / f"e{i}", i, base=base) for i in (1, 2, 3)]
    adapter = save_tiny_lora(d / "a1", base, 1)
    return base, experts, adapter


def _weights(folder) -> dict[str, torch.Tensor]:
    ck = Checkpoint(folder)
    return {n: ck.get(n) for n in ck.names()}


def _hashes(folder) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.safetensors"))}


# -- options a method cannot honour are refused before anything is read -------------------------------

REFUSED = [
    ({"method": "linear", "lines": (0.5, 0.5)}, "LiNeS .* does not apply to linear: it does not read the base"),
    ({"method": "lora_cat", "lines": (0.5, 0.5)}, "does not apply to lora_cat: it is a lowrank method"),
    ({"method": "ema", "lines": (0.5, 0.5)}, "does not apply to ema: it is a sequential method"),
    ({"method": "slerp", "weights": [2.0]}, "slerp does not weight its experts"),
    ({"method": "model_stock", "weights": [1.0, 0.5]}, "model_stock does not weight its experts"),
    ({"method": "rmm", "weights": [1.0, 3.0]}, "rmm does not weight its experts"),
    ({"method": "ties", "previous": GHOST}, "--previous / `previous` continues a sequential merge; ties is a dense"),
    ({"method": "lora_svd", "max_shard_size": "1GB"}, "--max-shard-size applies to full-model outputs"),
    ({"method": "ties", "max_shard_size": "lots"}, "--max-shard-size: 'lots' is not a size"),
    ({"method": "ties", "max_shard_size": -5}, "--max-shard-size: -5 is not a size"),
    ({"method": "ties", "dtype": "float12"}, "dtype: 'float12' is not a dtype"),
    ({"method": "ties", "device": "bogus"}, "device: 'bogus' is not a device"),
    ({"method": "ema", "weights": [0.5]}, "ema does not weight its experts"),
    ({"method": "opcm", "n": 2}, "takes exactly 1 expert"),
]


@pytest.mark.parametrize("case,message", REFUSED, ids=[f"{c['method']}-{m[:24]}" for c, m in REFUSED])
def test_an_option_the_method_cannot_honour_is_refused_before_any_network_call(case, message, tmp_path):
    case = dict(case)
    n = case.pop("n", len(case.get("weights") or [1, 1]))
    with pytest.raises(ConfigError, match=message):
        merge(GHOST, [GHOST] * n, out=tmp_path / "o", hub=Hub(endpoint="http://127.0.0.1:9"), progress=False, **case)
    assert not (tmp_path / "o").exists()


def test_cuda_without_cuda_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="'cuda' asked for, but this machine has no CUDA device"):
        merge(GHOST, [GHOST], "ties", device="cuda", out=tmp_path / "o", hub=Hub(endpoint="http://127.0.0.1:9"))


def test_every_problem_of_a_request_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        merge(GHOST, [GHOST, GHOST], "slerp", params={"t": 2, "tt": 1}, weights=[1, 2], lines=(0.5, 0.5),
              dtype="float12", out=tmp_path / "o")
    problems = err.value.problems
    assert len(problems) == 5, problems  # count, t's range, unknown tt, weights, dtype (LiNeS applies to slerp)
    assert any("did you mean 't'" in p for p in problems)


# -- the lineage says what was done, and what was done can be read back from it -----------------------

@pytest.mark.parametrize("method,params,lines", [
    ("task_arithmetic", {"lambda": 0.5}, (0.5, 0.5)),
    ("ties", {"density": 0.5}, None),
    ("dare_ties", {"density": 0.5, "seed": 7}, (1.0, 0.0)),
    ("slerp", {"t": 0.25}, None),
    ("linear", {}, None),
])
def test_the_lineage_reproduces_the_output(models, tmp_path, method, params, lines):
    """Every field of the lineage is what ran: the merge_config.yaml derived from it gives the same bytes."""
    base, experts, adapter = models
    chosen = [str(experts[0])] if method == "slerp" else [str(experts[0]), str(adapter)]
    weights = None if method == "slerp" else [0.7, 0.4]
    first = merge(str(base), chosen, method, params=params, weights=weights, lines=lines, dtype="bfloat16",
                  out=tmp_path / "first", progress=False)
    lineage = first.lineage
    assert lineage.method.lines == lines and lineage.output.dtype == "bfloat16"
    assert all(v.dtype == torch.bfloat16 for v in _weights(first.out_dir).values() if v.is_floating_point())
    assert set(lineage.method.parameters) == {p.name for p in __import__("hf_time.merges", fromlist=["get"]).get(method).parameters()}
    assert lineage.output.files == _hashes(first.out_dir)
    again = main(["merge", str(first.out_dir / "merge_config.yaml"), "--out", str(tmp_path / "again"), "--quiet"])
    assert again == 0 and _hashes(tmp_path / "again") == _hashes(first.out_dir)
    assert Lineage.load(tmp_path / "again") == lineage


def test_lines_recorded_only_when_applied_and_they_change_the_weights(models, tmp_path):
    base, experts, _ = models
    plain = merge(str(base), [str(e) for e in experts[:2]], "task_arithmetic", out=tmp_path / "plain", progress=False)
    scaled = merge(str(base), [str(e) for e in experts[:2]], "task_arithmetic", lines=(0.1, 0.0), out=tmp_path / "lines",
                   progress=False)
    assert plain.lineage.method.lines is None and scaled.lineage.method.lines == (0.1, 0.0)
    b, p, s = _weights(base), _weights(plain.out_dir), _weights(scaled.out_dir)
    name = "model.layers.1.mlp.up_proj.weight"
    torch.testing.assert_close(s[name], b[name] + 0.1 * (p[name] - b[name]), rtol=0, atol=1e-6)
    assert "LiNeS layer scaling" in (scaled.out_dir / "README.md").read_text()
    assert "LiNeS" not in (plain.out_dir / "README.md").read_text()


def test_lineage_json_round_trips_and_has_a_schema_version(models, tmp_path):
    base, experts, _ = models
    res = merge(str(base), [str(experts[0])], "ties", out=tmp_path / "m", progress=False)
    data = json.loads((res.out_dir / "hf_time.json").read_text())
    assert data["schema_version"] == 2 and data["kind"] == "merge" and data["method"]["kind"] == "dense"
    assert Lineage.from_dict(data) == res.lineage


def test_schema_1_lineages_are_upgraded_on_read():
    old = {"hf_time_version": "0.1.0", "kind": "fold", "method": "opcm", "summary": "s", "paper": None,
           "parameters": {"alpha": 0.5}, "t": 2, "state": {"method": "opcm", "t": 2, "params": {"alpha": 0.5},
                                                              "lambda": 1.5, "norms": [1.0, 2.0]},
           "dtype": None, "device": "cpu", "base": {"ref": "org/b", "repo_id": "org/b", "revision": None, "sha": "a" * 40},
           "expert": {"ref": "/e", "repo_id": None, "revision": None, "sha": None}, "previous": None,
           "files": {"model.safetensors": "0" * 64}}
    lineage = Lineage.from_dict(old)
    assert lineage.kind == "fold" and lineage.method.name == "opcm" and lineage.state["lambda"] == 1.5
    assert lineage.experts[0].ref == "/e" and lineage.output.files == {"model.safetensors": "0" * 64}
    with pytest.raises(ConfigError, match="not an hf_time lineage"):
        Lineage.from_dict({"kind": "something-else"}, "x.json")
    with pytest.raises(ConfigError, match="upgrade hf_time"):
        Lineage.from_dict({"schema_version": 99, "kind": "merge"}, "x.json")


# -- sequential methods from the CLI, on Hub refs ----------------------------------------------------

@pytest.mark.parametrize("method,params", [("opcm", ["alpha=0.5"]), ("ema", ["w=0.4"]),
                                           ("continual_task_arithmetic", []), ("continual_average", [])])
def test_three_cli_folds_on_hub_refs_equal_three_fold_calls(hub, models, tmp_path, method, params, capsys):
    base, experts, _ = models
    h = Hub(endpoint=hub.url)
    ns = f"tests/seqcli-{method.replace('_', '-')}"
    h.publish(base, f"{ns}-base", commit_message="base")
    for i, e in enumerate(experts, start=1):
        h.publish(e, f"{ns}-e{i}", commit_message=f"expert {i}")
    previous = None
    for t in (1, 2, 3):
        args = ["merge", "--method", method, "--base", f"{ns}-base", "--expert", f"{ns}-e{t}", "--out",
                str(tmp_path / f"cli{t}"), "--push-to", f"{ns}-chain", "--tag", f"step-{t}", "--quiet",
                *sum((["--param", p] for p in params), [])]
        if previous:
            args += ["--previous", previous]
        assert main(args) == 0, capsys.readouterr().err
        assert f"folded expert {t} ->" in capsys.readouterr().out
        previous = f"{ns}-chain@step-{t}"
    # the same chain with fold() on local folders and explicit states
    local_prev = state = None
    kv = dict(p.split("=") for p in params)
    for t in (1, 2, 3):
        res = fold(local_prev, base, experts[t - 1], method, tmp_path / f"fold{t}", params=kv, state=state,
                   progress=False)
        local_prev, state = res.out_dir, json.loads(json.dumps(res.state))
        assert _hashes(tmp_path / f"cli{t}") == _hashes(res.out_dir), f"step {t}"
    published = h.read_lineage(h.resolve(f"{ns}-chain@step-3"))
    assert published.kind == "fold" and published.state == state
    assert published.previous.repo_id == f"{ns}-chain" and published.previous.sha == h.resolve(f"{ns}-chain@step-2").sha
    assert [e.repo_id for e in published.experts] == [f"{ns}-e3"] and published.base.sha
    files = set(h.list_files(h.resolve(f"{ns}-chain@step-3")))
    assert {"README.md", "merge_config.yaml", "hf_time.json", "model.safetensors"} <= files


def test_fold_reads_the_state_from_the_previous_snapshot(models, tmp_path):
    base, experts, _ = models
    first = fold(None, base, experts[0], "opcm", tmp_path / "one", progress=False)
    implicit = fold(first.out_dir, base, experts[1], "opcm", tmp_path / "two", progress=False)
    explicit = fold(first.out_dir, base, experts[1], "opcm", tmp_path / "three", state=first.state, progress=False)
    assert implicit.state == explicit.state and _hashes(implicit.out_dir) == _hashes(explicit.out_dir)


def test_a_fold_continues_only_its_own_method(models, tmp_path):
    base, experts, _ = models
    first = fold(None, base, experts[0], "ema", tmp_path / "one", progress=False)
    with pytest.raises(ConfigError, match="state key 'method' is 'ema' but this fold runs 'opcm'"):
        merge(str(base), [str(experts[1])], "opcm", previous=first.out_dir, out=tmp_path / "two", progress=False)
    with pytest.raises(ConfigError, match="'w' was 0.5 in earlier folds but is 0.3 now"):
        merge(str(base), [str(experts[1])], "ema", params={"w": 0.3}, previous=first.out_dir, out=tmp_path / "two",
              progress=False)
    assert not (tmp_path / "two").exists()
