"""``hf-time revert``: argument parsing only; the work is :func:`hf_time.lowrank.revert.revert`.

Low-rank merges themselves need no command of their own: ``hf-time merge --method lora_cat|lora_svd|rmm``
dispatches to :mod:`hf_time.lowrank.api`.
"""

from __future__ import annotations

from hf_time.cli_common import add_publish_args, print_published, startup_imports


def add_commands(sub) -> None:
    """Add the low-rank commands to the ``hf-time`` subparsers (called by :mod:`hf_time.cli`)."""
    p = sub.add_parser("revert", help="rebuild one expert from an RMM snapshot (a PEFT adapter, or --dense)",
                       description="Rebuild expert NAME_OR_INDEX of a reversible merge (made with `hf-time merge "
                       "--method rmm`) as a standard PEFT adapter, or with --dense merged into the base model.")
    p.add_argument("ref", metavar="REF", help="the RMM snapshot: 'org/name[@rev]' or a folder")
    p.add_argument("--expert", required=True, metavar="NAME_OR_INDEX", help="0-based index or name, as listed in the snapshot's card")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dense", action="store_true", help="write base + ΔW as a transformers model instead of an adapter")
    p.add_argument("--dtype", help="output dtype: float32, bfloat16, float16")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (only once the new one is complete)")
    p.add_argument("--allow-pickle", action="store_true", help="accept a pytorch_model.bin base with --dense (weights_only=True)")
    p.add_argument("--max-shard-size", default=None, help="output shard size with --dense (default 5GB)")
    add_publish_args(p)
    p.set_defaults(func=cmd_revert)


def cmd_revert(args) -> int:
    with startup_imports():
        from hf_time.api import revert
        from hf_time.hub import Hub

    result = revert(
        args.ref, args.expert, out=args.out, dense=args.dense, dtype=args.dtype, push_to=args.push_to, tag=args.tag,
        private=args.private, overwrite=args.overwrite, allow_pickle=args.allow_pickle, max_shard_size=args.max_shard_size,
        hub=Hub(endpoint=args.endpoint) if args.endpoint else None, progress=not args.quiet,
    )
    lineage = result.lineage
    expert = lineage.experts[0]
    print(f"reverted expert {lineage.details['index']} ({expert.name}) -> {result.out_dir}")
    print(f"  relative ΔW reconstruction error {expert.details['reconstruction_error']:.3e}")
    print_published(result.published)
    return 0
