#!/usr/bin/env python3
"""The in-process measurements of issue 13's fourth to sixth passes (``issue13_*_pass.log``), as one script.

Each subcommand prints its figures; compare two versions of hf_time by running the same subcommand
with ``--tree`` pointing at a checkout of each (``git worktree add /tmp/old <commit>``), processes
alternating, as the log does. Nothing here is a test: timings are printed, never asserted.

    python benchmarks/issue13_micro.py ops                      # per-op cost of 128K-entry torch ops
    python benchmarks/issue13_micro.py partition                # numpy partition vs sort, with and without zeros
    python benchmarks/issue13_micro.py [--tree T] hands         # what one map_hands call costs beyond its work
    python benchmarks/issue13_micro.py [--tree T] ties-phases   # TIES rank / slice phases on 4 tensors of the 271M model
    python benchmarks/issue13_micro.py [--tree T] ties-merge --base B --experts E1 E2   # api.merge of a TIES chain step
    python benchmarks/issue13_micro.py sample-every    # TIES ranking of the 271M model: sample 1 in 16 vs 1 in 64
    python benchmarks/issue13_micro.py rank-together   # the same: each expert in its own pass vs all in one
    python benchmarks/issue13_micro.py trim-cut [--scope global]   # TIES slices of the 271M model: float mask vs hardshrink
    python benchmarks/issue13_micro.py global-together # TIES global thresholds: each expert in its own passes vs all in one
    python benchmarks/issue13_micro.py opcm-fold       # an OPCM fold of MiniLM-shaped experts: time, profile, SVD bits
    python benchmarks/issue13_micro.py thread-cpu      # api.merge of the 271M model: CPU seconds of each thread
    python benchmarks/issue13_micro.py [--tree T] band-rank   # Breadcrumbs bands of the 271M model: ranking time, a hash
    python benchmarks/issue13_micro.py one-thread      # TIES rank and slices of the 271M model on torch's 2 threads vs 1
    python benchmarks/issue13_micro.py dare-draws      # DARE on 4 tensors of the 271M model: draws here vs ahead
    OMP_WAIT_POLICY=PASSIVE python benchmarks/issue13_micro.py dare-merge --method dare_linear   # the whole model

``ties-phases`` reads the checkpoints ``merge_bench.py --scale 271m`` builds (``--models``, default
``/tmp/hf_time_bench/271m/models``) and prints a hash of the merged tensors, so runs of two versions
show whether the bits are the same.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import sys
import time
from pathlib import Path

MODELS = Path("/tmp/hf_time_bench/271m/models")  # what ``merge_bench.py --scale 271m`` builds
OUT = "/tmp/issue13_micro_out"
FOUR_TENSORS = ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight",
                "model.layers.0.mlp.gate_proj.weight", "model.layers.0.self_attn.q_proj.weight")


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cmd_ops(args) -> None:
    import torch

    n = 1 << 17
    e, b = torch.randn(n).bfloat16(), torch.randn(n).bfloat16()
    a, c, f = torch.empty(n), torch.randn(n), torch.empty(n)
    mask = torch.empty(n, dtype=torch.bool)
    ops = {
        "copy bf16->f32": lambda: a.copy_(e), "sub_": lambda: a.sub_(c), "abs_": lambda: a.abs_(),
        "gt->bool": lambda: torch.gt(a, 0.5, out=mask), "count_nonzero(bool)": lambda: int(torch.count_nonzero(mask)),
        "gt->f32": lambda: torch.gt(a, 0.5, out=f), "sum(f32)": lambda: float(f.sum()), "mul_": lambda: a.mul_(c),
        "copy f32->bf16": lambda: b.copy_(a),
    }
    for name, op in ops.items():
        op()
        per_call = _best(lambda op=op: [op() for _ in range(300)], 3) / 300
        print(f"{torch.get_num_threads()} {name} {per_call * 1e6:.1f} us")


def cmd_partition(args) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for n in (147456, 589824, 2359296, 4194304):
        m = int(0.2 * n)
        for label, zeros in (("", 0.0), ("80% zeros: ", 0.8)):
            x = np.abs(rng.standard_normal(n).astype(np.float32))
            x[rng.random(n) < zeros] = 0
            part = _best(lambda x=x, k=n - m: x.copy().partition(k), 7)
            srt = _best(lambda x=x: np.sort(x), 7)
            print(f"{n} {label}partition {part * 1e3:.2f} ms sort {srt * 1e3:.2f} ms")


def _load(models: Path, name: str, tensors) -> dict:
    from safetensors import safe_open

    index = json.loads((models / name / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for k in tensors:
        with safe_open(str(models / name / index[k]), "pt") as f:
            out[k] = f.get_tensor(k)
    return out


def cmd_ties_phases(args) -> None:
    import torch

    from hf_time.merges import kernels
    from hf_time.merges import task_arithmetic as ta
    from hf_time.merges.ties import TIES

    base = _load(args.models, "base", FOUR_TENSORS)
    experts = [_load(args.models, f"expert_{i}", FOUR_TENSORS) for i in (1, 2, 3)]
    combine = functools.partial(kernels.generalized_task_arithmetic, weights=(1.0,) * 3, consensus=True,
                                normalize=True, lambda_=1.0)
    rank, slices, digest = [], [], hashlib.sha256()
    for r in range(args.repeats):
        spent = [0.0, 0.0]
        for k in FOUR_TENSORS:
            start = time.perf_counter()
            trims = ta._trims(TIES, base[k], [e[k] for e in experts], (0.5,) * 3, (0,) * 3, None, k)
            spent[0] += time.perf_counter() - start
            start = time.perf_counter()
            out = ta._merge_slices(base[k], [e[k] for e in experts], trims, combine)
            spent[1] += time.perf_counter() - start
            if r == 0:
                digest.update(out.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
        rank.append(spent[0])
        slices.append(spent[1])
    print(f"{args.tree or 'installed'} rank {min(rank):.4f} slices {min(slices):.4f} hash {digest.hexdigest()[:12]}")


def _alternate(args, ways: tuple[str, str], run, what: str, same: str) -> None:
    """For each ``--density``: ``run(way, density) -> (seconds, result)`` for both ways, their order alternating
    over ``--repeats`` rounds in one process (both see the same machine); prints whether the results agree
    and each way's times."""
    import statistics

    for density in args.density:
        times, results = {way: [] for way in ways}, {}
        for r in range(args.repeats):
            for way in ways if r % 2 == 0 else ways[::-1]:
                spent, results[way] = run(way, density)
                times[way].append(spent)
        print(f"density {density}: {what}, same {same}: {results[ways[0]] == results[ways[1]]}")
        for way, spent in times.items():
            print(f"  {way}: min {min(spent):.3f} s, median {statistics.median(spent):.3f} s "
                  f"({', '.join(f'{x:.2f}' for x in spent)})")


