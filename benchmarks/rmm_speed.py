"""RMM basis speed on a 7B-shaped model: 8 synthetic rank-16 adapters on every linear module.

    python benchmarks/rmm_speed.py                      # Llama-2-7B shapes, n=8, r=16, p=3
    python benchmarks/rmm_speed.py --layers 4 --p 7     # quicker / exact variant
    python benchmarks/rmm_speed.py --threads 2          # torch threads (default 1, see --help)

Shapes: hidden 4096, intermediate 11008, 32 layers, 7 adapted linear modules per layer (q, k, v, o,
gate, up, down), i.e. 224 modules and 2.5 M factor positions. Adapter factors are generated one
layer at a time (not timed) and fed to the registry's ``rmm`` function exactly as the pipeline does;
the time printed is the method itself: batched eigendecompositions, basis, coefficients and the
per-expert reconstruction errors that go into the card. File I/O is not included.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

from hf_time.merges.factors import LoraModule  # noqa: E402
from hf_time.merges import TensorContext, get  # noqa: E402

LLAMA_7B = {"q_proj": (4096, 4096), "k_proj": (4096, 4096), "v_proj": (4096, 4096), "o_proj": (4096, 4096),
            "gate_proj": (11008, 4096), "up_proj": (11008, 4096), "down_proj": (4096, 11008)}


def synthetic_layer(layer: int, n: int, r: int, generator: torch.Generator) -> dict[str, list[LoraModule]]:
    """n random adapters' factors for one layer (A ~ N(0, 1/in), B ~ N(0, 0.01))."""
    out = {}
    for name, (dout, din) in LLAMA_7B.items():
        out[f"model.layers.{layer}.{name}.weight"] = [
            LoraModule(torch.randn(r, din, generator=generator) / din ** 0.5,
                       torch.randn(dout, r, generator=generator) * 0.01, 2.0) for _ in range(n)]
    return out


def measure(layers: int = 32, n: int = 8, r: int = 16, p: int = 3, centered: bool = True, verbose: bool = True) -> dict:
    """Time the registry's ``rmm`` over a 7B-shaped model; returns the figures as a dict."""
    spec = get("rmm")
    config = spec.make_config({"p": p, "centered": centered})
    g = torch.Generator().manual_seed(0)
    weights = (1.0,) * n
    elapsed, positions, stored, original, modules, worst = 0.0, 0, 0, 0, 0, 0.0
    for layer in range(layers):
        for name, factors in synthetic_layer(layer, n, r, g).items():
            ctx = TensorContext(name=name, weights=weights, layer=layer, num_layers=layers)
            start = time.perf_counter()
            result = spec.fn(factors, config, ctx)
            elapsed += time.perf_counter() - start
            modules += 1
            positions += factors[0].a.shape[1] + factors[0].b.shape[0]
            stored, original = stored + result.stats["stored"], original + result.stats["original"]
            worst = max(worst, max(e / s for e, s in zip(result.stats["delta_sq_error"], result.stats["delta_sq_norm"])) ** 0.5)
        if verbose:
            print(f"layer {layer + 1}/{layers}: {elapsed:.1f} s so far", flush=True)
    return {"seconds": elapsed, "layers": layers, "n": n, "r": r, "p": p, "centered": centered, "modules": modules,
            "positions": positions, "storage_ratio": stored / original, "threads": torch.get_num_threads(),
            "formula": (p * (r + n) + (r if centered else 0)) / (r * n), "worst_module_error": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--n", type=int, default=8, help="number of adapters")
    parser.add_argument("--r", type=int, default=16, help="LoRA rank")
    parser.add_argument("--p", type=int, default=3, help="RMM basis size")
    parser.add_argument("--uncentered", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a CPU shared with other jobs, OpenMP threads spin-waiting for a "
                        "descheduled peer make 2 threads several times slower; OMP_WAIT_POLICY=PASSIVE also avoids it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    m = measure(args.layers, args.n, args.r, args.p, not args.uncentered)
    print(f"RMM basis: {m['n']} adapters, r={m['r']}, p={m['p']}, {'centred' if m['centered'] else 'uncentred'}, "
          f"{m['modules']} modules, {m['positions'] / 1e6:.2f} M factor positions, torch threads {m['threads']}")
    print(f"time {m['seconds']:.1f} s; storage ratio {m['storage_ratio']:.3f} (formula {m['formula']:.3f}); "
          f"worst per-module relative ΔW error {m['worst_module_error']:.3f}")


if __name__ == "__main__":
    main()
