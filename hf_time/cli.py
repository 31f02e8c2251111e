"""``hf-time``: argument parsing only; every command delegates to a library function.

Errors are printed as one line that names the problem and the fix; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os

# Large tensors on transparent huge pages: a merge allocates hundreds of MB per tensor, and page faults
# on fresh 4 KiB pages cost more than the arithmetic (measured 2-3x on task_arithmetic). torch reads
# this once, at its first allocation, so it must be set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# OpenMP's wait policy is left as the user has it, as in the library and the recipes. (The CLI used to set
# OMP_WAIT_POLICY=PASSIVE: TIES and Breadcrumbs merges ran 10-25% slower on 2 cores under it, and task
# arithmetic no faster once its slices ran on threads of their own: benchmarks/issue13_eighth_pass.log, §7.)

import argparse  # noqa: E402
import errno
import json
import logging
import sys
from typing import Sequence

from hf_time import progress
from hf_time.cli_common import add_publish_args, print_published, startup_imports
from hf_time.errors import ConfigError, HfTimeError

logger = logging.getLogger("hf_time")


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="merge experts onto a base model", description="Merge experts onto a base model "
                       "(Hub ids 'org/name[@rev]' or folders) with a registry method. Either pass a YAML config "
                       "(hf_time or mergekit style) or --base/--expert/--method.")
    p.add_argument("config", nargs="?", help="merge config YAML (mergekit-compatible)")
    p.add_argument("--base", help="base model reference (θ_0)")
    p.add_argument("--expert", action="append", default=[], help="expert reference (repeat)")
    p.add_argument("--method", help="merge method (see `hf-time ls`)")
    p.add_argument("--param", action="append", default=[], type=_kv, metavar="K=V", help="method parameter (repeat)")
    p.add_argument("--weight", action="append", type=float, metavar="W", help="expert weight, one per --expert, in order")
    p.add_argument("--lines", nargs=2, type=float, metavar=("ALPHA", "BETA"), help="LiNeS layer scaling of the task vector")
    p.add_argument("--previous", metavar="REF", help="sequential methods: the snapshot the previous fold wrote "
                   "(its hf_time.json holds the state); omit at the first step")
    p.add_argument("--out", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (only once the new one is complete)")
    p.add_argument("--dtype", help="output dtype: float32, bfloat16, float16 (default: the base's)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda[:i]")
    p.add_argument("--max-shard-size", default=None, help="output shard size of a full model (default 5GB)")
    p.add_argument("--allow-pickle", action="store_true", help="accept pytorch_model.bin checkpoints (weights_only=True)")
    p.add_argument("--allow-nonfinite", action="store_true", help="write a merge holding NaN/Inf instead of refusing it")
    p.add_argument("--align", choices=("weight", "activation"), help="experts of other inits: permute each onto the "
                   "base first (Git Re-Basin weight matching, or activation matching with --align-task)")
    p.add_argument("--align-task", action="append", default=[], metavar="NAME", help="--align activation: a built-in "
                   "task whose texts the base and each expert read (repeat)")
    add_publish_args(p)
    p.set_defaults(func=cmd_merge)


def cmd_merge(args) -> int:
    with startup_imports():
        from hf_time.api import merge
        from hf_time.config import ExpertSpec, load_merge_config
        from hf_time.hub import Hub

    if args.config:
        if args.base or args.expert or args.method:
            raise ConfigError("give either a config file or --base/--expert/--method, not both")
        config = load_merge_config(args.config)
        if args.param:
            config = _replace(config, params={**config.params, **dict(args.param)})
        if args.dtype:
            config = _replace(config, dtype=args.dtype)
        if args.device:
            config = _replace(config, device=args.device)
        if args.lines:
            config = _replace(config, lines=tuple(args.lines))
        if args.previous:
            config = _replace(config, previous=args.previous)
    else:
        missing = [f for f, v in (("--base", args.base), ("--expert", args.expert), ("--method", args.method)) if not v]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)} (or pass a config YAML); see `hf-time merge --help`")
        weights = args.weight or [1.0] * len(args.expert)
        if len(weights) != len(args.expert):
            raise ConfigError(f"got {len(weights)} --weight values for {len(args.expert)} --expert; give one per expert")
        from hf_time.config import MergeConfig

        config = MergeConfig(
            base=args.base, experts=tuple(ExpertSpec(e, w) for e, w in zip(args.expert, weights)), method=args.method,
            params=dict(args.param), dtype=args.dtype, device=args.device or "cpu",
            lines=tuple(args.lines) if args.lines else None, previous=args.previous,
        )
    if args.align or args.align_task:
        from hf_time.align.config import MatchingConfig

        current = config.align or MatchingConfig()
        config = _replace(config, align=_replace(current, method=args.align or current.method,
                                                 task=tuple(args.align_task) or current.task))
    result = merge(
        config=config, out=args.out, push_to=args.push_to, tag=args.tag, private=args.private,
        overwrite=args.overwrite, allow_pickle=args.allow_pickle, allow_nonfinite=args.allow_nonfinite,
        max_shard_size=args.max_shard_size,
        hub=Hub(endpoint=args.endpoint) if (args.endpoint or args.push_to or not _all_local(config)) else None,
        progress=not args.quiet,
    )
    verb = f"folded expert {result.state['t']}" if result.lineage.kind == "fold" else "merged"
    print(f"{verb} -> {result.out_dir}")
    print_published(result.published)
    return 0


def _all_local(config) -> bool:
    from hf_time.refs import parse_ref

    refs = [config.base, *(e.ref for e in config.experts), *([config.previous] if config.previous else [])]
    return all(parse_ref(r).is_local for r in refs)


def _replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def _add_ls(sub) -> None:
    p = sub.add_parser("ls", help="list merge methods with kind and parameters")
    p.add_argument("--kind", choices=["dense", "lowrank", "sequential", "data"], help="only this kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (the README's method table)")
    p.set_defaults(func=cmd_ls)


def cmd_ls(args) -> int:
    with startup_imports():
        from hf_time.merges import list_methods

    specs = list_methods(args.kind)
    if args.json:
        print(json.dumps([s.describe() for s in specs], indent=2))
        return 0
    if args.markdown:
        print(methods_markdown(specs))
        return 0
    for s in specs:
        print(f"{s.name:<18} {s.kind:<10} {s.summary}")
        for p in s.parameters():
            extra = f" [{p.bounds}]" if p.bounds else ""
            per = " (per expert)" if p.per_expert else ""
            print(f"    {p.name}={p.default!r}{extra}{per}  {p.help}")
    return 0


def methods_markdown(specs) -> str:
    """The method table of the README, generated from the registry."""
    rows = ["| method | kind | what it does | parameters (default) |", "|---|---|---|---|"]
    for s in specs:
        name = f"[`{s.name}`]({s.paper})" if s.paper else f"`{s.name}`"
        params = ", ".join(f"`{p.name}`={p.default!r}" + ("*" if p.per_expert else "") for p in s.parameters()) or "-"
        summary = s.summary.replace("|", "\\|")  # a bare | would split the table cell
        rows.append(f"| {name} | {s.kind} | {summary} | {params} |")
    return "\n".join(rows)


def _add_hub(sub) -> None:
    p = sub.add_parser("hub", help="the embedded Hub (a Hub-compatible server on loopback)")
    hsub = p.add_subparsers(dest="hub_command", required=True)
    s = hsub.add_parser("serve", help="serve repos stored under --root")
    s.add_argument("--root", required=True, help="folder holding the repos (created if missing)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others are warned about)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    s.add_argument("--token-file", default=None, help="read the write token from this file (default: "
                   "$HF_TIME_HUB_TOKEN, else a random token printed once)")
    s.add_argument("--token", default=None, help="the write token; visible in `ps` and shell history, "
                   "prefer --token-file or $HF_TIME_HUB_TOKEN")
    s.add_argument("--insecure-any-token", action="store_true",
                   help="accept any non-empty token for writes (any local program or web page can write)")
    s.set_defaults(func=cmd_hub_serve)


def cmd_hub_serve(args) -> int:
    from hf_time.hubserver import HubServer
    from hf_time.hubserver.launch import banner, resolve_token, warnings

    token, source = resolve_token(args.token, args.token_file, args.insecure_any_token)
    try:
        server = HubServer(root=args.root, host=args.host, port=args.port, token=token,
                           insecure_any_token=args.insecure_any_token)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {args.port} on {args.host} is already in use (another `hf-time hub serve`?); "
                              "pick another with --port N, or --port 0 for any free one") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"cannot listen on {args.host}: no such address on this machine; "
                              "use --host 127.0.0.1") from None
        raise
    for line in warnings(args.host, source):
        print(line, file=sys.stderr, flush=True)
    print("\n".join(banner(args.root, server.url, server.token, source)), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-time", description="Temporal model merging on the Hugging Face Hub.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_ls(sub)
    _add_merge(sub)
    _add_hub(sub)
    for extra in _extra_commands():
        extra(sub)
    return parser


def _extra_commands():
    """Commands contributed by other modules (low-rank merging, timelines). Imported explicitly: a broken
    module must fail loudly, not make its commands silently disappear."""
    from hf_time import data_cli
    from hf_time.align import cli as align_cli
    from hf_time.lowrank import cli as lowrank_cli
    from hf_time.moe import cli as moe_cli
    from hf_time.timeline import cli as timeline_cli

    return [lowrank_cli.add_commands, timeline_cli.add_commands, moe_cli.add_commands, align_cli.add_commands,
            data_cli.add_commands]


def one_line(error: BaseException) -> str:
    """An error as the single line the CLI prints (multi-line messages folded, credentials in URLs removed)."""
    import re

    text = " ".join(str(error).split()) or type(error).__name__
    return re.sub(r"//[^/@\s]+@", "//", text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-time``. Exit codes: 0 done, 2 a problem the user can fix (bad input, a missing or refused
    resource, an unreachable Hub), 1 an unexpected failure (a bug: rerun with --debug and report it),
    130 interrupted. Errors are one line on stderr; a traceback only with --debug."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "quiet", False):
        # --quiet means quiet: the libraries' own bars (downloads, uploads, "Fetching N files") too.
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        if "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        if "datasets" in sys.modules:  # already imported (a test, a notebook): the variable above came too late
            import datasets

            datasets.disable_progress_bars()
    try:
        with progress.quiet(getattr(args, "quiet", False)):  # hf_time's own bars (training, evaluation, merges)
            return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: nothing half-written was left behind", file=sys.stderr)
        return 130
    except HfTimeError as e:
        if args.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if args.debug:
            raise
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(e, (HfHubHTTPError, OSError)):  # the environment (disk, permissions, the Hub), not a bug
            print(f"error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
            return 2
        print(f"error: unexpected {type(e).__name__}: {one_line(e)} (a bug in hf_time: rerun with --debug and "
              "report the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