def _inputs(models: Path) -> tuple[str, list[str]]:
    """The base folder and the three experts' folders of ``models``, as ``api.merge`` takes them."""
    return str(models / "base"), [str(models / f"expert_{i}") for i in (1, 2, 3)]


def _model(models: Path) -> tuple[list[str], dict, list[dict]]:
    """The tensors of the 271M model that the bracket ranks (from 2^18 entries), base and the three experts."""
    names = list(json.loads((models / "base" / "model.safetensors.index.json").read_text())["weight_map"])
    base = _load(models, "base", names)
    experts = [_load(models, f"expert_{i}", names) for i in (1, 2, 3)]
    return [k for k in names if base[k].numel() >= 1 << 18], base, experts


def cmd_sample_every(args) -> None:
    """Rank the three experts of every tensor of the 271M model for a TIES merge with the bracket's sample
    at one entry in 16 (before the sixth pass) and in 64; the thresholds must be the same."""
    from hf_time.merges import bitselect
    from hf_time.merges import task_arithmetic as ta
    from hf_time.merges.ties import TIES

    names, base, experts = _model(args.models)

    def run(way, density):
        bitselect.SAMPLE_EVERY = 16 if way == "sample 1 in 16" else 64
        start = time.perf_counter()
        trims = [ta._trims(TIES, base[k], [e[k] for e in experts], (density,) * 3, (0,) * 3, None, k) for k in names]
        return time.perf_counter() - start, [(t._top, t._skip) for ts in trims for t in ts]

    _alternate(args, ("sample 1 in 16", "sample 1 in 64"), run, f"{len(names)} tensors x 3 experts", "thresholds")


