"""Many processes (issue 8): a 2-step tiny-Llama timeline under ``torchrun --nproc_per_node 2`` (gloo, CPU)
makes exactly the commits and tags of the 1-process run, and its step-2 snapshot holds the same weights
within float tolerance; the helpers of hf_time.distributed in a world of one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HUB_TOKEN
from safetensors.torch import load_file
from test_timeline_llm import lm_base, lm_timeline  # noqa: F401  (lm_base is a fixture)

from hf_time import distributed
from hf_time.errors import ConfigError
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline

ROOT = Path(__file__).parent.parent
LR = 1e-3


def _history(h, repo_id: str) -> tuple[int, list[str]]:
    """(number of commits, sorted tags) of a repo; (0, []) when it does not exist."""
    if not h.api.repo_exists(repo_id):
        return 0, []
    commits = h.api.list_repo_commits(repo_id)
    tags = sorted(t.name for t in h.api.list_repo_refs(repo_id).tags)
    return len(commits), tags


def _weights(h, ref: str) -> dict[str, torch.Tensor]:
    return load_file(Path(h.download(h.resolve(ref), ["*.safetensors", "*.json"])) / "model.safetensors")


def test_a_two_process_run_makes_the_commits_and_the_weights_of_a_one_process_run(lm_base, hub, tmp_path):  # noqa: F811
    h, _ = lm_base
    over = {"training": {"learning_rate": LR}}
    one = timeline_config_from_dict(lm_timeline(tmp_path / "one", "tests/tiny-llama", "llm-one-process", **over))
    run_timeline(one, hub=h, work_dir=tmp_path / "w1", progress=False)

    two = lm_timeline(tmp_path / "two", "tests/tiny-llama", "llm-two-processes", **over)
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump(two))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_TOKEN": HUB_TOKEN}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hf_time.cli", "timeline", "run", str(cfg), "--hub", hub.url, "--work", str(tmp_path / "w2"), "--quiet"]
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # Progress and summaries are printed once, by the main process.
    assert out.stdout.count("tests/llm-two-processes@step-2 in") == 1 and "train_runtime" not in out.stdout

    # One commit per node, as with one process: the same commits and tags in every repo of the timeline.
    base_one, base_two = "tests/llm-one-process", "tests/llm-two-processes"
    for suffix in ("", "-experts", "-running"):
        assert _history(h, base_two + suffix) == _history(h, base_one + suffix), suffix
    assert _history(h, base_two)[1] == ["step-1", "step-2"]
    assert _history(h, base_two + "-experts") == (_history(h, base_one + "-experts")[0], ["step-1", "step-2"])

    # The same weights. Each process sums its half of a batch's completion NLL and the gradients are
    # all-reduced: the same sum in another order, with micro-batches padded to their own length, so the
    # gradients agree to float32 rounding (~1e-7 relative; the largest difference seen here is 3e-8).
    # Adam's step is ~`lr` per weight whatever the gradient's size, so a run that dropped, repeated or
    # rescaled part of a batch is off by O(LR) in many weights, and a rounding difference in a
    # near-zero gradient can move Adam's step by a small fraction of `lr`: LR / 100 separates the two.
    expected, got = _weights(h, f"{base_one}@step-2"), _weights(h, f"{base_two}@step-2")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name].float(), tensor.float(), rtol=0, atol=LR / 100, msg=name)
    moved = max((got[n].float() - t.float()).abs().max().item() for n, t in _weights(h, "tests/tiny-llama").items())
    assert moved > LR  # training really moved the weights (the tolerance is not vacuous)


def test_a_world_of_one_needs_no_process_group(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.init() == distributed.World(0, 0, 1) and distributed.is_main()
    assert distributed.broadcast_object({"sha": "abc"}) == {"sha": "abc"}
    distributed.barrier()
    with distributed.main_first() as w:
        assert w.is_main
    assert not torch.distributed.is_initialized()


def test_the_batch_splits_over_processes_and_accumulation_or_is_refused(monkeypatch):
    assert distributed.per_device_batch(8, 2, 2) == 2 and distributed.per_device_batch(4, 1, 1) == 4
    with pytest.raises(ConfigError, match=r"training.batch_size=6 is not a multiple of .* = 1 × 4; .* multiple of 4"):
        distributed.per_device_batch(6, 1, 4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ConfigError, match="RANK=3 is not in a world of WORLD_SIZE=2"):
        distributed.world()


class _FakeGroup:
    """broadcast_object as a follower sees it: the main process's messages, in order."""

    def __init__(self, messages):
        self.messages = list(messages)
        self.sent = []

    def broadcast(self, obj=None, src=0):
        if obj is not None:  # the main process speaking
            self.sent.append(obj)
            return obj
        return self.messages.pop(0)


def test_a_follower_trains_each_job_of_the_main_process_and_returns_its_run(monkeypatch, tmp_path):
    from hf_time.timeline import collective

    group = _FakeGroup([("train", {"init_dir": str(tmp_path / "init"), "task": type("T", (), {"name": "qa"})(),
                                   "config": "cfg", "out_dir": str(tmp_path / "out"), "replay": None, "device": "cpu"}),
                        ("done", "the run")])
    monkeypatch.setattr(collective.distributed, "broadcast_object", group.broadcast)
    monkeypatch.setattr(collective.distributed, "barrier", lambda: None)
    calls = []

    def trainer(init_dir, task, config, out_dir, *, replay, device):
        calls.append((init_dir, task.name, config, out_dir, replay, device))
        return out_dir

    assert collective.follow(trainer) == "the run"
    assert calls == [(tmp_path / "init", "qa", "cfg", tmp_path / "out", None, "cpu")]


def test_a_failure_of_the_main_process_ends_the_followers_with_its_message(monkeypatch):
    from hf_time.errors import DistributedRunError
    from hf_time.timeline import collective

    main = _FakeGroup([])
    monkeypatch.setattr(collective.distributed, "broadcast_object", main.broadcast)

    def boom():
        raise ConfigError("training.steps must be >= 1")

    with pytest.raises(ConfigError):
        collective.lead(boom)
    assert main.sent == [("failed", "ConfigError: training.steps must be >= 1")]
    monkeypatch.setattr(collective.distributed, "broadcast_object", _FakeGroup(main.sent).broadcast)
    with pytest.raises(DistributedRunError, match=r"the main process \(rank 0\) failed: ConfigError: training.steps"):
        collective.follow(lambda *a, **k: None)


def test_a_training_that_fails_on_the_main_process_sends_no_message_into_the_followers_collective(monkeypatch):
    """The followers are inside that training's collectives: a broadcast would hang; the main process
    raises at once and the launcher (torchrun) ends the others."""
    from hf_time.timeline import collective

    main = _FakeGroup([])
    monkeypatch.setattr(collective.distributed, "broadcast_object", main.broadcast)

    def failing(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    leader = collective.CollectiveTrainer(failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        collective.lead(lambda: leader("init", "task", "cfg", "out"), leader)
    assert [kind for kind, _ in main.sent] == ["train"] and leader.broken
