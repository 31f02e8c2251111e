"""Issue 10.3: one labelled bar per unit of work, full names, and a --quiet that is quiet.

Before: the training bar said ``0/40`` (later ``training a``), evaluation bars showed cache keys
(``evaluating 0a1ce5f017ebad8b…``, ``chain-1-6c2fde…``), transformers' "Loading weights" / "Writing
model shards" and datasets' "Generating train split" bars flooded the output, and ``--quiet``
printed Trainer's metrics dict.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from test_timeline_common import TASKS, save_tiny_bert, timeline_dict, write_toy_tasks

from hf_time import progress
from hf_time.hub import Hub

HEX_KEY = re.compile(r"[0-9a-f]{12,}")  # a content key or sha in a bar label
LIBRARY_BARS = ("Loading weights", "Writing model shards", "Generating train split", "Map")


def test_labels_nest_and_subjects_name_the_model():
    assert progress.label("merging (linear)") == "merging (linear)"
    with progress.unit("step 2/3"):
        assert progress.label("merging (linear)") == "step 2/3 · merging (linear)"
        with progress.unit("expert 1/2"):
            assert progress.label("x") == "step 2/3 · expert 1/2 · x"
        assert progress.current_subject("chain-2-6c2fde0123456789") == "chain-2-6c2fde0123456789"
        with progress.subject("the model deployed after step 2"):
            assert progress.current_subject("chain-2-6c2fde0123456789") == "the model deployed after step 2"
    assert progress.label("x") == "x"


def test_quiet_turns_everything_off_and_restores_it():
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as tf_logging

    before = (are_progress_bars_disabled(), tf_logging.is_progress_bar_enabled())
    assert progress.enabled()
    with progress.quiet():
        assert not progress.enabled()
        assert are_progress_bars_disabled() and not tf_logging.is_progress_bar_enabled()
    assert progress.enabled()
    assert (are_progress_bars_disabled(), tf_logging.is_progress_bar_enabled()) == before
    with progress.quiet(False):
        assert progress.enabled()


def test_libraries_quiet_keeps_hub_transfer_bars_unless_asked(monkeypatch):
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as tf_logging

    hub_tqdm = sys.modules["huggingface_hub.utils.tqdm"]  # the module (the package exports a class of that name)
    monkeypatch.setattr(hub_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)  # as on a user's machine: no env override
    was_disabled = are_progress_bars_disabled()
    enable_progress_bars()
    tf_logging.enable_progress_bar()
    try:
        with progress.libraries_quiet():
            # transformers' switch flips huggingface_hub's too: the transfer bars must survive it
            assert not tf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
        with progress.libraries_quiet(hub=True):
            assert are_progress_bars_disabled()
        assert tf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    finally:
        tf_logging.disable_progress_bar()
        if was_disabled:
            disable_progress_bars()


def test_training_and_evaluation_bars_say_what_runs(tmp_path, capsys):
    from hf_time.evaluation import evaluate_results
    from hf_time.tasks import task_from_dataset
    from hf_time.training import TrainingConfig, finetune

    base = save_tiny_bert(tmp_path / "base")
    paths = write_toy_tasks(tmp_path / "data")
    task = task_from_dataset("a", paths["a"], label_descriptions=TASKS["a"][2], n_test=6)
    cfg = TrainingConfig(steps=2, batch_size=4, max_length=8)
    with progress.unit("step 2/3"):
        finetune(base, task, cfg, tmp_path / "e")
        with progress.subject("the model deployed after step 2"):
            evaluate_results(tmp_path / "e", [task])
    err = capsys.readouterr().err
    assert "step 2/3 · training a expert · 2 steps" in err
    assert "step 2/3 · evaluating the model deployed after step 2 · 1 task" in err
    evaluate_results(tmp_path / "e", [task])  # no subject: the folder's own name
    assert "evaluating e · 1 task" in capsys.readouterr().err
    hub_copy = tmp_path / "models--demo--all-MiniLM-L6-v2" / "snapshots" / ("0a1ce5f017ebad8b" * 2 + "01234567")
    hub_copy.parent.mkdir(parents=True)
    (tmp_path / "e").rename(hub_copy)  # a model as huggingface_hub downloads it: named by its sha
    evaluate_results(hub_copy, [task])
    assert "evaluating demo/all-MiniLM-L6-v2 · 1 task" in capsys.readouterr().err
    with progress.quiet():
        finetune(base, task, cfg, tmp_path / "e2")
        evaluate_results(tmp_path / "e2", [task])
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""  # no bar, and no Trainer metrics dict either


@pytest.fixture(scope="module")
def timeline_yaml(hub, tmp_path_factory):
    d = tmp_path_factory.mktemp("progress_tl")
    Hub(endpoint=hub.url).publish(save_tiny_bert(d / "base"), "tests/progress-base", commit_message="tiny base")
    return d


def _run_timeline_cli(hub, folder, name: str, *extra: str) -> subprocess.CompletedProcess:
    data = timeline_dict(folder, "tests/progress-base", name)
    data["tasks"] = data["tasks"][:2]
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    # As a user's shell has it: no HF_HUB_DISABLE_PROGRESS_BARS (conftest sets it), a cold cache.
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env.update(HF_HOME=str(folder / f"home-{name}"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "hf_time.cli", "timeline", "run", str(folder / f"{name}.yaml"),
                           "--hub", hub.url, "--work", str(folder / f"work-{name}"), *extra],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def test_timeline_bars_are_labelled_by_step_and_never_show_keys(hub, timeline_yaml):
    proc = _run_timeline_cli(hub, timeline_yaml, "labelled")
    assert proc.returncode == 0, proc.stderr
    bars = {line.split(":")[0].strip() for line in proc.stderr.replace("\r", "\n").splitlines() if "%|" in line}
    assert {"set-up · evaluating the base tests/progress-base · 3 tasks",
            "step 1/2 · training a expert · 2 steps", "step 1/2 · merging (linear)",
            "step 1/2 · evaluating the model deployed after step 1 · 3 tasks",
            "step 2/2 · training b expert · 2 steps",
            "step 2/2 · evaluating the model deployed after step 2 · 3 tasks"} <= bars, bars
    assert not [b for b in bars if HEX_KEY.search(b)], bars
    assert not [b for b in bars if b.startswith(LIBRARY_BARS)], bars
    # the tables carry full names
    assert "deployed after" in proc.stdout and "push_expert" in proc.stdout


def test_timeline_quiet_prints_no_bar_at_all(hub, timeline_yaml):
    proc = _run_timeline_cli(hub, timeline_yaml, "quiet", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "train_runtime" not in proc.stdout  # Trainer's metrics dict is not ours to print
    first, second = proc.stdout.splitlines()[:2]
    assert first.startswith("step 1 (a): tests/quiet@step-1 in ") and first.endswith(" s left for 1 more step at this pace")
    assert second.startswith("step 2 (b): tests/quiet@step-2 in ") and "left" not in second  # the last step: nothing left


def test_timeline_run_prints_a_measured_estimate_before_the_first_step(hub, timeline_yaml):
    proc = _run_timeline_cli(hub, timeline_yaml, "estimated", "--estimate", "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("estimate: about ") and "for 2 experts and 3 evaluations (4 training steps at " in lines[0]
    assert "measured just now" in lines[0]
    assert lines[1].startswith("step 1 (a): tests/estimated@step-1 in ")
    # resumed with every step published: nothing left to estimate, and nothing trained
    again = _run_timeline_cli(hub, timeline_yaml, "estimated", "--estimate", "--quiet")
    assert again.returncode == 0, again.stderr
    assert not again.stdout.startswith("estimate:") and "already published" in again.stdout