def cmd_rank_together(args) -> None:
    """TIES thresholds of the three experts of every tensor: one ranking pass per expert (before the sixth
    pass) against one pass for the three (θ_0 read once); the thresholds must be the same."""
    from hf_time.merges import kernels

    names, base, experts = _model(args.models)

    def run(way, density):
        start = time.perf_counter()
        trims = []
        for k in names:
            band = kernels.magnitude_ranks(base[k].numel(), density)
            if way == "together":
                trims += kernels.MagnitudeTrim.ranks_each([e[k] for e in experts], [band] * 3, minus=base[k])
            else:
                trims += [kernels.MagnitudeTrim.ranks(e[k], *band, minus=base[k]) for e in experts]
        return time.perf_counter() - start, [t._top for t in trims]

    _alternate(args, ("each alone", "together"), run, f"{len(names)} tensors x 3 experts", "thresholds")


def cmd_trim_cut(args) -> None:
    """The slice phase of a TIES merge of every tensor of the 271M model: trims that count the tied entries
    slice by slice (or compare with a global threshold) and multiply by a float mask (before the sixth and
    the seventh pass) against one hardshrink per slice (the cut of per-tensor thresholds known, or a global
    threshold); the merged bits must be the same. ``--scope global``: each expert's whole-model threshold."""
    import torch

    from hf_time import engine
    from hf_time.io import Checkpoint
    from hf_time.merges import kernels, selection
    from hf_time.merges import task_arithmetic as ta

    class Counted(selection.MagnitudeTrim):
        apply_ = selection.MagnitudeTrim._mask_

    names, base, experts = _model(args.models)
    combine = functools.partial(kernels.generalized_task_arithmetic, weights=(1.0,) * 3, consensus=True,
                                normalize=True, lambda_=1.0)
    globals_ = {}
    if args.scope == "global":
        checkpoints = [Checkpoint(args.models / f"expert_{i}") for i in (1, 2, 3)]
        for density in args.density:
            globals_[density] = [lo for (lo,) in engine.magnitude_quantiles(
                Checkpoint(args.models / "base"), checkpoints, [kernels.topk_fractions(density)] * 3, progress=False)]

    def run(way, density):
        kind = Counted if way == "float mask" else selection.MagnitudeTrim
        digest, spent = hashlib.sha256(), 0.0
        for k in names:
            if args.scope == "global":
                trims = [kind.between(lo) for lo in globals_[density]]
            else:
                trims = kind.ranks_each([e[k] for e in experts],
                                        [kernels.magnitude_ranks(base[k].numel(), density)] * 3, minus=base[k])
            start = time.perf_counter()
            out = ta._merge_slices(base[k], [e[k] for e in experts], trims, combine)
            spent += time.perf_counter() - start
            digest.update(out.view(torch.int32).numpy().tobytes())
        return spent, digest.hexdigest()

    _alternate(args, ("float mask", "hardshrink"), run, f"{len(names)} tensors x 3 experts, {args.scope} thresholds",
               "bits")


def cmd_global_together(args) -> None:
    """The global thresholds of a TIES merge (TIME's default scope) of the 271M model's three experts: one
    expert per pair of passes over the model (before the seventh pass) against the three in the same two
    passes (θ_0 read once); the thresholds must be the same."""
    from hf_time import engine
    from hf_time.io import Checkpoint

    base = Checkpoint(args.models / "base")
    experts = [Checkpoint(args.models / f"expert_{i}") for i in (1, 2, 3)]

    def run(way, density):
        fractions = [(1.0 - density,)] * 3
        start = time.perf_counter()
        if way == "together":
            got = engine.magnitude_quantiles(base, experts, fractions, progress=False)
        else:
            got = tuple(engine.magnitude_quantiles(base, [e], [f], progress=False)[0] for e, f in zip(experts, fractions))
        return time.perf_counter() - start, got

    _alternate(args, ("each alone", "together"), run, "3 experts over the whole model", "thresholds")


