"""``hf-time timeline run|status|report``: argument parsing only, delegating to the timeline modules."""

from __future__ import annotations

import argparse
import sys

from hf_time.cli_common import startup_imports


def add_commands(sub) -> None:
    """Register ``timeline`` and its subcommands on the top-level ``hf-time`` subparsers."""
    p = sub.add_parser("timeline", help="run a TIME timeline (init x deploy x merge) on the Hub, or report on one")
    tsub = p.add_subparsers(dest="timeline_command", required=True)

    r = tsub.add_parser("run", help="run or resume a timeline from a YAML config",
                        description="Run a timeline: per task, finetune an expert from the init checkpoint, push it, "
                        "deploy a merge by the deploy strategy, evaluate it and publish it tagged step-t. Re-running "
                        "resumes after the last published step. Under torchrun or accelerate launch the main process "
                        "runs the timeline and the others train with it (DDP; FSDP through accelerate's config).")
    r.add_argument("config", help="timeline config YAML")
    r.add_argument("--hub", "--endpoint", dest="endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    r.add_argument("--namespace", help="override the config's namespace")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set training.steps=40 (repeat)")
    r.add_argument("--work", default="runs/timeline", help="local working folder (state, timings, cache)")
    r.add_argument("--cache", help="model/evaluation cache shared between timelines (default WORK/cache)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=None,
                   help="before the first step, time a few training steps and one evaluation on this machine and "
                   "print how long the rest should take (default: on in a terminal, off otherwise)")
    r.set_defaults(func=cmd_run)

    s = tsub.add_parser("status", help="steps done, strategy and last metrics of a timeline repo")
    s.add_argument("ref", help="timeline repo 'org/name[@step-t]', a snapshot folder or a timeline_state.json")
    s.add_argument("--hub", "--endpoint", dest="endpoint", help="Hub endpoint")
    s.set_defaults(func=cmd_status)

    rep = tsub.add_parser("report", help="accuracy matrix, TIME metrics and a plot of a timeline")
    rep.add_argument("ref", help="timeline repo 'org/name[@step-t]', a snapshot folder or a timeline_state.json")
    rep.add_argument("--hub", "--endpoint", dest="endpoint", help="Hub endpoint")
    rep.add_argument("--plot", metavar="PNG", help="write the trajectory + matrix plot here")
    rep.add_argument("--json", action="store_true", help="print the state as JSON instead")
    rep.set_defaults(func=cmd_report)


def _hub(endpoint):
    from hf_time.hub import Hub

    return Hub(endpoint=endpoint)


def cmd_run(args) -> int:
    with startup_imports():
        from hf_time.timeline.config import load_timeline_config
        from hf_time.timeline.report import format_matrix, format_metrics, format_timings
        from hf_time.timeline.runner import run_timeline

    overrides = list(args.set) + ([f"namespace={args.namespace}"] if args.namespace else [])
    config = load_timeline_config(args.config, overrides)
    from hf_time import distributed

    estimate = args.estimate if args.estimate is not None else (sys.stdout.isatty() and not args.quiet)
    before_steps = None
    if estimate and not distributed.is_distributed():  # measured, not promised: the load decides it
        from hf_time.estimate import print_estimate

        before_steps = print_estimate(config)

    walls: list[float] = []

    def on_step(record, timer) -> None:
        walls.append(timer.wall)
        left = len(config.tasks) - record.step  # an estimate from the steps run so far, before the rest
        pace = ""
        if left:
            steps = f"{left} more step{'s' if left != 1 else ''}"
            pace = f"; about {left * sum(walls) / len(walls):.0f} s left for {steps} at this pace"
        print(f"step {record.step} ({record.task}): {config.repo_id}@step-{record.step} in {timer.wall:.1f} s "
              f"(overhead {100 * timer.overhead_fraction:.1f}%){pace}", flush=True)

    try:  # under torchrun / accelerate launch every process runs this; the main one prints
        run = run_timeline(config, hub=_hub(args.endpoint), work_dir=args.work, cache_dir=args.cache, on_step=on_step,
                           before_steps=before_steps, progress=not args.quiet)
    finally:
        distributed.shutdown()
    if not distributed.is_main():
        return 0
    if run.skipped:
        print(f"steps {run.skipped[0]}..{run.skipped[-1]} were already published; resumed after them")
    print(format_matrix(run.state))
    print(format_metrics(run.state))
    if run.timings:
        print(format_timings(run.timings, run.setup))
    return 0


def cmd_status(args) -> int:
    from hf_time.timeline.report import format_status, load_state

    state, pinned = load_state(args.ref, _hub(args.endpoint))
    print(format_status(state, pinned))
    return 0


def cmd_report(args) -> int:
    import json

    from hf_time.timeline.card import plot_timeline
    from hf_time.timeline.report import format_matrix, format_metrics, load_state

    state, pinned = load_state(args.ref, _hub(args.endpoint))
    if args.json:
        json.dump(state.to_dict(), sys.stdout, indent=2)
        print()
        return 0
    print(f"{state.repo_id} at {pinned}")
    print(format_matrix(state))
    print(format_metrics(state))
    if args.plot:
        print(f"plot -> {plot_timeline(state, args.plot)}")
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m hf_time.timeline.cli` for debugging
    parser = argparse.ArgumentParser(prog="hf-time")
    add_commands(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
