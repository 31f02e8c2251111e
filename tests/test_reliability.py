"""Reliability of the merge path (issue 9): each defect of the fault hunt, reproduced and kept.

Every bad input ends in ONE line on stderr naming the offending item, exit code 2, and nothing
written; numbers are checked where the fix makes something work that did not.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_time.api import merge
from hf_time.cli import main
from hf_time.errors import CorruptCheckpointError, HubConnectionError, NonFiniteError
from hf_time.hub import Hub
from probes import record
from test_lora_adapters import save_tiny_lora
from tiny import save_tiny_llama


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("reliability")
    base = save_tiny_llama(d / "base", 0)
    expert = save_tiny_llama(d / "e1", 1, base=base)
    return d, base, expert


def run_cli(args, capsys, *, category: str, name: str) -> tuple[int, str]:
    """Run ``hf-time ARGS`` in-process; record whether the error was one clear line and nothing was left."""
    code = main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    clear = code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    record(category, name, ok=clear, detail=err.strip()[:200])
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    if out is not None:
        leftovers = out.exists() or any(out.parent.glob(f".{out.name}.tmp-*"))
        record("partial outputs", name, ok=not leftovers)
    return code, err


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err


# -- defect 1: mixed dtypes ---------------------------------------------------------------------------

def test_a_bfloat16_base_merges_with_a_float32_expert(tmp_path):
    base = save_tiny_llama(tmp_path / "b16", 0, dtype=torch.bfloat16)
    expert = save_tiny_llama(tmp_path / "e32", 1, base=base, dtype=torch.float32)
    res = merge(str(base), [str(expert)], "task_arithmetic", params={"lambda": 0.5}, out=tmp_path / "m", progress=False)
    b, e, m = load_file(base / "model.safetensors"), load_file(expert / "model.safetensors"), load_file(res.out_dir / "model.safetensors")
    for name in b:
        assert m[name].dtype == torch.bfloat16  # the base's dtype unless --dtype
        expected = (b[name].float() + 0.5 * (e[name] - b[name].float())).bfloat16()
        torch.testing.assert_close(m[name], expected, rtol=0, atol=0)


# -- defect 2: NaN/Inf ---------------------------------------------------------------------------------

def test_nonfinite_values_are_refused_naming_the_expert_and_tensor(models, tmp_path, capsys):
    d, base, expert = models
    bad = tmp_path / "nan-expert"
    shutil.copytree(expert, bad)
    tensors = load_file(bad / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"][3, 5] = float("nan")
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match=r"tensor 'model.layers.0.mlp.up_proj.weight' has NaN or Inf; non-finite "
                                               r"values in expert .*nan-expert"):
        merge(str(base), [str(expert), str(bad)], "task_arithmetic", out=tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.tmp-*"))
    code, err = run_cli(["merge", "--base", str(base), "--expert", str(bad), "--method", "ties", "--out",
                         str(tmp_path / "m"), "--quiet"], capsys, category="bad input", name="NaN in an expert")
    assert_one_line_error(code, err, "--allow-nonfinite")
    res = merge(str(base), [str(bad)], "task_arithmetic", out=tmp_path / "m", allow_nonfinite=True, progress=False)
    assert torch.isnan(load_file(res.out_dir / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]).any()


def test_nonfinite_lora_factors_are_refused(models, tmp_path):
    d, base, _ = models
    adapter = save_tiny_lora(tmp_path / "a", base, 1)
    tensors = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key][0, 0] = float("inf")
    save_file(tensors, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match="non-finite factors in adapter a"):
        merge(str(base), [str(adapter)], "lora_cat", out=tmp_path / "m", progress=False)


# -- defect 7: corrupt inputs end in one line, exit 2 ---------------------------------------------------

def _header_file(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> None:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)


CORRUPT_HEADERS = {
    "length 2^63": lambda p: _header_file(p, b"{}", length=2**63),
    "not JSON": lambda p: _header_file(p, b"{not json"),
    "a JSON list": lambda p: _header_file(p, b"[1, 2]"),
    "empty file": lambda p: p.write_bytes(b""),
    "offsets past the end": lambda p: _header_file(p, json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode(), b"\0" * 4),
    "offsets disagree with shape": lambda p: _header_file(p, json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode(), b"\0" * 8),
    "unknown dtype": lambda p: _header_file(p, json.dumps({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}).encode(), b"\0" * 8),
    "negative shape": lambda p: _header_file(p, json.dumps({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}).encode(), b"\0" * 8),
    "entry not an object": lambda p: _header_file(p, json.dumps({"w": 5}).encode()),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_HEADERS))
def test_corrupt_safetensors_are_one_line_naming_the_file(models, tmp_path, capsys, case):
    d, base, expert = models
    broken = tmp_path / "broken"
    shutil.copytree(expert, broken)
    CORRUPT_HEADERS[case](broken / "model.safetensors")
    with pytest.raises(CorruptCheckpointError):
        Hub().tensor_infos(Hub().resolve(str(broken)))
    code, err = run_cli(["merge", "--base", str(base), "--expert", str(broken), "--method", "ties", "--out",
                         str(tmp_path / "o"), "--quiet"], capsys, category="bad input", name=f"safetensors: {case}")
    assert_one_line_error(code, err, "broken/model.safetensors")
    assert not (tmp_path / "o").exists()


BAD_FOLDERS = {
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{nope"), "config.json"),
    "config.json a list": (lambda f: (f / "config.json").write_text("[1]"), "config.json"),
    "index not JSON": (lambda f: (f / "model.safetensors.index.json").write_text("{"), "index.json"),
    "index without weight_map": (lambda f: (f / "model.safetensors.index.json").write_text("{}"), "weight_map"),
    "index pointing outside": (lambda f: (f / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../../x.safetensors"}})), "not a file name inside"),
    "index naming a missing shard": (lambda f: (f / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}})), "missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_model_folders_are_one_line(models, tmp_path, capsys, case):
    d, base, expert = models
    broken = tmp_path / "broken"
    shutil.copytree(expert, broken)
    damage, needle = BAD_FOLDERS[case]
    damage(broken)
    code, err = run_cli(["merge", "--base", str(base), "--expert", str(broken), "--method", "ties", "--out",
                         str(tmp_path / "o"), "--quiet"], capsys, category="bad input", name=f"folder: {case}")
    assert_one_line_error(code, err, needle)


BAD_YAML = {
    "parameters a list": ("merge_method: ties\nbase_model: B\nmodels: [{model: E}]\nparameters: [1, 2]\n", "parameters: expected a mapping"),
    "dtype a number": ("merge_method: ties\nbase_model: B\nmodels: [{model: E}]\ndtype: 16\n", "dtype: expected a string"),
    "device a number": ("merge_method: ties\nbase_model: B\nmodels: [{model: E}]\ndevice: 0\n", "device: expected a string"),
    "model null": ("merge_method: ties\nbase_model: B\nmodels: [{model: null}]\n", "models[0].model"),
    "model a number": ("merge_method: ties\nbase_model: B\nmodels: [{model: 5}]\n", "models[0].model"),
    "top level a list": ("- 1\n- 2\n", "expected a mapping"),
    "merge_method a list": ("merge_method: [ties]\nbase_model: B\nmodels: [{model: E}]\n", "merge_method"),
    "weight a string": ("merge_method: ties\nbase_model: B\nmodels: [{model: E, parameters: {weight: heavy}}]\n", "weight"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_merge_yaml_is_one_line(models, tmp_path, capsys, case):
    d, base, expert = models
    text, needle = BAD_YAML[case]
    path = tmp_path / "m.yaml"
    path.write_text(text.replace("base_model: B", f"base_model: {base}").replace("model: E", f"model: {expert}"))
    code, err = run_cli(["merge", str(path), "--out", str(tmp_path / "o")], capsys, category="bad input", name=f"yaml: {case}")
    assert_one_line_error(code, err, needle)


def test_binary_and_missing_yaml(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"\x00\xff\xfe binary \x89PNG")
    code, err = run_cli(["merge", str(path), "--out", str(tmp_path / "o")], capsys, category="bad input", name="yaml: binary")
    assert_one_line_error(code, err, "m.yaml")
    code, err = run_cli(["merge", str(tmp_path), "--out", str(tmp_path / "o")], capsys, category="bad input", name="yaml: a folder")
    assert_one_line_error(code, err, "is a folder")


@pytest.mark.parametrize("args,needle", [
    (["--max-shard-size", "lots"], "'lots' is not a size"),
    (["--max-shard-size", "0"], "'0' is not a size"),
    (["--max-shard-size", "-5"], "'-5' is not a size"),
    (["--device", "bogus"], "'bogus' is not a device"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "cuda"),
    (["--dtype", "float12"], "'float12' is not a dtype"),
    (["--param", "density=lots"], "expected a number"),
], ids=["shard-lots", "shard-0", "shard-neg", "device-bogus", "device-cuda", "dtype", "param-type"])
def test_bad_command_line_options_are_one_line(models, tmp_path, capsys, args, needle):
    d, base, expert = models
    code, err = run_cli(["merge", "--base", str(base), "--expert", str(expert), "--method", "ties", "--out",
                         str(tmp_path / "o"), *args], capsys, category="bad input", name=f"option: {' '.join(args)}")
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("field,value", [("r", "8"), ("lora_alpha", "sixteen"), ("r", 0), ("r", True),
                                         ("rank_pattern", {"q_proj": "4"}), ("use_rslora", "yes")])
def test_adapter_configs_with_wrong_types_are_refused(models, tmp_path, capsys, field, value):
    d, base, _ = models
    adapter = save_tiny_lora(tmp_path / "a", base, 1)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg[field] = value
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    code, err = run_cli(["merge", "--base", str(base), "--expert", str(adapter), "--method", "lora_cat", "--out",
                         str(tmp_path / "o")], capsys, category="bad input", name=f"adapter config: {field}={value!r}")
    assert_one_line_error(code, err, f"{field}=")


# -- network errors: bounded retries, then one line ---------------------------------------------------

def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_is_one_line_after_bounded_retries(models, tmp_path, capsys):
    d, base, _ = models
    endpoint = f"http://user:secret-password@127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    code, err = run_cli(["merge", "--base", str(base), "--expert", "org/expert", "--method", "ties", "--out",
                         str(tmp_path / "o"), "--endpoint", endpoint], capsys, category="bad input", name="Hub unreachable")
    assert_one_line_error(code, err, "cannot reach the Hub at http://127.0.0.1:")
    assert "secret-password" not in err and time.monotonic() - start < 20
    with pytest.raises(HubConnectionError):
        Hub(endpoint=endpoint).resolve("org/model")


def test_retries_back_off_and_stop(monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    from hf_time import hub_retry
    from hf_time.errors import HubRequestError

    class Response:  # what HfHubHTTPError reads of an HTTP response
        status_code, headers, request, url = 503, {"Retry-After": "2"}, None, "http://h/api/models/org/x"

    calls, slept = [], []

    def flaky():
        calls.append(1)
        raise HfHubHTTPError("busy", response=Response())

    with pytest.raises(HubRequestError, match="answered 503 after 3 tries; try again later"):
        hub_retry.call(flaky, what="reading org/x", endpoint="http://h", sleep=slept.append)
    assert len(calls) == 3 and slept == [2.0, 2.0]  # Retry-After honoured, capped, bounded
    Response.status_code = 401
    calls.clear()
    with pytest.raises(HubRequestError, match="401; the token was refused"):
        hub_retry.call(flaky, what="reading org/x", endpoint="http://h", sleep=slept.append)
    assert len(calls) == 1  # never retried


# -- defect 8: crashes leave nothing behind ------------------------------------------------------------

def test_temp_folders_of_dead_writers_are_swept_and_live_ones_kept(models, tmp_path):
    from hf_time.atomic import OWNER_SUFFIX

    d, base, expert = models
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    stale = tmp_path / ".m.tmp-dead"
    stale.mkdir()
    (tmp_path / (stale.name + OWNER_SUFFIX)).write_text(f"{socket.gethostname()} {dead.stdout.strip()}\n")
    (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    live = tmp_path / ".m.tmp-live"
    live.mkdir()
    (tmp_path / (live.name + OWNER_SUFFIX)).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    legacy = tmp_path / ".m.tmp-legacy"
    legacy.mkdir()
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    merge(str(base), [str(expert)], "ties", out=tmp_path / "m", progress=False)
    assert not stale.exists() and not legacy.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, live.name + OWNER_SUFFIX, "m"]
    record("partial outputs", "stale temp folders swept", ok=True)


KILL_POINTS = {  # where a merge process is SIGKILLed: the writer's n-th tensor, or just before the rename
    "dense, first tensor written": (["--method", "ties"], "write", 1),
    "dense, midway": (["--method", "ties"], "write", 10),
    "dense, complete but not renamed": (["--method", "ties"], "fsync", 1),
    "sequential fold, pass 1": (["--method", "opcm"], "write", 5),
}


@pytest.mark.parametrize("case", sorted(KILL_POINTS))
def test_a_merge_killed_at_any_point_leaves_no_output(models, tmp_path, case):
    d, base, expert = models
    args, where, nth = KILL_POINTS[case]
    previous = []
    if "--method" in args and "opcm" in args:  # a fold at t = 2 runs the two-pass path
        first = merge(str(base), [str(expert)], "opcm", out=tmp_path / "f1", progress=False)
        previous = ["--previous", str(first.out_dir)]
    hook = {"write": "engine.ShardedSafetensorsWriter.write", "fsync": "atomic.fsync_tree"}[where]
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from hf_time import atomic, engine
owner, attr = {hook!r}.rsplit(".", 1)
target = {{"engine.ShardedSafetensorsWriter": engine.ShardedSafetensorsWriter, "atomic": atomic}}[owner]
real, calls = getattr(target, attr), [0]
def hooked(*a, **k):
    calls[0] += 1
    if calls[0] >= {nth}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
setattr(target, attr, hooked)
from hf_time.cli import main
main(["merge", "--base", {str(base)!r}, "--expert", {str(expert)!r}, *{args + previous!r}, "--out", {str(tmp_path / "m")!r}, "--quiet"])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    left = (tmp_path / "m").exists()
    assert not left  # the name appears only when complete
    again = merge(str(base), [str(expert)], args[1], previous=previous[1] if previous else None, out=tmp_path / "m",
                  progress=False)  # the next run sweeps what the dead one left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [] and again.out_dir.is_dir()
    record("kill points", f"merge killed: {case}", ok=not left)


def test_a_torn_evaluation_cache_file_cannot_happen(tmp_path, monkeypatch):
    from hf_time.atomic import atomic_write_text

    target = tmp_path / "eval" / "k.json"
    atomic_write_text(target, '{"a": 1}\n')

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, '{"a": 2, "b": 3}\n')
    assert target.read_text() == '{"a": 1}\n' and [p.name for p in target.parent.iterdir()] == ["k.json"]


def test_outputs_honour_the_umask(models, tmp_path):
    d, base, expert = models
    old = os.umask(0o022)
    try:
        res = merge(str(base), [str(expert)], "ties", out=tmp_path / "m", progress=False)
    finally:
        os.umask(old)
    assert res.out_dir.stat().st_mode & 0o777 == 0o755
