"""How fast could task arithmetic be without torch? A measured bound, not a product path.

Issue 13's task-arithmetic targets (≤ 0.25× mergekit at 271M, ≤ 0.20× at 1B) are below what any
process that imports torch can reach on this machine (``import torch`` alone: ~2 s). This script
merges the benchmark's checkpoints the way hf_time's default ``task_arithmetic`` does (λ = 1, unit
weights: θ_0·(1 − n) + Σ θ_i in float32, rounded once to bf16 round-to-nearest-even), with numpy
only, on every core, and checks that the result is **bit for bit** what ``hf-time merge`` wrote.
It is the bound a torch-free path would have to match; what it leaves out is listed in
``benchmarks/README.md`` (general coefficients need torch's fused multiply-add; no lineage, card,
config files or sharding).

    python benchmarks/torch_free_bound.py --scale 271m --repeats 2 --json benchmarks/torch_free_bound_271m.json

Each timed run is a fresh interpreter (start-up and imports count, as in merge_bench.py); the
inputs are the cached ``merge_bench.py`` checkpoints (build them with it first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER = r'''
import json, mmap, os, struct, sys, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np

SLICE = 1 << 17  # entries per slice, as hf_time's bitselect.SLICE


def tensors(folder):
    """name -> (mmap, start, stop, dtype, shape) for every tensor of every shard of ``folder``."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack("<Q", m[:8])
        header = json.loads(m[8:8 + n])
        header.pop("__metadata__", None)
        for name, info in header.items():
            a, b = info["data_offsets"]
            out[name] = (m, 8 + n + a, 8 + n + b, info["dtype"], info["shape"])
    return out


base, experts, out_path = tensors(sys.argv[1]), [tensors(p) for p in sys.argv[2:-1]], Path(sys.argv[-1])
c0 = np.float32(1.0 - len(experts))
names = list(base)
assert all(base[k][3] == "BF16" for k in names), "this bound handles bf16 checkpoints only"
header, offset = {}, 0
for k in names:
    size = base[k][2] - base[k][1]
    header[k] = {"dtype": "BF16", "shape": base[k][4], "data_offsets": [offset, offset + size]}
    offset += size
blob = json.dumps(header, separators=(",", ":")).encode()
blob += b" " * (-len(blob) % 8)
fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, 8 + len(blob) + offset)
out = mmap.mmap(fd, 0)
out[:8] = struct.pack("<Q", len(blob))
out[8:8 + len(blob)] = blob
data = 8 + len(blob)
local = threading.local()


def bf16(entry):
    m, a, b = entry[:3]
    return np.frombuffer(m, np.uint16, (b - a) // 2, a)


def merge_slice(name, lo, hi):
    if not hasattr(local, "wide"):  # per thread: bf16 widened into the high half of zeroed uint32 words
        local.wide = [np.zeros(SLICE, np.uint32) for _ in range(len(experts) + 1)]
        local.acc, local.bits = np.empty(SLICE, np.float32), np.empty(SLICE, np.uint32)
    k = hi - lo
    values = []
    for j, src in enumerate([base[name], *(e[name] for e in experts)]):
        w = local.wide[j][:k]
        w.view(np.uint16)[1::2] = bf16(src)[lo:hi]
        values.append(w.view(np.float32))
    acc = np.multiply(values[0], c0, out=local.acc[:k])
    for v in values[1:]:
        np.add(acc, v, out=acc)  # unit coefficient: torch's fused a + 1·b is this exact sum
    if not np.isfinite(acc.sum()):
        raise SystemExit(f"non-finite result in {name}")
    u, t = acc.view(np.uint32), local.bits[:k]
    np.right_shift(u, 16, out=t)
    np.bitwise_and(t, 1, out=t)
    np.add(t, 0x7FFF, out=t)
    np.add(t, u, out=t)  # round to nearest even, as torch's float -> bfloat16
    np.frombuffer(out, np.uint16, k, data + header[name]["data_offsets"][0] + 2 * lo)[:] = t.view(np.uint16)[1::2]


def run(hand):
    for job in hand:
        merge_slice(*job)


jobs = [(k, lo, min(lo + SLICE, (base[k][2] - base[k][1]) // 2))
        for k in names for lo in range(0, (base[k][2] - base[k][1]) // 2, SLICE)]
cores = os.cpu_count() or 1
with ThreadPoolExecutor(cores) as pool:
    list(pool.map(run, [jobs[i::cores] for i in range(cores)]))
out.flush()
os.fsync(fd)
'''


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=["271m", "1b"], default="271m")
    p.add_argument("--workdir", default="/tmp/hf_time_bench")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    models = Path(args.workdir) / args.scale / "models"
    inputs = [models / "base", *(models / f"expert_{i}" for i in (1, 2, 3))]
    if not all(d.is_dir() for d in inputs):
        print(f"no checkpoints under {models}: run benchmarks/merge_bench.py --scale {args.scale} first", file=sys.stderr)
        return 2
    out_dir = Path(args.workdir) / args.scale / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    numpy_out, torch_out = out_dir / "torch_free.safetensors", out_dir / "hf_time_reference"
    walls = []
    for _ in range(args.repeats):
        numpy_out.unlink(missing_ok=True)
        for f in (f for d in inputs for f in d.glob("*.safetensors")):  # a warm page cache, as merge_bench.py
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", WORKER, *map(str, inputs), str(numpy_out)], check=True)
        walls.append(time.perf_counter() - start)
    cmd = [str(Path(sys.executable).with_name("hf-time")), "merge", "--base", str(inputs[0]),
           *[a for e in inputs[1:] for a in ("--expert", str(e))], "--method", "task_arithmetic",
           "--out", str(torch_out), "--dtype", "bfloat16", "--overwrite", "--quiet"]
    subprocess.run(cmd, check=True, capture_output=True)
    identical = _same_tensors(numpy_out, torch_out)
    numpy_out.unlink(missing_ok=True)
    result = {"scale": args.scale, "wall_s": [round(w, 3) for w in walls], "min_wall_s": round(min(walls), 3),
              "bit_identical_to_hf_time": identical, "cores": os.cpu_count()}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _same_tensors(single: Path, folder: Path) -> bool:
    """Whether every tensor of the one-file output has the bytes of the same tensor in ``folder``."""
    import torch
    from safetensors import safe_open

    theirs = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as fh:
            theirs.update({k: fh.get_tensor(k) for k in fh.keys()})
    with safe_open(single, "pt") as fh:
        mine = {k: fh.get_tensor(k) for k in fh.keys()}
    return mine.keys() == theirs.keys() and all(
        mine[k].reshape(-1).view(torch.int16).equal(theirs[k].reshape(-1).view(torch.int16)) for k in mine)


if __name__ == "__main__":
    sys.exit(main())
