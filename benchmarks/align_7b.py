"""Weight matching of a 7B-shaped layer stack on this CPU: time and peak memory.

    python benchmarks/align_7b.py                      # Llama-2-7B shapes, sketch 256, writes benchmarks/align_7b.json
    python benchmarks/align_7b.py --layers 2 --no-json # a quick look

No 7B weights are stored or downloaded: every tensor of the reference is generated on the fly from a
seed derived from its name (so each pass regenerates the same weights), and the expert is the same
tensor under a random function-preserving permutation (residual stream, heads, head dims, MLP units)
plus independent Gaussian noise of the same scale (an expert that shares the reference's function
only roughly: half its energy is noise). Time spent generating tensors is measured and reported
apart from the matching time. Peak RSS is the process's high-water mark (``ru_maxrss``), generation
buffers included. The recovered fraction says how many units the matching mapped back to their
planted position.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from hf_time.align.config import MatchingConfig
from hf_time.align.perms import inverse, permute_tensor, random_alignment
from hf_time.align.spec import arch_spec
from hf_time.align.weight_matching import weight_matching
from hf_time.io import TensorInfo

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                 vocab_size=32000, num_hidden_layers=32)


def shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    d, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                    p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                    p + "mlp.gate_proj.weight": (inter, d), p + "mlp.up_proj.weight": (inter, d),
                    p + "mlp.down_proj.weight": (d, inter), p + "input_layernorm.weight": (d,),
                    p + "post_attention_layernorm.weight": (d,)})
    return out


class Generated:
    """Reference tensors from per-name seeds; the expert's are permuted + noise. Counts its own time."""

    def __init__(self, shapes, spec, planted, noise: float, expert: bool, clock: list[float]):
        self.shapes, self.spec, self.noise, self.expert, self.clock = shapes, spec, noise, expert, clock
        self.idx = planted.indices(spec)

    def get(self, name: str) -> torch.Tensor:
        start = time.perf_counter()
        seed = sum(name.encode()) * 7919 + len(name)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.shapes[name], generator=g).mul_(0.02)
        if name.endswith("norm.weight"):
            x.add_(1.0)
        if self.expert:
            x = permute_tensor(x, self.spec.tensors[name], self.idx)
            x.add_(torch.randn(self.shapes[name], generator=g).mul_(0.02 * self.noise))
        out = x.to(torch.bfloat16)  # as a checkpoint stores it
        self.clock[0] += time.perf_counter() - start
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=LLAMA2_7B["num_hidden_layers"])
    ap.add_argument("--kv-heads", type=int, default=LLAMA2_7B["num_key_value_heads"], help="8 for Mistral-style GQA")
    ap.add_argument("--sketch", type=int, default=256, help="sketch buckets (0: exact costs)")
    ap.add_argument("--noise", type=float, default=1.0, help="expert noise std relative to the weights' std")
    ap.add_argument("--max-iter", type=int, default=3)
    ap.add_argument("--no-json", action="store_true", help="print only")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = dict(LLAMA2_7B, model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=args.layers,
               num_key_value_heads=args.kv_heads)
    sh = shapes(cfg)
    spec = arch_spec(cfg, {n: TensorInfo(n, "BF16", s) for n, s in sh.items()}, "the 7B-shaped stack")
    planted = random_alignment(spec, seed=1)
    clock = [0.0]
    ref = Generated(sh, spec, planted, args.noise, False, clock)
    exp = Generated(sh, spec, planted, args.noise, True, clock)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    config = MatchingConfig(sketch=args.sketch or None, max_iter=args.max_iter)
    load = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    result = weight_matching(spec, ref, exp, config, progress=sys.stderr.isatty())
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    truth, found = inverse(planted), result.alignment
    recovered = lambda a, b: float(sum(int((x == y).sum()) for x, y in zip(a, b)) / sum(x.numel() for x in a))  # noqa: E731
    params = sum(torch.Size(s).numel() for s in sh.values())
    layer_bytes = sum(torch.Size(sh[t.name]).numel() for t in spec.layer_tensors(0)) * 4
    report = {
        "shape": {k: cfg[k] for k in LLAMA2_7B} | {"parameters": params},
        "sketch": config.sketch, "noise": args.noise, "passes": result.passes, "converged": result.converged,
        "seconds_matching": round(total - clock[0], 1), "seconds_generating": round(clock[0], 1),
        "seconds_total": round(total, 1),
        "peak_rss_gib": round(peak, 2), "rss_before_gib": round(rss_start, 2),
        "one_block_float32_gib": round(layer_bytes / 2**30, 2),
        "recovered": {"residual": recovered([found.res], [truth.res]), "mlp": recovered(found.mlp, truth.mlp),
                      "heads": recovered([h.groups for h in found.heads], [h.groups for h in truth.heads]),
                      "head_dims": recovered([h.vo_dims for h in found.heads], [h.vo_dims for h in truth.heads])},
        "machine": {"cpu_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
        "load_average": round(load, 2),  # other processes share this machine: what they took is not hf_time's
        "cpu_seconds_matching_and_generating": round(cpu, 1),
    }
    print(json.dumps(report, indent=2))
    if not args.no_json:
        (Path(__file__).parent / "align_7b.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
