"""Shared pieces of the timeline tests: a tiny BERT with a 40-word tokenizer, toy tasks on disk, and a
deterministic fake trainer whose experts are the init model plus a known constant.

With the fake trainer θ^s_t = init_t + d_t (d = 1, 2, 4 for the tasks a, b, c), so every strategy's
weights can be computed by hand from θ_0 and these constants.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

WORDS = ["apple", "pear", "plum", "zebra", "lion", "wolf", "red", "blue", "green", "fast", "slow", "big",
         "small", "fruit", "animal", "colour", "speed", "size", "a", "an", "the", "text", "about", "is"]
TASKS = {  # name -> (words of label 0, words of label 1, descriptions)
    "a": (("apple", "pear"), ("zebra", "lion"), ("about fruit", "about animal")),
    "b": (("red", "blue"), ("fast", "slow"), ("about colour", "about speed")),
    "c": (("big", "small"), ("plum", "wolf"), ("about size", "an animal or fruit")),
    "h": (("green", "red"), ("lion", "wolf"), ("a colour", "an animal")),
}
DELTAS = {"a": 1.0, "b": 2.0, "c": 4.0}


def save_tiny_bert(path: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT (hidden 16) with a WordPiece tokenizer over :data:`WORDS`."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        vocab_size=len(WORDS) + 5, max_position_embeddings=32)
    BertModel(config).save_pretrained(path)
    return path


def write_toy_tasks(folder: Path) -> dict[str, Path]:
    """One CSV per toy task (text,label), 24 rows each."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (w0, w1, _) in TASKS.items():
        path = folder / f"{name}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i in range(12):
                writer.writerow([f"{w0[i % 2]} {WORDS[i]} text", 0])
                writer.writerow([f"{w1[i % 2]} {WORDS[i + 6]} text", 1])
        out[name] = path
    return out


def task_entry(name: str, path: Path) -> dict:
    return {"name": name, "dataset": str(path), "label_descriptions": list(TASKS[name][2])}


def fake_trainer(init_dir, task, config, out_dir, *, replay=None, device=None) -> Path:
    """θ^s = init + DELTAS[task]: every floating tensor shifted by a known constant."""
    from hf_time.pipeline.artifact import CARRIED_FILES
    from hf_time.io import atomic_output_dir, copy_files

    init_dir, out_dir = Path(init_dir), Path(out_dir)
    tensors = load_file(init_dir / "model.safetensors")
    shifted = {k: (v + DELTAS[task.name] if v.is_floating_point() else v) for k, v in tensors.items()}
    with atomic_output_dir(out_dir, overwrite=True) as tmp:
        save_file(shifted, tmp / "model.safetensors", metadata={"format": "pt"})
        copy_files(init_dir, tmp, CARRIED_FILES)
    return out_dir


def fake_evaluator(model_dir, tasks, *, batch_size, max_length, device=None) -> dict[str, float]:
    """Deterministic 'accuracies' read off the weights (fast; the runner only needs numbers in [0, 1])."""
    w = load_file(Path(model_dir) / "model.safetensors")["embeddings.LayerNorm.weight"]
    level = float(w.mean())
    return {t.name: round((level * (i + 1) / 7.0) % 1.0, 6) for i, t in enumerate(tasks)}


def timeline_dict(tmp: Path, base_ref: str, name: str, **strategy) -> dict:
    paths = write_toy_tasks(tmp / "data")
    return {
        "name": name, "namespace": "tests", "base": base_ref,
        "tasks": [task_entry(n, paths[n]) for n in ("a", "b", "c")],
        "held_out": [task_entry("h", paths["h"])],
        "data": {"n_test": 6},
        "strategy": {"init": "ema", "deploy": "ema", "method": "linear", **strategy},
        "training": {"steps": 2, "batch_size": 4, "max_length": 8, "learning_rate": 1e-3},
    }


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "base")


def base_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "model.safetensors")


def test_fake_trainer_adds_the_known_delta(tiny_base, tmp_path):
    from hf_time.tasks import task_from_dataset

    paths = write_toy_tasks(tmp_path / "data")
    task = task_from_dataset("b", paths["b"], label_descriptions=TASKS["b"][2], n_test=6)
    out = fake_trainer(tiny_base, task, None, tmp_path / "e")
    base, expert = base_tensors(tiny_base), base_tensors(out)
    for k, v in base.items():
        if v.is_floating_point():
            torch.testing.assert_close(expert[k], v + 2.0)