def cmd_opcm_fold(args) -> None:
    """Fold the third of three random experts of a MiniLM-shaped BERT (hidden 384, 6 layers, intermediate
    1536, vocab 30522, float32) into OPCM's running merge: wall time, the top of a cProfile, and whether
    ``torch.linalg.svd`` gives the same bits on one thread as on two (the fold's SVD cannot change)."""
    import cProfile
    import pstats
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from hf_time import api

    root = args.work
    if not (root / "e3").is_dir():
        cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                         vocab_size=30522)
        torch.manual_seed(0)
        base = BertModel(cfg)
        base.save_pretrained(root / "base")
        for i in (1, 2, 3):
            with torch.no_grad():
                for p in base.parameters():
                    p.add_(torch.randn_like(p) * 0.01)
            base.save_pretrained(root / f"e{i}")

    def fold(previous, i, out):
        shutil.rmtree(root / out, ignore_errors=True)
        api.fold(previous and str(root / previous), str(root / "base"), str(root / f"e{i}"), "opcm", str(root / out),
                 progress=False)

    fold(None, 1, "f1")
    fold("f1", 2, "f2")
    print("fold 3 s:", [round(_best(lambda: fold("f2", 3, "f3"), 1), 2) for _ in range(args.repeats)])
    profile = cProfile.Profile()
    profile.enable()
    fold("f2", 3, "f3")
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(8)
    a = torch.randn(384, 1536, generator=torch.Generator().manual_seed(0))
    factors = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        factors[threads] = torch.linalg.svd(a, full_matrices=False)
    print("svd of a 384x1536 matrix, same bits on 1 and 2 threads:",
          all(torch.equal(x, y) for x, y in zip(factors[1], factors[2])))


def cmd_thread_cpu(args) -> None:
    """``api.merge`` of the 271M model (task_arithmetic, then TIES at density 0.5, per-tensor thresholds):
    wall time and the CPU seconds each thread used (from /proc, sampled every 50 ms for the short-lived
    threads), by thread name; torch's own worker threads have none."""
    import os
    import re
    import threading

    from hf_time import api

    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> dict[str, float]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            except FileNotFoundError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            out[tid] = (int(fields[11]) + int(fields[12])) / tick
        return out

    def sample(seen: dict, names: dict, done: threading.Event) -> None:
        while not done.is_set():
            seen.update(cpu())
            names.update({str(t.native_id): t.name for t in threading.enumerate() if t.native_id})
            time.sleep(0.05)

    def merge(method: str) -> None:
        api.merge(*_inputs(args.models), method, out=OUT, params={"density": 0.5} if method == "ties" else {},
                  weights=[1.0] * 3, dtype="bfloat16", overwrite=True, progress=False)

    for method in ("task_arithmetic", "ties"):
        merge(method)
        for _ in range(args.repeats):
            seen: dict[str, float] = {}
            names: dict[str, str] = {}
            done = threading.Event()
            before = cpu()
            sampler = threading.Thread(target=sample, args=(seen, names, done), name="sampler")
            start = time.perf_counter()
            sampler.start()
            merge(method)
            wall = time.perf_counter() - start
            done.set()
            sampler.join()
            seen.update(cpu())
            by_name: dict[str, float] = {}
            for tid, used in seen.items():
                name = re.sub(r"[-_]?\d+", "", names.get(tid, "torch workers"))
                by_name[name] = by_name.get(name, 0.0) + used - before.get(tid, 0.0)
            print(f"{method}: wall {wall:.2f} s, CPU s by thread:",
                  {k: round(v, 2) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v >= 0.01})


