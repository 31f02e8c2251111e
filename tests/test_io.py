import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_time.errors import MissingWeightsError, OutputExistsError, UnsafeCheckpointError
from hf_time.io import (
    Checkpoint, ShardedSafetensorsWriter, TensorInfo, atomic_output_dir, parse_size, plan_shards,
    read_safetensors_header,
)


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "b.ids": torch.arange(5),
        "c.weight": torch.randn(50, 20, generator=g),
        "scalar": torch.tensor(3.0),
    }


def _infos(ts):
    codes = {torch.bfloat16: "BF16", torch.int64: "I64", torch.float32: "F32"}
    return [TensorInfo(k, codes[v.dtype], tuple(v.shape)) for k, v in ts.items()]


def test_header_read_without_data(tmp_path):
    ts = _tensors()
    save_file(ts, tmp_path / "m.safetensors")
    infos = read_safetensors_header(tmp_path / "m.safetensors")
    assert infos["c.weight"] == TensorInfo("c.weight", "F32", (50, 20))
    assert infos["a.weight"].nbytes() == 24 and infos["c.weight"].nbytes(torch.bfloat16) == 2000


@pytest.mark.parametrize("max_bytes,n_files", [(10**9, 1), (4030, 2), (1, 4)])
def test_streaming_writer_roundtrip_and_sharding(tmp_path, max_bytes, n_files):
    ts = _tensors()
    w = ShardedSafetensorsWriter(tmp_path, plan_shards(_infos(ts), max_bytes), {"hf_time": "test"})
    for k, v in ts.items():
        w.write(k, v)
    files = w.close()
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) == n_files
    if n_files > 1:
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(ts)
        assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in ts.values())
    loaded = {}
    for f in shards:  # the reference reader accepts every file we wrote
        loaded.update(load_file(tmp_path / f))
    for k, v in ts.items():
        assert torch.equal(loaded[k], v)
    ck = Checkpoint(tmp_path)
    assert ck.names() == list(ts)
    assert torch.equal(ck.get("c.weight"), ts["c.weight"])


def test_writer_refuses_out_of_plan_tensors(tmp_path):
    ts = _tensors()
    w = ShardedSafetensorsWriter(tmp_path, plan_shards(_infos(ts), 10**9))
    with pytest.raises(ValueError, match="does not match the plan"):
        w.write("b.ids", ts["b.ids"])
    w2 = ShardedSafetensorsWriter(tmp_path, plan_shards(_infos(ts), 10**9))
    w2.write("a.weight", ts["a.weight"])
    with pytest.raises(ValueError, match="before tensor 'b.ids'"):
        w2.close()


def test_plan_shards_keeps_order_and_limits():
    infos = [TensorInfo(f"t{i}", "F32", (10,)) for i in range(5)]  # 40 bytes each
    shards = plan_shards(infos, 100)
    assert [[i.name for i in s] for s in shards] == [["t0", "t1"], ["t2", "t3"], ["t4"]]


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("200MB") == 2 * 10**8 and parse_size("1GiB") == 2**30
    assert parse_size(123) == 123


def test_atomic_output_dir_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "partial.safetensors").write_bytes(b"x")
            raise RuntimeError("interrupted")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temp dir is gone too


def test_atomic_output_dir_refuses_existing_and_replaces_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # old output intact until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_pickle_refused_unless_allowed(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="--allow-pickle"):
        Checkpoint(tmp_path)
    ck = Checkpoint(tmp_path, allow_pickle=True)
    assert torch.equal(ck.get("w"), torch.ones(2))


def test_pickle_with_code_is_not_executed(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"w": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception):
        Checkpoint(tmp_path, allow_pickle=True)  # weights_only=True refuses arbitrary objects
    assert not (tmp_path / "pwned").exists()


def test_no_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        Checkpoint(tmp_path)


def test_sha256_is_computed_once_per_file_version(tmp_path, monkeypatch):
    import hashlib

    from hf_time import hashing

    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashing.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    first = hashing.sha256_file(path)
    assert hashing.sha256_file(path) == first == real(b"a" * 1000).hexdigest() and len(calls) == 1
    path.write_bytes(b"b" * 1001)  # a new version of the file is hashed again
    assert hashing.sha256_file(path) == real(b"b" * 1001).hexdigest() and len(calls) == 2


def test_writer_hashes_each_shard_while_writing_and_the_hash_is_not_recomputed(tmp_path, monkeypatch):
    import hashlib

    from hf_time import hashing

    ts = _tensors()
    w = ShardedSafetensorsWriter(tmp_path / "tmp", plan_shards(_infos(ts), 4030), {"hf_time": "test"})
    (tmp_path / "tmp").mkdir()
    for k, v in ts.items():
        w.write(k, v)
    files = w.close()
    shards = [f for f in files if f.endswith(".safetensors")]
    assert sorted(w.sha256) == sorted(shards)
    for f in shards:
        assert w.sha256[f] == hashlib.sha256((tmp_path / "tmp" / f).read_bytes()).hexdigest()
    (tmp_path / "tmp").rename(tmp_path / "out")  # how an output folder is published: renamed into place
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashing.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert {f: hashing.sha256_file(tmp_path / "out" / f) for f in shards} == w.sha256
    assert calls == []  # remembered from the writer, across the rename


def test_writer_abort_stops_its_hasher_and_closes_the_shard(tmp_path):
    ts = _tensors()
    w = ShardedSafetensorsWriter(tmp_path, plan_shards(_infos(ts), 10**9))
    w.write("a.weight", ts["a.weight"])
    hasher = w._hasher
    w.abort()
    hasher._thread.join(timeout=10)
    assert not hasher._thread.is_alive() and w._fh is None
    w.abort()  # idempotent


