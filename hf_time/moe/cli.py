"""``hf-time moe CONFIG.yaml``: argument parsing only; the work is :func:`hf_time.api.moe`."""

from __future__ import annotations

from hf_time.cli_common import add_publish_args, print_published, startup_imports


def add_commands(sub) -> None:
    """Register ``hf-time moe``."""
    p = sub.add_parser("moe", help="upcycle dense experts of one base into a Mixtral / Qwen2-MoE model",
                       description="Build a mixture-of-experts model from dense finetunes of one base (mergekit-moe's "
                       "YAML: base_model, experts with positive/negative prompts, gate_mode, experts_per_token, "
                       "architecture). The output loads with AutoModelForCausalLM, no remote code.")
    p.add_argument("config", help="MoE config YAML (mergekit-moe compatible)")
    p.add_argument("--out", help="output folder (default: the config's `out`)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder once the new one is complete")
    add_publish_args(p)
    p.set_defaults(func=cmd_moe)


def cmd_moe(args) -> int:
    with startup_imports():
        from hf_time.api import moe
        from hf_time.hub import Hub
        from hf_time.moe.config import load_moe_config

    config = load_moe_config(args.config)
    result = moe(config, out=args.out, overwrite=args.overwrite, push_to=args.push_to, tag=args.tag,
                 private=args.private, hub=Hub(endpoint=args.endpoint) if args.endpoint else None,
                 progress=not args.quiet)
    print(f"built {result.lineage.details['config']['architecture']} MoE -> {result.out_dir}")
    print_published(result.published)
    return 0
