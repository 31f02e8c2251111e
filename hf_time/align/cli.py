"""``hf-time align`` (and ``zipit``, ``pleas``): argument parsing only; the work is in :mod:`hf_time.align`."""

from __future__ import annotations

import argparse

from hf_time.cli_common import add_publish_args, print_published, startup_imports


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _common(p, *, task_help: str) -> None:
    p.add_argument("--task", action="append", default=[], metavar="NAME", help=task_help)
    p.add_argument("--param", action="append", default=[], type=_kv, metavar="K=V",
                   help="a further setting (repeat); see the settings listed below")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder once the new one is complete")
    add_publish_args(p)


def _settings_epilog(cls) -> str:
    from hf_time import schema

    return "settings (--param K=V): " + "; ".join(f"{f.name} ({f.default!r}): {f.help}" for f in schema.fields(cls))


def add_commands(sub) -> None:
    """Register ``hf-time align``."""
    from hf_time.align.config import MatchingConfig

    p = sub.add_parser("align", help="permute an expert into a reference's basis (models of different inits)",
                       description="Find the permutations of the expert's residual stream, attention heads and MLP units "
                       "that map it onto the reference (Git Re-Basin weight or activation matching) and write the "
                       "expert in the reference's basis: the same function, ready to be merged with the reference. "
                       "BERT-like encoders and Llama-like decoders.", epilog=_settings_epilog(MatchingConfig))
    p.add_argument("--reference", required=True, metavar="REF", help="the model whose basis to map onto")
    p.add_argument("--expert", required=True, metavar="REF", help="the model to permute")
    p.add_argument("--method", choices=("weight", "activation"), default="weight",
                   help="weight matching (no data, default) or activation matching (needs --task)")
    _common(p, task_help="activation matching: a built-in task whose texts both models read (repeat)")
    p.set_defaults(func=cmd_align)
    add_merge_commands(sub)


def cmd_align(args) -> int:
    with startup_imports():
        from hf_time import schema
        from hf_time.align.build import align
        from hf_time.align.config import MatchingConfig
        from hf_time.hub import Hub

    values = {**dict(args.param), "method": args.method}
    if args.task:
        values["task"] = list(args.task)
    config = schema.build_or_raise(MatchingConfig, values, "invalid alignment settings", strings=True)
    result = align(args.reference, args.expert, config, out=args.out, overwrite=args.overwrite, push_to=args.push_to,
                   tag=args.tag, private=args.private, hub=Hub(endpoint=args.endpoint) if args.endpoint else None,
                   progress=not args.quiet)
    record = result.lineage.details["alignment"]
    moved = ", ".join(f"{k} {100 * v:.1f}%" for k, v in record["moved"].items())
    print(f"aligned -> {result.out_dir}")
    print(f"  units moved: {moved}; {record['passes']} pass(es)"
          + (f"; weight cosine {record['weight_cosine']['before']:.4f} -> {record['weight_cosine']['after']:.4f}"
             if "weight_cosine" in record else ""))
    print_published(result.published)
    return 0


def add_merge_commands(sub) -> None:
    """Register ``hf-time zipit`` and ``hf-time pleas``."""
    from hf_time.align.config import PLeaSConfig, ZipItConfig

    p = sub.add_parser("zipit", help="merge two models of different inits by ZipIt! (a trunk + one head per model)",
                       description="Zip the features of two models of one architecture but different inits within and "
                       "across the models by the correlation of their activations on task texts; the first --param "
                       "blocks=K blocks are zipped, later blocks stay per model.", epilog=_settings_epilog(ZipItConfig))
    p.add_argument("--expert", action="append", default=[], required=True, metavar="REF", help="a model (twice)")
    _common(p, task_help="a built-in task whose texts give the correlations (repeat)")
    p.set_defaults(func=cmd_merge, operation="zipit")
    p = sub.add_parser("pleas", help="merge two models of different inits by PLeaS (permutations + least squares)",
                       description="Match the units of two models of different inits by activation correlation, merge the "
                       "best-matched share of every MLP to a target --param width=W (1: one model's width, 2: none "
                       "merged) and fit every linear layer by least squares on task texts.",
                       epilog=_settings_epilog(PLeaSConfig))
    p.add_argument("--expert", action="append", default=[], required=True, metavar="REF", help="a model (twice)")
    _common(p, task_help="a built-in task whose texts the matching and the fit read (repeat)")
    p.set_defaults(func=cmd_merge, operation="pleas")


def cmd_merge(args) -> int:
    with startup_imports():
        from hf_time import schema
        from hf_time.align.config import PLeaSConfig, ZipItConfig
        from hf_time.align.merge_build import pleas, zipit
        from hf_time.hub import Hub

    cls, run = (ZipItConfig, zipit) if args.operation == "zipit" else (PLeaSConfig, pleas)
    values = {**dict(args.param), "task": list(args.task)}
    config = schema.build_or_raise(cls, values, f"invalid {args.operation} settings", strings=True)
    result = run(args.expert, config, out=args.out, overwrite=args.overwrite, push_to=args.push_to, tag=args.tag,
                 private=args.private, hub=Hub(endpoint=args.endpoint) if args.endpoint else None, progress=not args.quiet)
    d = result.lineage.details
    print(f"{args.operation}: {len(result.lineage.experts)} models merged -> {result.out_dir} ({d['blocks']} of "
          f"{d['layers']} blocks in the trunk, one head per model)")
    print_published(result.published)
    return 0