def test_view_is_zero_copy_read_only_in_effect_and_survives_release(tmp_path):
    ts = _tensors()
    save_file(ts, tmp_path / "model.safetensors")
    ck = Checkpoint(tmp_path)
    view = ck.view("c.weight", populate=True)
    assert torch.equal(view, ts["c.weight"]) and view.shape == (50, 20)
    view2 = ck.view("c.weight")
    assert view.data_ptr() == view2.data_ptr()  # the same mapped bytes, not copies
    ck.release("c.weight")  # pages dropped from the process: the view reads them again from the file
    assert torch.equal(view, ts["c.weight"])
    view.mul_(0)  # a private mapping: even a buggy writer cannot change the checkpoint
    assert torch.equal(load_file(tmp_path / "model.safetensors")["c.weight"], ts["c.weight"])
    assert torch.equal(ck.view("b.ids"), ts["b.ids"])
    ck.close()


def test_view_of_a_truncated_file_is_an_error_not_a_crash(tmp_path):
    from hf_time.errors import CorruptCheckpointError

    ts = _tensors()
    save_file(ts, tmp_path / "model.safetensors")
    ck = Checkpoint(tmp_path)
    assert torch.equal(ck.view("a.weight"), ts["a.weight"])
    path = tmp_path / "model.safetensors"
    with open(path, "r+b") as f:  # truncated after it was opened (touching those pages would be SIGBUS)
        f.truncate(path.stat().st_size - 100)
    last = list(ck.infos)[-1]
    with pytest.raises(CorruptCheckpointError, match="truncated after it was opened"):
        ck.view(last)


def test_view_of_an_unaligned_tensor_is_a_copy_with_the_right_values(tmp_path):
    from hf_time.io import read_safetensors_layout, write_safetensors

    ts = {"odd": torch.arange(3, dtype=torch.uint8), "w": torch.randn(4, 5)}  # stored in this order
    write_safetensors(tmp_path / "model.safetensors", ts)
    assert read_safetensors_layout(tmp_path / "model.safetensors")["w"].start % 4 == 3  # float32 at an odd byte
    ck = Checkpoint(tmp_path)
    assert torch.equal(ck.view("w"), ts["w"]) and torch.equal(ck.view("odd"), ts["odd"])


def test_writer_flushes_large_shards_to_disk_in_the_background(tmp_path, monkeypatch):
    from hf_time import io

    synced = []
    real = io._fdatasync
    monkeypatch.setattr(io, "SYNC_EVERY", 1000)  # bytes
    monkeypatch.setattr(io._TrailingHasher, "_BLOCK", 1024)  # the hasher reads back 1 KiB at a time
    monkeypatch.setattr(io, "_fdatasync", lambda fd: synced.append(fd) or real(fd))
    ts = _tensors()
    w = ShardedSafetensorsWriter(tmp_path, plan_shards(_infos(ts), 10**9))
    for k, v in ts.items():
        w.write(k, v)
    w.close()
    assert len(synced) >= 3  # ~4.4 KB written, 4000 of them in one tensor: a sync whenever 1000 more are hashed
    assert torch.equal(load_file(tmp_path / "model.safetensors")["c.weight"], ts["c.weight"])


def test_views_work_where_the_platform_has_no_madvise(tmp_path, monkeypatch):
    import mmap as mmap_module

    from hf_time import io

    ts = _tensors()
    save_file(ts, tmp_path / "model.safetensors")
    monkeypatch.delattr(mmap_module, "MADV_DONTNEED")
    monkeypatch.delattr(mmap_module, "MADV_WILLNEED")
    monkeypatch.setattr(io, "_MADV_POPULATE_READ", None)  # as on Windows: advice is skipped, not an error
    ck = Checkpoint(tmp_path)
    view = ck.view("c.weight", populate=True)
    ck.release("c.weight")
    assert torch.equal(view, ts["c.weight"])


def test_a_scratch_writer_writes_the_same_bytes_without_hashing_or_syncing(tmp_path, monkeypatch):
    from hf_time import hashing, io

    synced = []
    monkeypatch.setattr(io, "SYNC_EVERY", 1)  # a kept shard is synced after every block it hashes
    monkeypatch.setattr(io, "_fdatasync", lambda fd: synced.append(fd))
    ts = _tensors()
    written = {}
    for name, hashed in (("kept", True), ("scratch", False)):
        (tmp_path / name).mkdir()
        before = len(synced)
        w = ShardedSafetensorsWriter(tmp_path / name, plan_shards(_infos(ts), 4030), {"hf_time": "test"}, hashed=hashed)
        for k, v in ts.items():
            w.write(k, v)
        files = w.close()
        written[name] = (files, dict(w.sha256), len(synced) - before)
    files = written["kept"][0]
    assert written["scratch"][0] == files and len(files) == 3  # two shards and the index
    assert sorted(written["kept"][1]) == files[:2] and written["kept"][2] > 0
    assert written["scratch"][1] == {} and written["scratch"][2] == 0
    for f in files:
        assert (tmp_path / "scratch" / f).read_bytes() == (tmp_path / "kept" / f).read_bytes()
    assert all(hashing.known_sha256(tmp_path / "kept" / f) == written["kept"][1][f] for f in files[:2])
    assert all(hashing.known_sha256(tmp_path / "scratch" / f) is None for f in files[:2])  # nothing remembered