def cmd_one_thread(args) -> None:
    """TIES ranking and slices of every tensor of the 271M model (density 0.5) with torch on both cores and
    on one: how much the ops gain from torch's own threads."""
    import torch

    from hf_time.merges import kernels
    from hf_time.merges import task_arithmetic as ta

    names, base, experts = _model(args.models)
    combine = functools.partial(kernels.generalized_task_arithmetic, weights=(1.0,) * 3, consensus=True,
                                normalize=True, lambda_=1.0)
    got: dict[int, list[tuple[float, float]]] = {2: [], 1: []}
    threads = torch.get_num_threads()
    for _ in range(args.repeats):
        for n in (2, 1):
            torch.set_num_threads(n)
            start = time.perf_counter()
            trims = [kernels.MagnitudeTrim.ranks_each([e[k] for e in experts],
                                                      [kernels.magnitude_ranks(base[k].numel(), 0.5)] * 3,
                                                      minus=base[k]) for k in names]
            ranked = time.perf_counter()
            for k, trim in zip(names, trims):
                ta._merge_slices(base[k], [e[k] for e in experts], trim, combine)
            got[n].append((round(ranked - start, 2), round(time.perf_counter() - ranked, 2)))
    torch.set_num_threads(threads)
    for n, runs in got.items():
        print(f"torch threads {n}: (rank s, slices s) {runs}")


def cmd_band_rank(args) -> None:
    """Rank the Breadcrumbs bands (density 0.5, gamma 0.01) of the three experts of every tensor of the 271M
    model, per tensor: the seconds (min over repeats) and a hash of the thresholds, to compare trees."""
    from hf_time.merges import kernels

    names, base, experts = _model(args.models)

    def run():
        out = []
        for k in names:
            band = kernels.magnitude_ranks(base[k].numel(), 0.5, 0.01)
            out += kernels.MagnitudeTrim.ranks_each([e[k] for e in experts], [band] * 3, minus=base[k])
        return out

    trims = run()
    digest = hashlib.sha256(repr([(t._top.value, t._top.greater, t._skip.value, t._skip.greater)
                                  for t in trims]).encode()).hexdigest()[:12]
    print(f"{args.tree or 'installed'} band ranks: {_best(run, args.repeats):.2f} s (min of {args.repeats}), "
          f"thresholds {digest}")


def cmd_ties_merge(args) -> None:
    from hf_time import api

    def run():
        api.merge(base=args.base, experts=args.experts, method="ties",
                  params={"density": args.density, "threshold_scope": args.scope},
                  weights=[1.0 / len(args.experts)] * len(args.experts), out=args.out, overwrite=True, progress=False)

    run()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append(round(time.perf_counter() - start, 3))
    print(f"{args.tree or 'installed'} ties merge {times}")


def cmd_hands(args) -> None:
    from hf_time.merges import workers

    spans = [(i, i + 1) for i in range(64)]
    for k in (2, 16):
        for _ in range(2):
            workers.map_hands(spans, len, workers=k)
        per_call = _best(lambda k=k: [workers.map_hands(spans, len, workers=k) for _ in range(300)], 3) / 300
        print(f"{args.tree or 'installed'} map_hands, {k} hands, no work: {per_call * 1e6:.0f} us per call")


def cmd_dare_draws(args) -> None:
    """dare_ties and dare_linear on four tensors of the 271M model (3 experts), each expert's random drops
    drawn on the merging thread (as before the eighth pass: ``workers.count`` forced to 1, torch's threads
    as they are) or ahead on threads of their own; the outputs must be the same bits."""
    import torch

    from hf_time.merges import get
    from hf_time.merges.registry import TensorContext

    base = _load(args.models, "base", FOUR_TENSORS)
    experts = [_load(args.models, f"expert_{i}", FOUR_TENSORS) for i in (1, 2, 3)]
    for method in ("dare_ties", "dare_linear"):
        spec = get(method)

        def run(way, density, spec=spec):
            config = spec.make_config({"density": density, "seed": 3}, n_experts=3)
            with _drawing(way):
                start = time.perf_counter()
                out = [spec.fn(base[k], [e[k] for e in experts], config, TensorContext(name=k, weights=(1.0,) * 3))
                       for k in FOUR_TENSORS]
                spent = time.perf_counter() - start
            return spent, hashlib.sha256(b"".join(t.view(torch.int32).numpy().tobytes() for t in out)).hexdigest()

        _alternate(args, ("drawn here", "drawn ahead"), run, method, "bits")


