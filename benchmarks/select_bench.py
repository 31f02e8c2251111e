#!/usr/bin/env python3
"""Exact top-m selection: the previous kernels (np.partition + counting + tie handling) against
hf_time.merges.selection, side by side in one run, and a TIES merge of one big tensor before/after.

What it times (min of ``--repeats`` rounds, the variants taking turns in every round; density 0.2,
so m = int(0.2 * numel) as TIES keeps):

* ``threshold``: the m-th largest |τ| (``kth_largest``, what global thresholds call), previous
  (``np.partition``) and current, plus the current module forced onto each of its paths (numpy
  partition, numpy sampled bracket, and the bit-pattern bracket and radix select that CUDA runs),
  which is how the CPU dispatch by size was chosen.
* ``mask``: the bool mask of exactly m entries, ties in index order (``top_mask``).
* ``trim``: one task vector trimmed in place to its top m magnitudes (``trim_magnitude_``, what TIES
  runs per expert): previous = ``abs()`` + ``top_mask`` + multiply by the bool mask.
* ``ties``: ``hf_time.merges.get("ties").fn`` on a 4096x11008 bf16 base and 3 experts, density 0.2,
  with the previous trim patched in (before) and as it is (after).

Data: ``float32`` is τ ~ N(0, 0.01²) in float32 (no ties); ``bf16`` is τ = θ_1 − θ_0 of two bf16
tensors, θ_1 = bf16(θ_0 + 0.01·std·N(0, 1)) as in ``merge_bench.py``: few distinct values, a quarter
of them 0, thousands of entries tied at the threshold. Outputs of previous and current are compared
bit for bit. ``other_cpu_s`` is the CPU time the rest of the machine used during each section: far
from 0 means the figures are inflated by other work.

Usage::

    .venv/bin/python benchmarks/select_bench.py --json benchmarks/select.json --markdown
    .venv/bin/python benchmarks/select_bench.py --sizes 1e5 1e6 --repeats 3 --skip-ties
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hf_time.merges import bitselect, get, kernels, selection  # noqa: E402
from hf_time.merges.registry import TensorContext  # noqa: E402

DENSITY = 0.2
TIES_SHAPE = (4096, 11008)


# -- the previous kernels, frozen (hf_time/merges/kernels.py before the selection module) -----------
def old_kth_largest(values: torch.Tensor, m: int) -> float:
    if m <= 0:
        return math.inf
    flat = values.reshape(-1)
    idx = flat.numel() - m
    if flat.device.type == "cpu" and flat.dtype in (torch.float16, torch.float32, torch.float64):
        return float(np.partition(flat.numpy(), idx)[idx])
    return float(torch.kthvalue(flat, idx + 1).values)


def old_top_mask(mag: torch.Tensor, m: int) -> torch.Tensor:
    flat = mag.reshape(-1)
    if m <= 0:
        return torch.zeros(mag.shape, dtype=torch.bool, device=mag.device)
    if m >= flat.numel():
        return torch.ones(mag.shape, dtype=torch.bool, device=mag.device)
    threshold = old_kth_largest(flat, m)
    keep = flat > threshold
    missing = m - int(keep.sum())
    if missing > 0:
        tied = (flat == threshold).nonzero().squeeze(1)
        keep[tied[:missing]] = True
    return keep.view(mag.shape)


def old_trim_magnitude_(tv: torch.Tensor, density: float, threshold: float | None = None) -> torch.Tensor:
    if density >= 1:
        return tv
    mag = tv.abs()
    if threshold is None:
        return tv.mul_(old_top_mask(mag, kernels.kept_count(density, tv.numel())))
    return tv.mul_(mag.ge_(threshold))


# -- measuring ----------------------------------------------------------------------------------------
def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or nan."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def other_cpu(record: dict):
    """Store in ``record['other_cpu_s']`` the CPU time used by other processes during the block."""
    busy, own = _busy_seconds(), sum(os.times()[:2])
    yield
    record["other_cpu_s"] = round((_busy_seconds() - busy) - (sum(os.times()[:2]) - own), 2)


CPU_S: dict[str, float] = {}  # process CPU seconds (all threads) of the run that set each minimum


def race(
    variants: dict[str, Callable[[], object]], repeats: int, prepare: Callable[[], None] | None = None
) -> dict[str, float]:
    """Min wall seconds of each variant over ``repeats`` rounds, the variants taking turns.

    The process CPU time of the fastest run of each variant is left in ``CPU_S`` (a figure that
    other processes inflate less than wall time, since waiting for a core is not counted)."""
    best = {name: math.inf for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            if prepare is not None:
                prepare()
            cpu, start = time.process_time(), time.perf_counter()
            fn()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            if wall < best[name]:
                best[name], CPU_S[name] = wall, cpu
    return best


def raced(record: dict, key: str, variants: dict[str, Callable[[], object]], repeats: int, prepare=None) -> None:
    """``record[key]``: min wall seconds per variant; ``record[key + '_cpu']``: CPU seconds of that run."""
    CPU_S.clear()
    record[key] = race(variants, repeats, prepare)
    record[key + "_cpu"] = {name: round(CPU_S[name], 4) for name in variants}


@contextlib.contextmanager
def forced(**settings):
    """Temporarily set module constants (NUMPY_* of hf_time.merges.selection, the others of
    hf_time.merges.bitselect) to force one selection path."""
    modules = {k: selection if k.startswith("NUMPY") else bitselect for k in settings}
    saved = {k: getattr(modules[k], k) for k in settings}
    for k, v in settings.items():
        setattr(modules[k], k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(modules[k], k, v)


PATHS = {  # the current module forced onto each of its selection paths
    "partition": dict(NUMPY_ON_CPU=True, NUMPY_BRACKET_FROM=1 << 62, NUMPY_TIED_FROM=1 << 62),  # numpy partition
    "numpy bracket": dict(NUMPY_ON_CPU=True, NUMPY_BRACKET_FROM=0),  # numpy, sampled bracket, no copy
    "bit bracket": dict(NUMPY_ON_CPU=False),  # bitselect (what CUDA runs): bracket over bit keys
    "radix": dict(NUMPY_ON_CPU=False, SAMPLE=0),  # bitselect, 16-bit radix select only
}


def task_vector(kind: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "float32":
        return torch.randn(n, generator=g) * 0.01
    base = (torch.randn(n, generator=g) * 0.02).bfloat16()
    expert = (base.float() + 0.01 * base.float().std() * torch.randn(n, generator=g)).bfloat16()
    return expert.float() - base.float()


def bench_size(kind: str, n: int, repeats: int) -> dict:
    tau = task_vector(kind, n, seed=n)
    mag = tau.abs()
    m = kernels.kept_count(DENSITY, n)
    (th,) = selection.thresholds(mag, [m])
    row = {"kind": kind, "numel": n, "m": m, "tied_at_threshold": th.equal, "zeros": int((tau == 0).sum())}

    def path(name):
        def run():
            with forced(**PATHS[name]):
                return selection.kth_largest(mag, m)

        return run

    with other_cpu(row):
        values = {"previous": old_kth_largest(mag, m), "current": selection.kth_largest(mag, m)}
        values.update({f"current[{p}]": path(p)() for p in PATHS})
        row["threshold_identical"] = len(set(values.values())) == 1
        raced(
            row,
            "threshold_s",
            {"previous": lambda: old_kth_largest(mag, m), "current": lambda: selection.kth_largest(mag, m)}
            | {f"current[{p}]": path(p) for p in PATHS},
            repeats,
        )
        row["mask_identical"] = torch.equal(old_top_mask(mag, m), selection.top_mask(mag, m))
        raced(
            row,
            "mask_s",
            {"previous": lambda: old_top_mask(mag, m), "current": lambda: selection.top_mask(mag, m)},
            repeats,
        )
        tv = torch.empty_like(tau)
        old_out = old_trim_magnitude_(tau.clone(), DENSITY)
        row["trim_identical"] = torch.equal(
            old_out.view(torch.int32), kernels.trim_magnitude_(tau.clone(), DENSITY).view(torch.int32)
        )
        raced(
            row,
            "trim_s",
            {
                "previous": lambda: old_trim_magnitude_(tv, DENSITY),
                "current": lambda: kernels.trim_magnitude_(tv, DENSITY),
            },
            repeats,
            prepare=lambda: tv.copy_(tau),
        )
    return row


def bench_ties(repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(TIES_SHAPE, generator=g) * 0.02).bfloat16()
    experts = [
        (base.float() + 0.01 * base.float().std() * torch.randn(TIES_SHAPE, generator=g)).bfloat16() for _ in range(3)
    ]
    spec = get("ties")
    config = spec.make_config({"density": DENSITY})
    ctx = TensorContext(name="model.layers.0.mlp.up_proj.weight", weights=(1.0, 1.0, 1.0))

    def before():  # the previous structure: whole stacked float32 task vectors, the previous trims
        b = base.float()
        tvs = kernels.task_vectors(b, experts)
        for i in range(len(experts)):
            old_trim_magnitude_(tvs[i], DENSITY)
        return kernels.generalized_task_arithmetic(b, tvs, ctx.weights, consensus=True, normalize=True, lambda_=1.0)

    def after():
        return spec.fn(base, experts, config, ctx)

    row = {"shape": list(TIES_SHAPE), "experts": 3, "density": DENSITY, "dtype": "bfloat16"}
    with other_cpu(row):
        row["identical"] = torch.equal(before().view(torch.int32), after().view(torch.int32))
        raced(row, "wall_s", {"before": before, "after": after}, repeats)
    return row


def environment() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(result: dict) -> str:
    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    lines = [
        "| data | numel | tied at thr. | threshold: previous | current | [partition] | [numpy bracket] | [bit bracket] | [radix] "
        "| mask: previous | current | trim: previous | current | trim speed-up | identical | other CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["sizes"]:
        t, k, tr = r["threshold_s"], r["mask_s"], r["trim_s"]
        same = r["threshold_identical"] and r["mask_identical"] and r["trim_identical"]
        lines.append(
            f"| {r['kind']} | {r['numel']:.0e} | {r['tied_at_threshold']} | {ms(t['previous'])} | **{ms(t['current'])}** "
            f"| {ms(t['current[partition]'])} | {ms(t['current[numpy bracket]'])} | {ms(t['current[bit bracket]'])} "
            f"| {ms(t['current[radix]'])} "
            f"| {ms(k['previous'])} | **{ms(k['current'])}** | {ms(tr['previous'])} | **{ms(tr['current'])}** "
            f"| {tr['previous'] / tr['current']:.1f}x | {'yes' if same else 'NO'} | {r['other_cpu_s']} |"
        )
    if "ties" in result:
        t = result["ties"]
        lines += [
            "",
            "| TIES merge, 4096x11008 bf16, 3 experts, density 0.2 | before | after | speed-up | identical | other CPU s |",
            "|---|---:|---:|---:|---|---:|",
            f"| wall time (s) | {t['wall_s']['before']:.2f} | **{t['wall_s']['after']:.2f}** "
            f"| {t['wall_s']['before'] / t['wall_s']['after']:.2f}x | {'yes' if t['identical'] else 'NO'} | {t['other_cpu_s']} |",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 3e5, 1e6, 3e6, 1e7, 5e7])
    parser.add_argument("--kinds", nargs="+", choices=["float32", "bf16"], default=["float32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (min is reported; at least 3)")
    parser.add_argument("--skip-ties", action="store_true", help="no TIES merge timing")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "environment": environment(),
        "density": DENSITY,
        "repeats": args.repeats,
        "settings": {
            "NUMPY_BRACKET_FROM": selection.NUMPY_BRACKET_FROM,
            "NUMPY_TIED_FROM": selection.NUMPY_TIED_FROM,
            "CPU_CHUNK": bitselect.CPU_CHUNK,
            "SAMPLE": bitselect.SAMPLE,
        },
        "sizes": [],
    }
    for n in (int(s) for s in args.sizes):
        for kind in args.kinds:
            row = bench_size(kind, n, args.repeats)
            result["sizes"].append(row)
            t = row["threshold_s"]
            print(
                f"{kind:8s} n={n:>10,d}  threshold {t['previous'] * 1e3:8.1f} -> {t['current'] * 1e3:8.1f} ms   "
                f"mask {row['mask_s']['previous'] * 1e3:8.1f} -> {row['mask_s']['current'] * 1e3:8.1f} ms   "
                f"trim {row['trim_s']['previous'] * 1e3:8.1f} -> {row['trim_s']['current'] * 1e3:8.1f} ms   "
                f"(other CPU {row['other_cpu_s']} s)",
                flush=True,
            )
    if not args.skip_ties:
        result["ties"] = bench_ties(args.repeats)
        w = result["ties"]["wall_s"]
        print(
            f"ties 4096x11008 x3: {w['before']:.2f} s -> {w['after']:.2f} s (identical: {result['ties']['identical']})",
            flush=True,
        )
    result["environment"]["loadavg_end"] = os.getloadavg()[0]
    if args.markdown:
        print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
