"""The streaming engine's fast paths: mapped inputs, sliced elementwise ops, the background write thread.

Each must give the same files as the plain path and fail cleanly: a failed write is raised on the
caller's thread (never lost in a thread, never a hang), the half-written output is discarded, and
the lineage's hash of every weight file is the hash of its bytes.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from tiny import save_tiny_llama

from hf_time import engine
from hf_time.api import merge
from hf_time.io import Checkpoint, ShardedSafetensorsWriter


@pytest.fixture(scope="module")
def bf16_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    base = save_tiny_llama(root / "base", 0, dtype=torch.bfloat16, max_shard_size="100KB")
    experts = [save_tiny_llama(root / f"e{i}", i, base=base, dtype=torch.bfloat16) for i in (1, 2, 3)]
    return base, experts


def _weights(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


@pytest.mark.parametrize("method,params", [("task_arithmetic", {"lambda": 0.7}), ("linear", {}),
                                           ("ties", {"density": 0.4})])
def test_tiny_slices_write_the_same_files(bf16_models, tmp_path, monkeypatch, method, params):
    base, experts = bf16_models
    merge(str(base), [str(e) for e in experts], method, params=params, out=tmp_path / "default", dtype="bfloat16",
          progress=False)
    from hf_time.merges import bitselect

    monkeypatch.setattr(bitselect, "SLICE", 333)  # many slices per tensor, none aligned with a row
    merge(str(base), [str(e) for e in experts], method, params=params, out=tmp_path / "sliced", dtype="bfloat16",
          progress=False)
    assert _weights(tmp_path / "sliced") == _weights(tmp_path / "default")


@pytest.mark.parametrize("cores", [1, 3])
def test_slices_shared_out_to_any_number_of_cores_write_the_same_files(bf16_models, tmp_path, monkeypatch, cores):
    from hf_time.merges import bitselect, workers

    base, experts = bf16_models
    monkeypatch.setattr(bitselect, "SLICE", 333)
    merge(str(base), [str(e) for e in experts], "task_arithmetic", params={"lambda": 0.7}, out=tmp_path / "one",
          dtype="bfloat16", progress=False, device="cpu")
    monkeypatch.setattr(workers, "count", lambda: cores)
    merge(str(base), [str(e) for e in experts], "task_arithmetic", params={"lambda": 0.7}, out=tmp_path / "many",
          dtype="bfloat16", progress=False)
    assert _weights(tmp_path / "many") == _weights(tmp_path / "one")


def test_a_non_finite_slice_names_every_input_with_nan_in_the_tensor(bf16_models, tmp_path, monkeypatch):
    """Whichever core's slice meets a NaN first, the error names the inputs by their whole tensor:
    here input 1 has a NaN in the first slice and input 2 in the last one."""
    from safetensors.torch import save_file

    from hf_time.errors import NonFiniteError
    from hf_time.merges import bitselect, workers

    base, experts = bf16_models
    ck = Checkpoint(base)
    name = max((n for n, i in ck.infos.items() if i.is_float), key=lambda n: ck.infos[n].numel)
    bad = []
    for i, at in enumerate((0, -1)):
        tensors = {n: Checkpoint(experts[i]).get(n).clone() for n in ck.infos}
        tensors[name].view(-1)[at] = float("nan")
        folder = tmp_path / f"bad{i}"
        folder.mkdir()
        save_file(tensors, folder / "model.safetensors")
        bad.append(Checkpoint(folder))
    monkeypatch.setattr(bitselect, "SLICE", 333)
    monkeypatch.setattr(workers, "count", lambda: 2)
    job = engine.StreamJob(op=lambda b, xs, ctx: b.float() + xs[0].float() + xs[1].float(), weights=(1.0, 1.0),
                           native_inputs=True, elementwise=True)
    with pytest.raises(NonFiniteError, match=rf"tensor '{name}' has NaN or Inf; non-finite values in input 1, input 2\."):
        engine.run(ck, bad, job, engine.make_writer(tmp_path / "out", ck.infos, torch.bfloat16, 2**40), progress=False)


def test_lineage_hashes_are_the_hashes_of_the_written_bytes(bf16_models, tmp_path):
    base, experts = bf16_models
    merge(str(base), [str(e) for e in experts], "task_arithmetic", out=tmp_path / "m", dtype="bfloat16", progress=False)
    files = json.loads((tmp_path / "m" / "hf_time.json").read_text())["output"]["files"]
    weights = {f: h for f, h in files.items() if f.endswith(".safetensors")}
    assert weights and all(hashlib.sha256((tmp_path / "m" / f).read_bytes()).hexdigest() == h
                           for f, h in weights.items())


class _FailingWriter(ShardedSafetensorsWriter):
    """Fails on its third tensor, as a full disk would."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.aborted = 0, False

    def write(self, name, tensor):
        self.calls += 1
        if self.calls == 3:
            raise OSError(28, "No space left on device")
        super().write(name, tensor)

    def abort(self):
        self.aborted = True
        super().abort()


def test_a_write_error_in_the_write_thread_reaches_the_caller_and_aborts_the_writer(bf16_models, tmp_path):
    base, experts = bf16_models
    ck = Checkpoint(base)
    sources = [Checkpoint(e) for e in experts]
    plain = engine.make_writer(tmp_path, ck.infos, torch.bfloat16, 2**40)
    writer = _FailingWriter(tmp_path, plain.shards)
    plain.abort()
    job = engine.StreamJob(op=lambda b, xs, ctx: sum(x.float() for x in xs) / len(xs), weights=(1.0,) * 3)
    with pytest.raises(OSError, match="No space left"):
        engine.run(ck, sources, job, writer, progress=False)
    assert writer.aborted and writer.calls == 3


def test_an_op_error_aborts_the_writer_after_the_pending_write(bf16_models, tmp_path):
    base, experts = bf16_models
    ck = Checkpoint(base)
    writer = engine.make_writer(tmp_path, ck.infos, torch.bfloat16, 2**40)
    seen = []

    def op(b, xs, ctx):
        seen.append(ctx.name)
        if len(seen) == 4:
            raise ValueError(f"bad tensor {ctx.name}")
        return b.float()

    with pytest.raises(ValueError, match="bad tensor"):
        engine.run(ck, [Checkpoint(experts[0])], engine.StreamJob(op=op, weights=(1.0,)), writer, progress=False)
    assert writer._fh is None and writer._hasher is None  # aborted: file closed, hasher stopped


def test_inputs_are_released_from_the_process_after_each_tensor(bf16_models, tmp_path, monkeypatch):
    base, experts = bf16_models
    released = []
    monkeypatch.setattr(Checkpoint, "release", lambda self, name: released.append((self.folder.name, name)))
    merge(str(base), [str(e) for e in experts], "task_arithmetic", out=tmp_path / "m", progress=False)
    names = list(Checkpoint(base).infos)
    for folder in ("base", "e1", "e2", "e3"):
        assert [n for f, n in released if f == folder] == names