def cmd_dare_merge(args) -> None:
    """``api.merge`` of the whole 271M model with ``--method`` (density 0.5, seed 3), the random drops drawn on
    the merging thread or ahead (as ``dare-draws``), alternating in one process: wall and process CPU
    seconds. The eighth pass's log runs it with ``OMP_WAIT_POLICY=PASSIVE`` (as the CLI then set) and unset."""
    import resource

    from hf_time import api

    def cpu() -> float:
        used = resource.getrusage(resource.RUSAGE_SELF)
        return used.ru_utime + used.ru_stime

    for r in range(args.repeats):
        for way in ("drawn here", "drawn ahead") if r % 2 == 0 else ("drawn ahead", "drawn here"):
            with _drawing(way):
                used, start = cpu(), time.perf_counter()
                api.merge(*_inputs(args.models), args.method, out=OUT, params={"density": 0.5, "seed": 3},
                          dtype="bfloat16", overwrite=True, progress=False)
                print(f"{args.method} {way}: wall {time.perf_counter() - start:.2f} s, CPU {cpu() - used:.2f} s",
                      flush=True)


@contextlib.contextmanager
def _drawing(way: str):
    """DARE's masks "drawn here" (on the merging thread, as before the eighth pass: ``workers.count`` forced
    to 1, torch's threads as they are) or "drawn ahead" (the code as it is) within the block."""
    from hf_time.merges import workers

    cores = workers.count
    if way == "drawn here":
        workers.count = lambda: 1
    try:
        yield
    finally:
        workers.count = cores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", help="import hf_time from this checkout instead of the installed one")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ops")
    sub.add_parser("partition")
    sub.add_parser("hands")
    phases = sub.add_parser("ties-phases")
    phases.add_argument("--models", type=Path, default=MODELS)
    phases.add_argument("--repeats", type=int, default=6)
    for name in ("sample-every", "rank-together", "trim-cut", "global-together", "dare-draws"):
        rank = sub.add_parser(name)
        rank.add_argument("--models", type=Path, default=MODELS)
        rank.add_argument("--density", type=float, nargs="+", default=[0.5, 0.2])
        rank.add_argument("--repeats", type=int, default=6)
        if name == "trim-cut":
            rank.add_argument("--scope", choices=("tensor", "global"), default="tensor", help="TIES threshold_scope")
    for name in ("thread-cpu", "one-thread", "band-rank"):
        each = sub.add_parser(name)
        each.add_argument("--models", type=Path, default=MODELS)
        each.add_argument("--repeats", type=int, default=2 if name == "thread-cpu" else 3)
    dare = sub.add_parser("dare-merge")
    dare.add_argument("--models", type=Path, default=MODELS)
    dare.add_argument("--method", choices=("dare_linear", "dare_ties"), default="dare_linear")
    dare.add_argument("--repeats", type=int, default=6)
    opcm = sub.add_parser("opcm-fold")
    opcm.add_argument("--work", type=Path, default=Path("/tmp/issue13_opcm"), help="the experts and folds (built once)")
    opcm.add_argument("--repeats", type=int, default=3)
    merge = sub.add_parser("ties-merge")
    merge.add_argument("--base", required=True)
    merge.add_argument("--experts", nargs="+", required=True)
    merge.add_argument("--density", type=float, default=0.2)
    merge.add_argument("--scope", choices=("tensor", "global"), default="tensor", help="TIES threshold_scope")
    merge.add_argument("--out", default=OUT)
    merge.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    {"ops": cmd_ops, "partition": cmd_partition, "ties-phases": cmd_ties_phases, "ties-merge": cmd_ties_merge,
     "hands": cmd_hands, "sample-every": cmd_sample_every, "rank-together": cmd_rank_together,
     "trim-cut": cmd_trim_cut, "global-together": cmd_global_together, "opcm-fold": cmd_opcm_fold,
     "thread-cpu": cmd_thread_cpu, "one-thread": cmd_one_thread, "band-rank": cmd_band_rank,
     "dare-draws": cmd_dare_draws, "dare-merge": cmd_dare_merge}[
        args.cmd](args)


if __name__ == "__main__":
    main()
