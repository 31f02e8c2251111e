#!/usr/bin/env python3
"""hf_time vs mergekit: the same merges, in the same run, timed side by side.

What it does (see benchmarks/README.md for the full description and recorded results):

1. Builds, once, a base and three experts of a ~271M-parameter Llama-shaped model in bfloat16
   (hidden 1024, 16 layers, intermediate 2816, vocab 32000, untied embeddings), each saved as a
   sharded safetensors checkpoint (200 MB shards). Experts are the base plus small seeded noise.
   The checkpoints are cached under ``--workdir`` and reused while the build marker matches.
2. For each method (``task_arithmetic``; ``ties`` with density 0.5; ``dare_ties`` on request) runs ``mergekit-yaml`` and
   ``hf-time merge`` with the same parameters, each in its own child process, and measures wall time
   and peak RSS (``--repeats`` rounds, the tools taking turns; min wall time, max peak RSS). Before
   every timed run all input checkpoint files are read once (untimed) so both tools start with a
   warm page cache. Background load from other processes is measured and warned about.
3. Compares the two merged checkpoints tensor by tensor (in float32): max |difference|, the same in
   bf16 units in the last place, and the share of differing elements (not for ``dare_ties``: each tool
   draws its own random masks).
4. Prints a table with the ratios and PASS/MISS against the targets. Exit status is 0 whatever the
   figures: this is a benchmark, not a test (it exits non-zero only on a usage or build error).

Usage::

    .venv/bin/python benchmarks/merge_bench.py                  # CPU, both tools
    .venv/bin/python benchmarks/merge_bench.py --device cuda    # hf_time --device cuda, mergekit --cuda
    .venv/bin/python benchmarks/merge_bench.py --methods ties --repeats 3 --json results.json
    .venv/bin/python benchmarks/merge_bench.py --methods task_arithmetic ties dare_ties --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _iofloor import io_floor, startup  # noqa: E402
from _procstats import ProcStats, format_bytes, run_measured  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

# The models of the issues: ~271M parameters (~542 MB per checkpoint in bf16), and a 1B scale in
# TinyLlama's shape (~2.2 GB per checkpoint, ~8.8 GB of inputs for base + 3 experts).
SCALES = {
    "271m": dict(hidden_size=1024, num_hidden_layers=16, intermediate_size=2816, vocab_size=32000,
                 num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048, tie_word_embeddings=False),
    "1b": dict(hidden_size=2048, num_hidden_layers=22, intermediate_size=5632, vocab_size=32000,
               num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False),
    # a few MB: the CPU fallback of benchmarks/gpu_check.sh and its test (not a benchmark)
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 344, "vocab_size": 2048,
             "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512,
             "tie_word_embeddings": False},
}
MODEL_CONFIG = dict(SCALES["271m"])  # replaced by --scale in main()
NUM_EXPERTS = 3
SHARD_SIZE = "200MB"
NOISE_SCALE = 0.01  # default of --noise-scale: expert = base + scale * std(base tensor) * N(0, 1)
SEED = 1234
BUILD_VERSION = 1  # bump when the way checkpoints are built changes

# Methods and the parameters given to BOTH tools (mergekit names). They are the mergekit defaults
# for these methods, written out so that neither tool's defaults decide the comparison.
METHODS = {
    "task_arithmetic": {"normalize": False, "lambda": 1.0},
    "ties": {"density": 0.5, "normalize": True, "lambda": 1.0},
    "dare_ties": {"density": 0.5, "normalize": True, "lambda": 1.0, "rescale": True},
}
DEFAULT_METHODS = ("task_arithmetic", "ties")  # the targets; dare_ties on request (--methods)
# Methods whose outputs are random (drop masks drawn by each tool's own generator): timed, not compared.
RANDOM = ("dare_ties",)
# mergekit-only knobs, pinned to its defaults (hf_time has no such switches).
MERGEKIT_ONLY = {
    "task_arithmetic": {},
    "ties": {"rescale": False, "int8_mask": False},
    "dare_ties": {"int8_mask": False},
}
# hf_time-only knobs, pinned to the values that match mergekit's semantics.
HF_TIME_ONLY = {
    "task_arithmetic": {},
    "ties": {"threshold_scope": "tensor"},  # per-tensor top-k, as mergekit (not TIME's global one)
    "dare_ties": {"seed": 0},  # mergekit draws unseeded masks; hf_time's are seeded (same seed, same merge)
}
WEIGHT = 1.0  # every expert's weight, in both tools
BUSY_WARN = 0.10  # warn when other processes used more than this share of the CPU during a run

# Targets of the issues: hf_time wall time as a fraction of mergekit's, per scale.
TARGETS = {"271m": {"task_arithmetic": 0.25, "ties": 0.15}, "1b": {"task_arithmetic": 0.20, "ties": 0.12},
           "tiny": {"task_arithmetic": 0.25, "ties": 0.15}}
TARGET_RATIO = dict(TARGETS["271m"])


# --------------------------------------------------------------------------------------------
# Building the checkpoints
# --------------------------------------------------------------------------------------------


def build_marker(noise_scale: float) -> dict:
    """Everything that determines the built checkpoints; stored next to them and compared."""
    return dict(
        version=BUILD_VERSION,
        config=MODEL_CONFIG,
        experts=NUM_EXPERTS,
        shard_size=SHARD_SIZE,
        noise_scale=noise_scale,
        seed=SEED,
        dtype="bfloat16",
    )


def model_dirs(workdir: Path) -> tuple[Path, list[Path]]:
    """Paths of the base and expert checkpoints under ``workdir``."""
    root = workdir / "models"
    return root / "base", [root / f"expert_{i}" for i in range(1, NUM_EXPERTS + 1)]


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint (all shards)."""
    return sorted(folder.glob("*.safetensors"))


