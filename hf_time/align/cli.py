"""``hf-time align`` (and ``zipit``, ``pleas``): argument parsing only; the work is in :mod:`hf_time.align`."""

from __future__ import annotations

import argparse


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _common(p, *, task_help: str) -> None:
    from hf_time.cli_common import add_publish_args

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


def cmd_align(args) -> int:
    from hf_time import schema
    from hf_time.align.build import align
    from hf_time.align.config import MatchingConfig
    from hf_time.cli_common import print_published
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