def build_base(out: Path) -> int:
    """Random-init the Llama model in bf16 and save it sharded; return its parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(**MODEL_CONFIG)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, max_shard_size=SHARD_SIZE)
    del model
    return n_params


def tensor_generator(expert: int, name: str) -> torch.Generator:
    """A generator seeded by (SEED, expert index, tensor name): the noise never depends on order."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{SEED}:{expert}:{name}".encode()))
    return g


def build_expert(base: Path, out: Path, expert: int, noise_scale: float) -> None:
    """Write ``base + noise`` shard by shard, with the base's file layout, index and config.

    The noise per tensor is ``noise_scale * std(tensor) * N(0, 1)`` (``mean |tensor|`` when the
    std is 0, as for the norm weights that start at 1.0), drawn in float32 and rounded to bf16.
    Only one shard is in memory at a time.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    for src in base.iterdir():
        if src.is_file() and src.suffix != ".safetensors":
            shutil.copy2(src, out / src.name)
    for shard in weight_files(base):
        tensors = {}
        with safe_open(shard, framework="pt") as f:
            metadata = f.metadata()
            for name in f.keys():
                t = f.get_tensor(name).float()
                scale = t.std().item() if t.numel() > 1 else 0.0
                if scale == 0.0:
                    scale = t.abs().mean().item() or 1.0
                noise = torch.randn(t.shape, generator=tensor_generator(expert, name))
                tensors[name] = t.add_(noise, alpha=noise_scale * scale).to(torch.bfloat16)
                del noise, t
        save_file(tensors, out / shard.name, metadata=metadata)
        del tensors


def ensure_models(workdir: Path, rebuild: bool, noise_scale: float) -> tuple[Path, list[Path]]:
    """Build the base and experts unless a matching build is already cached in ``workdir``."""
    base, experts = model_dirs(workdir)
    root = base.parent
    marker_path = root / "BUILD_COMPLETE.json"
    wanted = build_marker(noise_scale)
    if not rebuild and marker_path.exists():
        have = json.loads(marker_path.read_text())
        if {k: have.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
            print(f"Reusing checkpoints in {root} ({have['params']:,} parameters each)")
            return base, experts
        print(f"Checkpoints in {root} were built with other settings: rebuilding")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    print(f"Building base + {NUM_EXPERTS} experts in {root} (once; reused by later runs) ...", flush=True)
    n_params = build_base(base)
    print(f"  base: {n_params:,} parameters, {len(weight_files(base))} shards", flush=True)
    for i, folder in enumerate(experts, start=1):
        build_expert(base, folder, i, noise_scale)
        print(f"  expert_{i}: done", flush=True)
    marker_path.write_text(json.dumps(dict(wanted, params=n_params), indent=2))
    return base, experts


def warm_page_cache(folders: list[Path]) -> None:
    """Read every file of the input checkpoints once (untimed), so no tool pays for cold disk."""
    buf = bytearray(16 * 2**20)
    view = memoryview(buf)
    for folder in folders:
        for path in folder.iterdir():
            if path.is_file():
                with open(path, "rb", buffering=0) as f:
                    while f.readinto(view):
                        pass


# --------------------------------------------------------------------------------------------
# Finding and running the tools
# --------------------------------------------------------------------------------------------


def find_mergekit(explicit: str | None) -> tuple[str | None, str]:
    """Locate ``mergekit-yaml``: ``--mergekit-bin``, then PATH, then ``.venv-mergekit/bin``.

    Returns (path or None, how it was found or why it was not).
    """
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, "--mergekit-bin"
        return None, f"--mergekit-bin {explicit} is not an executable file"
    on_path = shutil.which("mergekit-yaml")
    if on_path:
        return on_path, "PATH"
    local = REPO_ROOT / ".venv-mergekit" / "bin" / "mergekit-yaml"
    if os.access(local, os.X_OK):
        return str(local), ".venv-mergekit"
    return None, ("mergekit-yaml not found (no --mergekit-bin, not on PATH, no .venv-mergekit); "
                  "create it with benchmarks/setup_mergekit.sh")


def find_hf_time(explicit: str | None) -> tuple[str | None, str]:
    """Locate the ``hf-time`` console script and check that ``hf-time merge --help`` works.

    Returns (path or None, how it was found or why it cannot be used).
    """
    candidates = [explicit] if explicit else [
        str(Path(sys.executable).parent / "hf-time"),
        str(REPO_ROOT / ".venv" / "bin" / "hf-time"),
        shutil.which("hf-time"),
    ]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None and explicit:
        return None, f"--hf-time-bin {explicit} is not an executable file"
    if found is None:
        return None, "hf-time console script not found (is the project installed in .venv?)"
    try:
        probe = subprocess.run([found, "merge", "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"`{found} merge --help` failed: {e}"
    if probe.returncode != 0:
        tail = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return None, f"`{found} merge --help` exited {probe.returncode}: {tail[0]}"
    return found, "found"


def compile_bytecode(hf_bin: str) -> str:
    """Byte-compile the hf_time package that ``hf_bin`` runs, as ``pip install`` does for an installed
    package (mergekit's venv has its bytecode from its install). An editable install run under
    ``PYTHONDONTWRITEBYTECODE=1`` (as on this project's machines) would otherwise compile each of its
    ~200 modules from source at every start, which a user's installed hf_time never does."""
    beside = Path(hf_bin).parent / "python"  # a venv's console script; else (a wrapper script) this Python
    python = str(beside) if beside.is_file() else sys.executable
    code = "import compileall, sys, hf_time; sys.exit(0 if compileall.compile_dir(hf_time.__path__[0], quiet=1) else 1)"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bytecode NOT compiled: {e}"
    return "bytecode compiled, as pip install does" if done.returncode == 0 else f"bytecode NOT compiled: {done.stderr[-200:]}"


def child_env() -> dict[str, str]:
    """Environment of the tools: offline, no progress bars, no tokenizer threads."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def format_value(v: object) -> str:
    """A parameter value as both tools read it: ``true``/``false`` for booleans, else ``str``."""
    return str(v).lower() if isinstance(v, bool) else str(v)


def mergekit_yaml(method: str, base: Path, experts: list[Path], compute_dtype: str) -> str:
    """The mergekit config for ``method`` (same parameters as given to hf_time).

    ``dtype`` is the dtype mergekit computes in (``bfloat16``, the inputs' dtype, is what a user
    would write; ``float32`` makes it round once, at the end); the output is bf16 either way.
    """
    params = {**METHODS[method], **MERGEKIT_ONLY[method]}
    lines = [f"merge_method: {method}", f"base_model: {base}", f"dtype: {compute_dtype}", "out_dtype: bfloat16",
             "parameters:"]
    lines += [f"  {k}: {format_value(v)}" for k, v in params.items()]
    lines.append("models:")
    for e in experts:
        lines += [f"  - model: {e}", "    parameters:", f"      weight: {WEIGHT}"]
    return "\n".join(lines) + "\n"


def mergekit_cmd(binary: str, config: Path, out: Path, device: str) -> list[str]:
    """``mergekit-yaml`` command line: no tokenizer or model card (hf_time writes neither)."""
    cmd = [binary, str(config), str(out), "--no-copy-tokenizer", "--no-write-model-card", "--quiet"]
    if device.startswith("cuda"):
        cmd.append("--cuda")
    return cmd


def hf_time_cmd(binary: str, method: str, base: Path, experts: list[Path], out: Path, device: str) -> list[str]:
    """``hf-time merge`` command line with the same parameters as the mergekit config.

    ``--quiet`` as for mergekit (no progress bars); one ``--weight`` per ``--expert``, in order.
    """
    cmd = [binary, "merge", "--base", str(base)]
    for e in experts:
        cmd += ["--expert", str(e)]
    cmd += ["--method", method]
    for k, v in {**METHODS[method], **HF_TIME_ONLY[method]}.items():
        cmd += ["--param", f"{k}={format_value(v)}"]
    for _ in experts:
        cmd += ["--weight", str(WEIGHT)]
    cmd += ["--out", str(out), "--dtype", "bfloat16", "--device", device, "--overwrite", "--quiet"]
    return cmd


@dataclass
class ToolResult:
    """Outcome of one tool on one method: the best of its repeats, or why it did not run."""

    tool: str
    method: str
    cmd: list[str]
    out_dir: str
    log_path: str
    ok: bool = True
    note: str = ""
    wall_s: float | None = None  # min over repeats
    cpu_s: float | None = None  # user + sys CPU seconds, min over repeats
    peak_rss_bytes: int | None = None  # max over repeats (kernel ru_maxrss of the tool's process)
    tree_rss_peak_bytes: int | None = None  # max over repeats (sampled sum over the process tree)
    tree_anon_peak_bytes: int | None = None  # max over repeats (sampled, anonymous memory only)
    contention: float | None = None  # max over repeats: share of the machine's CPU used by others
    runs: list[dict] = field(default_factory=list)

    def summarize(self) -> None:
        """Fill the summary fields from ``runs``: min times, max memory, worst contention."""
        if not self.runs:
            return
        self.wall_s = min(r["wall_s"] for r in self.runs)
        self.cpu_s = min(r["user_s"] + r["sys_s"] for r in self.runs)
        self.peak_rss_bytes = max(r["peak_rss_bytes"] for r in self.runs)
        for key in ("tree_rss_peak_bytes", "tree_anon_peak_bytes"):
            values = [r[key] for r in self.runs if r[key] is not None]
            setattr(self, key, max(values) if values else None)
        shares = [contention_share(ProcStats(**r)) for r in self.runs]
        shares = [x for x in shares if x is not None]
        self.contention = max(shares) if shares else None


def run_once(result: ToolResult, inputs: list[Path], run_no: int) -> None:
    """One timed run of a tool (fresh output dir, warm page cache), recorded into ``result``."""
    out, log_path = Path(result.out_dir), Path(result.log_path)
    if out.exists():
        shutil.rmtree(out)
    warm_page_cache(inputs)
    with open(log_path, "a") as log:
        if run_no == 1:
            log.write("$ " + " ".join(result.cmd) + "\n")
        log.write(f"--- run {run_no} ---\n")
        log.flush()
        stats: ProcStats = run_measured(result.cmd, env=child_env(), log=log)
    result.runs.append(asdict(stats))
    label = f"  {result.tool:<8} run {run_no}: "
    if stats.returncode != 0:
        result.ok = False
        result.note = f"exit {stats.returncode}; see {log_path}"
        print(f"{label}FAILED (exit {stats.returncode}), log: {log_path}")
        print(textwrap.indent(tail(log_path, 15), "      | "))
        return
    busy = contention_share(stats)
    note = f"; others used {100 * busy:.0f}% of the CPU" if busy is not None and busy > BUSY_WARN else ""
    print(f"{label}{stats.wall_s:6.1f} s wall, {stats.user_s + stats.sys_s:6.1f} s CPU, "
          f"peak RSS {format_bytes(stats.peak_rss_bytes)}{note}", flush=True)


def run_method(method: str, tools: dict[str, str], base: Path, experts: list[Path], outs: Path, logs: Path,
               args: argparse.Namespace) -> dict[str, ToolResult]:
    """Time every tool on ``method``, ``args.repeats`` rounds, the tools taking turns in each round.

    Taking turns (mergekit, hf_time, mergekit, hf_time, ...) rather than running all of one tool's
    repeats first exposes both tools to the same background load when the machine is shared.
    """
    results: dict[str, ToolResult] = {}
    for tool, binary in tools.items():
        out = outs / f"{tool}_{method}"
        if tool == "mergekit":
            config = logs / f"mergekit_{method}.yaml"
            config.write_text(mergekit_yaml(method, base, experts, args.mergekit_dtype))
            cmd = mergekit_cmd(binary, config, out, args.device)
        else:
            cmd = hf_time_cmd(binary, method, base, experts, out, args.device)
        log_path = logs / f"{tool}_{method}.log"
        log_path.write_text("")
        results[tool] = ToolResult(tool=tool, method=method, cmd=cmd, out_dir=str(out), log_path=str(log_path))
    for run_no in range(1, args.repeats + 1):
        for result in results.values():
            if result.ok:
                run_once(result, [base, *experts], run_no)
    for result in results.values():
        result.summarize()
    return results


def contention_share(stats: ProcStats) -> float | None:
    """Share of the machine's CPU capacity that other processes used during a run (0..1)."""
    if stats.other_cpu_s is None or stats.wall_s <= 0:
        return None
    return stats.other_cpu_s / (stats.wall_s * (os.cpu_count() or 1))


def tail(path: Path, n: int) -> str:
    """Last ``n`` lines of a text file."""
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------------------------
# Comparing the outputs
# --------------------------------------------------------------------------------------------


def tensor_locations(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, for every tensor of the checkpoint in ``folder``."""
    from safetensors import safe_open

    where = {}
    for path in weight_files(folder):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                where[name] = path
    return where


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """Size of one bf16 unit in the last place at |x| (float32 tensor in, float32 out)."""
    _, exponent = torch.frexp(x.abs().clamp_min(torch.finfo(torch.bfloat16).tiny))
    return torch.ldexp(torch.ones_like(x), (exponent - 8).to(torch.int32))


def compare_outputs(a_dir: Path, b_dir: Path, base_dir: Path, expert_dirs: list[Path], tolerance_ulp: float) -> dict:
    """Tensor-by-tensor comparison of two merged checkpoints, in float32.

    Differences are also expressed in bf16 units in the last place (ulp), taken at the largest
    magnitude among a, b, the base and the experts for that element: that is the spacing of the
    values the tools round, so one bf16 rounding more or less in an intermediate result counts as
    about 1 ulp even where the merged value happens to be near 0.

    Args:
        a_dir, b_dir: the two merged checkpoints (hf_time's, mergekit's).
        base_dir, expert_dirs: the inputs (for the ulp scale and the size of the merged change).
        tolerance_ulp: differences up to this many ulp count as rounding.

    Returns:
        A dict with ``max_abs`` (largest |a - b|) and ``max_abs_tensor``, ``max_ulp``, ``differing``
        (share of elements that differ at all), ``beyond_tolerance`` (share differing by more than
        ``tolerance_ulp``), ``max_abs_delta`` (largest |a - base|, for scale), ``first_diff`` (first
        tensor in name order with an element beyond the tolerance, with its worst element; None when
        there is none), ``only_a`` / ``only_b`` (names only one side has), ``tensors_compared``,
        ``dtypes`` and ``tolerance_ulp``.
    """
    from safetensors import safe_open

    la, lb, lbase = tensor_locations(a_dir), tensor_locations(b_dir), tensor_locations(base_dir)
    lexperts = [tensor_locations(e) for e in expert_dirs]
    common = sorted(set(la) & set(lb))
    res = dict(max_abs=0.0, max_abs_tensor=None, max_ulp=0.0, differing=0.0, beyond_tolerance=0.0,
               max_abs_delta=0.0, first_diff=None, only_a=sorted(set(la) - set(lb)),
               only_b=sorted(set(lb) - set(la)), tensors_compared=len(common), dtypes=set(),
               tolerance_ulp=tolerance_ulp)
    n_total = n_diff = n_beyond = 0
    with contextlib.ExitStack() as stack:
        handles = {}

        def get(path: Path, name: str) -> torch.Tensor:
            if path not in handles:
                handles[path] = stack.enter_context(safe_open(path, framework="pt"))
            return handles[path].get_tensor(name)

        for name in common:
            ta, tb = get(la[name], name), get(lb[name], name)
            res["dtypes"].add(f"{ta.dtype}/{tb.dtype}")
            a, b = ta.float().reshape(-1), tb.float().reshape(-1)
            if ta.shape != tb.shape:
                res["first_diff"] = res["first_diff"] or dict(tensor=name, problem=f"shape {ta.shape} vs {tb.shape}")
                continue
            base_t = get(lbase[name], name).float().reshape(-1) if name in lbase else torch.zeros_like(a)
            res["max_abs_delta"] = max(res["max_abs_delta"], (a - base_t).abs().max().item())
            n_total += a.numel()
            where = (a != b).nonzero().squeeze(1)  # only the differing elements need the ulp scale
            if where.numel() == 0:
                continue
            diff = (a[where] - b[where]).abs()
            scale = torch.maximum(torch.maximum(a[where].abs(), b[where].abs()), base_t[where].abs())
            for le in lexperts:
                if name in le:
                    scale = torch.maximum(scale, get(le[name], name).reshape(-1)[where].float().abs())
            ulps = diff / bf16_ulp(scale)
            m, mu = diff.max().item(), ulps.max().item()
            beyond = int((ulps > tolerance_ulp).sum())
            n_diff += where.numel()
            n_beyond += beyond
            if m > res["max_abs"]:
                res["max_abs"], res["max_abs_tensor"] = m, name
            res["max_ulp"] = max(res["max_ulp"], mu)
            if beyond and res["first_diff"] is None:
                j = int(ulps.argmax())
                i = int(where[j])
                res["first_diff"] = dict(tensor=name, max_abs=m, max_ulp=mu, index=i, a=a[i].item(),
                                         b=b[i].item(), base=base_t[i].item(),
                                         differing=where.numel() / a.numel(), beyond=beyond / a.numel())
    res["differing"] = n_diff / n_total if n_total else 0.0
    res["beyond_tolerance"] = n_beyond / n_total if n_total else 0.0
    res["dtypes"] = sorted(res["dtypes"])
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def rounding_tolerance(mergekit_dtype: str) -> float:
    """How many bf16 ulp two correct outputs may differ by.

    hf_time rounds once (to the output dtype). mergekit computing in bf16 also rounds each task
    vector sum and the final addition: up to one ulp per expert plus one; computing in float32 it
    rounds once too, and only the summation order can differ (1 ulp).
    """
    return float(NUM_EXPERTS + 1) if mergekit_dtype == "bfloat16" else 1.0


def print_table(device: str, results: dict[str, dict[str, ToolResult]], diffs: dict[str, dict]) -> None:
    """The summary table, then PASS/MISS per target."""

    def wall(r: ToolResult | None) -> str:
        return f"{r.wall_s:.1f}" if r and r.ok else ("failed" if r else "skipped")

    def rss(r: ToolResult | None) -> str:
        return format_bytes(r.peak_rss_bytes) if r and r.ok else "-"

    header = ["method", "mergekit wall s", "hf_time wall s", "ratio (target)", "mergekit peak RSS",
              "hf_time peak RSS", "max|Δ| (bf16 ulp)"]
    rows = []
    verdicts = []
    for method, per_tool in results.items():
        mk, hf = per_tool.get("mergekit"), per_tool.get("hf_time")
        target = TARGET_RATIO.get(method)
        bound = f"≤{target}" if target is not None else "no target"
        ratio = "-"
        if mk and mk.ok and hf and hf.ok:
            r = hf.wall_s / mk.wall_s
            ratio = f"{r:.3f} ({bound})"
            if target is not None:
                verdicts.append(f"{'PASS' if r <= target else 'MISS'}  {method}: hf_time wall time "
                                f"{r:.3f}× mergekit's (target ≤ {target}×)")
            rr = hf.peak_rss_bytes / mk.peak_rss_bytes
            verdicts.append(f"{'PASS' if rr <= 1.0 else 'MISS'}  {method}: hf_time peak RSS "
                            f"{rr:.2f}× mergekit's (target ≤ 1×)")
        else:
            ratio = f"- ({bound})"
        d = diffs.get(method)
        delta = f"{d['max_abs']:.3g} ({d['max_ulp']:.0f})" if d else "random masks" if method in RANDOM else "-"
        rows.append([method, wall(mk), wall(hf), ratio, rss(mk), rss(hf), delta])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\nResults, device {device}:")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    print()
    for v in verdicts or ["(no targets checked: a tool did not run)"]:
        print(v)

    ran = [r for per in results.values() for r in per.values() if r.ok]
    if ran:
        print("\nDetail: CPU = user + sys seconds (min over runs; less sensitive than wall time to other "
              "load); tree RSS / anonymous = sampled every 20 ms over the process tree, anonymous = "
              "without file-backed pages such as the mmapped safetensors inputs.")
        for method, per_tool in results.items():
            parts = [f"{tool} CPU {r.cpu_s:.1f} s, tree RSS {format_bytes(r.tree_rss_peak_bytes)}, "
                     f"anonymous {format_bytes(r.tree_anon_peak_bytes)}" for tool, r in per_tool.items() if r.ok]
            print(f"  {method}: " + "; ".join(parts))
    busy = [r for r in ran if r.contention is not None and r.contention > BUSY_WARN]
    if busy:
        worst = max(r.contention for r in busy)
        print(f"\nWARNING: other processes used up to {100 * worst:.0f}% of the CPU during "
              f"{len(busy)} of the {len(ran)} measurements ({', '.join(f'{r.tool}/{r.method}' for r in busy)}): "
              "the wall times are inflated and the ratios unreliable. Re-run on an idle machine.")


def print_diff(method: str, d: dict) -> None:
    """One paragraph about the agreement of the two outputs for ``method``."""
    print(f"  {method}: {d['tensors_compared']} tensors compared ({', '.join(d['dtypes'])}); "
          f"max|Δ| = {d['max_abs']:.4g} (in {d['max_abs_tensor']}), {d['max_ulp']:.1f} bf16 ulp at most; "
          f"{100 * d['differing']:.3f}% of elements differ, {100 * d['beyond_tolerance']:.3f}% by more than "
          f"{d['tolerance_ulp']:g} ulp; largest |merged − base| = {d['max_abs_delta']:.4g}")
    if d["only_a"] or d["only_b"]:
        print(f"    only in hf_time: {d['only_a'][:5]}{' ...' if len(d['only_a']) > 5 else ''}; "
              f"only in mergekit: {d['only_b'][:5]}{' ...' if len(d['only_b']) > 5 else ''}")
    fd = d["first_diff"]
    if fd is None:
        print(f"    AGREE to bf16 rounding (no element differs by more than {d['tolerance_ulp']:g} ulp)")
    elif "problem" in fd:
        print(f"    DIFFER: first mismatch: {fd['tensor']}: {fd['problem']}")
    else:
        print(f"    DIFFER: first tensor beyond rounding: {fd['tensor']} (max|Δ| {fd['max_abs']:.4g} = "
              f"{fd['max_ulp']:.1f} ulp at flat index {fd['index']}: hf_time {fd['a']:.6g} vs mergekit "
              f"{fd['b']:.6g}, base {fd['base']:.6g}; {100 * fd['differing']:.3f}% of its elements differ, "
              f"{100 * fd['beyond']:.3f}% beyond rounding)")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=list(SCALES), default="271m", help="model size (default 271m)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="cache for the built checkpoints, the outputs and the logs (default: %(default)s)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(DEFAULT_METHODS),
                   help=f"methods to run (default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--device", default="cpu",
                   help="hf_time --device; anything starting with 'cuda' also gives mergekit --cuda")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per tool and method (min wall time reported)")
    p.add_argument("--mergekit-bin", help="path to mergekit-yaml (default: PATH, then .venv-mergekit/bin)")
    p.add_argument("--hf-time-bin", help="path to the hf-time console script (default: next to this python, "
                                         "then .venv/bin, then PATH)")
    p.add_argument("--mergekit-dtype", choices=["bfloat16", "float32"], default="bfloat16",
                   help="mergekit's compute dtype (its `dtype:`; output is bf16 either way; default: %(default)s)")
    p.add_argument("--noise-scale", type=float, default=NOISE_SCALE,
                   help="expert noise, in units of each tensor's std (changing it rebuilds; default: %(default)s)")
    p.add_argument("--skip-mergekit", action="store_true", help="do not run mergekit")
    p.add_argument("--skip-hf-time", action="store_true", help="do not run hf_time")
    p.add_argument("--rebuild", action="store_true", help="rebuild the checkpoints even if cached")
    p.add_argument("--skip-startup", action="store_true", help="do not time the start-up of hf-time (9 child processes)")
    p.add_argument("--no-bytecode", action="store_true", help="do not byte-compile hf_time's modules before timing it "
                   "(an editable install run with PYTHONDONTWRITEBYTECODE=1 then compiles them on every start)")
    p.add_argument("--keep-outputs", action="store_true", help="keep the merged checkpoints (default: delete)")
    p.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the checkpoints, run both tools, compare, print. Returns the exit status."""
    args = parse_args(argv)
    MODEL_CONFIG.clear()
    MODEL_CONFIG.update(SCALES[args.scale])
    TARGET_RATIO.clear()
    TARGET_RATIO.update(TARGETS[args.scale])
    workdir: Path = args.workdir or Path(f"/tmp/hf_time_bench/{args.scale}")
    logs = workdir / "logs"
    outs = workdir / "out"
    logs.mkdir(parents=True, exist_ok=True)
    outs.mkdir(parents=True, exist_ok=True)

    base, experts = ensure_models(workdir, args.rebuild, args.noise_scale)
    params = json.loads((base.parent / "BUILD_COMPLETE.json").read_text())["params"]
    size = sum(p.stat().st_size for p in weight_files(base))
    print(f"Model: Llama {MODEL_CONFIG['num_hidden_layers']} layers, hidden {MODEL_CONFIG['hidden_size']}, "
          f"{params:,} parameters, bf16, {format_bytes(size)} in {len(weight_files(base))} shards per checkpoint; "
          f"{NUM_EXPERTS} experts")

    tools: dict[str, str] = {}
    if args.skip_mergekit:
        print("mergekit: skipped (--skip-mergekit)")
    else:
        mk_bin, how = find_mergekit(args.mergekit_bin)
        if mk_bin:
            tools["mergekit"] = mk_bin
            print(f"mergekit: {mk_bin} ({how})")
        else:
            print(f"mergekit: skipped: {how}")
    if args.skip_hf_time:
        print("hf_time: skipped (--skip-hf-time)")
    else:
        hf_bin, how = find_hf_time(args.hf_time_bin)
        if hf_bin:
            tools["hf_time"] = hf_bin
            print(f"hf_time: {hf_bin}; {'bytecode left as it is' if args.no_bytecode else compile_bytecode(hf_bin)}")
        else:
            print(f"hf_time: skipped: {how}")
    print(f"Device: {args.device}; {args.repeats} timed run(s) per tool and method; "
          f"page cache warmed before each run; logs in {logs}")

    results: dict[str, dict[str, ToolResult]] = {}
    diffs: dict[str, dict] = {}
    for method in args.methods:
        params_txt = ", ".join(f"{k}={v}" for k, v in METHODS[method].items())
        print(f"\n{method} ({params_txt}; weight {WEIGHT} per expert)")
        results[method] = run_method(method, tools, base, experts, outs, logs, args)
        mk, hf = results[method].get("mergekit"), results[method].get("hf_time")
        if method in RANDOM:
            print(f"  {method}: outputs not compared: each tool draws its own random drop masks")
        elif mk and mk.ok and hf and hf.ok:
            diffs[method] = compare_outputs(Path(hf.out_dir), Path(mk.out_dir), base, experts,
                                            rounding_tolerance(args.mergekit_dtype))
            print_diff(method, diffs[method])
        if not args.keep_outputs:
            for r in results[method].values():
                if Path(r.out_dir).exists():
                    shutil.rmtree(r.out_dir)

    print_table(args.device, results, diffs)
    floor = io_floor([f for d in (base, *experts) for f in weight_files(d)], size, outs)
    print(f"\nI/O floor (same run): read the {format_bytes(floor['bytes_read'])} of inputs once from the page cache "
          f"{floor['read_s']:.2f} s + write {format_bytes(size)} and fsync it {floor['write_s']:.2f} s = "
          f"{floor['floor_s']:.2f} s")
    for method, per_tool in results.items():
        print(f"  {method}: " + "; ".join(f"{tool} {r.wall_s / floor['floor_s']:.2f}× the floor"
                                         for tool, r in per_tool.items() if r.ok))
    start = startup(tools["hf_time"]) if "hf_time" in tools and not args.skip_startup else None
    if start:
        print(f"Start-up: `hf-time --help` {start['help_s']:.2f} s, `import hf_time.api` {start['import_merge_path_s']:.2f} s "
              f"(a bare python: {start['python_s']:.2f} s)")
    if args.json:
        payload = dict(
            device=args.device,
            model=dict(config=MODEL_CONFIG, params=params, bytes_per_checkpoint=size, experts=NUM_EXPERTS),
            methods=METHODS,
            tools=tools,
            results={m: {t: asdict(r) for t, r in per.items()} for m, per in results.items()},
            diffs=diffs,
            scale=args.scale,
            io_floor=floor,
            startup=start,
            targets=TARGET_RATIO,
            hf_time_bytecode="as it was" if args.no_bytecode else "compiled before timing",
        )
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"\nWrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
