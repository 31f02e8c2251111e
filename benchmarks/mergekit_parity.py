#!/usr/bin/env python3
"""hf_time vs mergekit 0.1.5 on the configs people write: the same YAML, the same tensors.

Runs mergekit-style configs that use gradients, filters, slices with layer ranges, passthrough
(layer stacking) and ``tokenizer_source`` (base, union, a model) through both tools, on tiny
models of two architectures built here (Llama, and Qwen2 with its attention biases), and compares
the outputs: tensor names, shapes and values (max |Δ| in float32), the config's layer count and
vocabulary size, and the tokenizer's vocabulary. ``union`` assigns new tokens ids in a different
(reproducible) order than mergekit, whose order follows a hash map's iteration; there each output
token's rows are compared by token.

Usage::

    benchmarks/setup_mergekit.sh                      # once: .venv-mergekit with mergekit 0.1.5
    .venv/bin/python benchmarks/mergekit_parity.py    # builds models, runs both tools, prints a table
    .venv/bin/python benchmarks/mergekit_parity.py --setup   # create .venv-mergekit first if missing
    .venv/bin/python benchmarks/mergekit_parity.py --json results.json --cases slerp_gradient_filters

Exit status: 0 when every case agrees within float32 rounding, 1 otherwise, 2 on a usage error.
tests/test_mergekit_parity.py runs the same cases (skipped with the reason when mergekit is absent).

mergekit runs in its own virtual environment, in one child process for all cases (this file is
its driver: ``python mergekit_parity.py --mergekit-worker DIR``, which imports nothing from hf_time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
MERGEKIT_VENV = Path(os.environ.get("MERGEKIT_VENV", REPO_ROOT / ".venv-mergekit"))
TOLERANCE = 1e-5  # max |Δ| allowed: float32 rounding of O(1) weights, a few ulp
ARCHS = ("llama", "qwen2")
VOCAB = 48  # tokens of the base tokenizer (and rows of its embeddings)
MERGEKIT_ERROR = "MERGEKIT_ERROR.txt"
# mergekit 0.1.5 sets num_hidden_layers but keeps Qwen2's per-layer `layer_types`; transformers 5 then
# refuses to save that config, after every tensor was written. The tensors are still compared, and
# hf_time's config (which rebuilds the list) is checked to load.
LAYER_TYPES_ERROR = "must be equal to the number of `layer_types`"


# -- tiny models ----------------------------------------------------------------------------------------


def _tokens(kind: str, arch: str) -> list[str]:
    """The vocabulary of a tokenizer: the base's, or an expert's that drops some tokens and adds others.

    Qwen2's tokenizer class adds ``<|endoftext|>`` when it is missing, so its vocabularies start with it.
    """
    specials = ["<|endoftext|>" if arch == "qwen2" else "<unk>", "<s>", "</s>"]
    words = [f"w{i}" for i in range(VOCAB - 3)]
    if kind == "base":
        return specials + words
    return specials + words[:-6] + [f"x{i}" for i in range(9)] + ["<tool>"]  # 6 missing, 10 new (one special)


def _save_tokenizer(folder: Path, tokens: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0]))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token=tokens[0], bos_token="<s>", eos_token="</s>")
    if "<tool>" in tokens:
        tok.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    tok.chat_template = "{% for m in messages %}" + folder.name + ": {{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(folder)


def _config(arch: str, vocab: int):
    from transformers import LlamaConfig, Qwen2Config

    kw = dict(hidden_size=32, num_hidden_layers=4, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=vocab, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaConfig(**kw) if arch == "llama" else Qwen2Config(**kw)


def build_models(root: Path, archs: tuple[str, ...] = ARCHS) -> dict[str, Path]:
    """Tiny base + experts per architecture (float32), reused when present. Returns name -> folder.

    ``{arch}-a``, ``{arch}-b``: the base plus seeded noise (every tensor moves); ``{arch}-v``: an expert
    with another vocabulary (6 base tokens dropped, 10 added), its shared rows the base's plus noise.
    """
    import torch
    from transformers import AutoModelForCausalLM

    out = {}
    for arch in archs:
        names = {f"{arch}-{k}": root / f"{arch}-{k}" for k in ("base", "a", "b", "v")}
        out.update(names)
        if all((p / "model.safetensors").is_file() for p in names.values()):
            continue
        torch.manual_seed(1 if arch == "llama" else 2)
        base = AutoModelForCausalLM.from_config(_config(arch, VOCAB))
        with torch.no_grad():
            for p in base.parameters():  # norms start at exactly 1: give every tensor some spread
                p.add_(0.05 * torch.randn(p.shape))
        base.save_pretrained(names[f"{arch}-base"])
        _save_tokenizer(names[f"{arch}-base"], _tokens("base", arch))
        for k, seed in (("a", 11), ("b", 12)):
            g = torch.Generator().manual_seed(seed)
            expert = AutoModelForCausalLM.from_config(_config(arch, VOCAB))
            with torch.no_grad():
                for (n, p), (_, q) in zip(expert.named_parameters(), base.named_parameters()):
                    p.copy_(q + 0.02 * torch.randn(q.shape, generator=g))
            expert.save_pretrained(names[f"{arch}-{k}"])
            _save_tokenizer(names[f"{arch}-{k}"], _tokens("base", arch))
        tokens, base_tokens = _tokens("v", arch), _tokens("base", arch)
        g = torch.Generator().manual_seed(13)
        other = AutoModelForCausalLM.from_config(_config(arch, len(tokens)))
        with torch.no_grad():
            for (n, p), (_, q) in zip(other.named_parameters(), base.named_parameters()):
                if p.shape == q.shape:
                    p.copy_(q + 0.02 * torch.randn(q.shape, generator=g))
                else:  # a vocabulary tensor: shared tokens keep the base's row plus noise
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
                    for i, t in enumerate(tokens):
                        if t in base_tokens:
                            p[i] = q[base_tokens.index(t)] + 0.02 * torch.randn(q.shape[1:], generator=g)
        other.save_pretrained(names[f"{arch}-v"])
        _save_tokenizer(names[f"{arch}-v"], tokens)
    return out


# -- cases ----------------------------------------------------------------------------------------------

ATTN_MLP_T = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},  # mergekit's README slerp example
              {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
              {"value": 0.5}]


def _cases(m: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """Config per case name; ``m(key)`` is the folder of model ``key`` (``base``, ``a``, ``b``, ``v``)."""
    return {
        "slerp_gradient_filters": {
            "merge_method": "slerp", "base_model": m("base"),
            "models": [{"model": m("base")}, {"model": m("a")}],
            "parameters": {"t": ATTN_MLP_T}, "dtype": "float32"},
        "linear_weight_filters_gradient": {
            "merge_method": "linear",
            "models": [{"model": m("a"), "parameters": {"weight": [{"filter": "mlp", "value": [0.2, 0.9]},
                                                                   {"filter": "o_proj", "value": 0.1}, {"value": 0.7}]}},
                       {"model": m("b"), "parameters": {"weight": [0.5, 1.0, 0.25]}}],
            "dtype": "float32"},
        "task_arithmetic_filtered_lambda_global_weight": {
            "merge_method": "task_arithmetic", "base_model": m("base"),
            "models": [{"model": m("a"), "parameters": {"weight": [{"filter": "self_attn", "value": 0.9}]}},
                       {"model": m("b")}],
            "parameters": {"weight": [0.3, 0.6], "lambda": [{"filter": "mlp", "value": [0.5, 1.5]}, {"value": 1.0}]},
            "dtype": "float32"},
        "ties_density_gradient": {
            "merge_method": "ties", "base_model": m("base"),
            "models": [{"model": m("a"), "parameters": {"density": [0.3, 0.9], "weight": 0.6}},
                       {"model": m("b"), "parameters": {"density": [{"filter": "mlp", "value": 0.4}, {"value": 0.7}],
                                                        "weight": 0.4}}],
            "parameters": {"normalize": True}, "dtype": "float32"},
        "slerp_slices_layer_ranges": {
            "merge_method": "slerp", "base_model": m("base"),
            "slices": [{"sources": [{"model": m("base"), "layer_range": [0, 2]}, {"model": m("a"), "layer_range": [0, 2]}]},
                       {"sources": [{"model": m("base"), "layer_range": [2, 4]}, {"model": m("b"), "layer_range": [1, 3]}],
                        "parameters": {"t": [{"filter": "mlp", "value": 0.8}, {"value": [0.2, 0.6]}]}}],
            "parameters": {"t": ATTN_MLP_T}, "dtype": "float32"},
        "linear_slices_source_weights": {
            "merge_method": "linear",
            "slices": [{"sources": [{"model": m("a"), "layer_range": [0, 3], "parameters": {"weight": [1, 0]}},
                                    {"model": m("b"), "layer_range": [1, 4], "parameters": {"weight": 0.5}}]},
                       {"sources": [{"model": m("a"), "layer_range": [3, 4]}, {"model": m("b"), "layer_range": [0, 1]}],
                        "parameters": {"weight": [{"filter": "mlp", "value": 2.0}, {"value": 1.0}]}}],
            "parameters": {"weight": 0.25}, "dtype": "float32"},
        "passthrough_frankenmerge": {
            "merge_method": "passthrough",
            "slices": [{"sources": [{"model": m("a"), "layer_range": [0, 3]}]},
                       {"sources": [{"model": m("b"), "layer_range": [1, 4]}]},
                       {"sources": [{"model": m("a"), "layer_range": [2, 4]}]}],
            "dtype": "float32"},
        "passthrough_scaled_duplicate": {
            "merge_method": "passthrough", "base_model": m("base"),
            "slices": [{"sources": [{"model": m("base"), "layer_range": [0, 4]}]},
                       {"sources": [{"model": m("base"), "layer_range": [2, 4],
                                     "parameters": {"scale": [{"filter": "o_proj", "value": 0.0},
                                                              {"filter": "down_proj", "value": [0.5, 0.0]},
                                                              {"value": 1.0}]}}]}],
            "dtype": "float32"},
        "tokenizer_source_base": {
            "merge_method": "task_arithmetic", "base_model": m("base"),
            "models": [{"model": m("a"), "parameters": {"weight": 0.5}}, {"model": m("v"), "parameters": {"weight": 0.5}}],
            "tokenizer_source": "base", "dtype": "float32"},
        "tokenizer_source_union": {
            "merge_method": "linear", "base_model": m("base"),
            "models": [{"model": m("base"), "parameters": {"weight": 0.4}}, {"model": m("v"), "parameters": {"weight": 0.6}}],
            "tokenizer_source": "union", "dtype": "float32"},
        "passthrough_union_vocabularies": {
            "merge_method": "passthrough", "base_model": m("base"), "tokenizer_source": "union",
            "slices": [{"sources": [{"model": m("base"), "layer_range": [0, 2]}]},
                       {"sources": [{"model": m("v"), "layer_range": [2, 4]}]}],
            "dtype": "float32"},
        "tokenizer_source_model": {
            "merge_method": "slerp", "base_model": m("base"),
            "models": [{"model": m("base")}, {"model": m("v")}],
            "parameters": {"t": [0.2, 0.8]}, "tokenizer_source": m("v"), "dtype": "float32"},
    }


def case_configs(models: dict[str, Path], archs: tuple[str, ...] = ARCHS) -> dict[str, dict[str, Any]]:
    """Every case for every architecture, by ``{case}-{arch}``."""
    out = {}
    for arch in archs:
        for name, cfg in _cases(lambda k, a=arch: str(models[f"{a}-{k}"])).items():
            out[f"{name}-{arch}"] = cfg
    return out


# -- running both tools --------------------------------------------------------------------------------


def mergekit_available() -> str | None:
    """The reason mergekit cannot run here, or None when it can."""
    py = MERGEKIT_VENV / "bin" / "python"
    if not py.is_file():
        return f"mergekit is not installed ({MERGEKIT_VENV} missing: run benchmarks/setup_mergekit.sh)"
    return None


def run_mergekit(configs: dict[str, dict[str, Any]], workdir: Path) -> dict[str, Path]:
    """Run every config with mergekit (one child process in its own venv). Returns name -> output folder."""
    import yaml

    cfg_dir = workdir / "mergekit-configs"
    shutil.rmtree(cfg_dir, ignore_errors=True)
    cfg_dir.mkdir(parents=True)
    for name, cfg in configs.items():
        (cfg_dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out_dir = workdir / "mergekit-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([str(MERGEKIT_VENV / "bin" / "python"), __file__, "--mergekit-worker", str(cfg_dir),
                           str(out_dir)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mergekit worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {name: out_dir / name for name in configs}


def run_hf_time(configs: dict[str, dict[str, Any]], workdir: Path) -> dict[str, Path]:
    """Run every config with hf_time (in this process, through the YAML loader). Returns name -> folder."""
    from hf_time.api import merge
    from hf_time.config import merge_config_from_dict

    out = {}
    for name, cfg in configs.items():
        folder = workdir / "hf_time-out" / name
        merge(config=merge_config_from_dict(cfg, name), out=folder, overwrite=True, progress=False)
        out[name] = folder
    return out


def _mergekit_worker(cfg_dir: Path, out_dir: Path) -> None:
    """Inside .venv-mergekit: run each YAML of ``cfg_dir`` with mergekit's own run_merge."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    for path in sorted(cfg_dir.glob("*.yaml")):
        cfg = MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))
        out = out_dir / path.stem
        try:
            run_merge(cfg, str(out), MergeOptions(clone_tensors=True, quiet=True, random_seed=0))
        except Exception as e:  # noqa: BLE001 - recorded for the comparison, which decides what it means
            out.mkdir(parents=True, exist_ok=True)
            (out / MERGEKIT_ERROR).write_text(f"{type(e).__name__}: {e}")


# -- comparing ------------------------------------------------------------------------------------------


def _tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _vocab(folder: Path) -> dict[str, int]:
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = dict(data["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    return vocab


def compare(name: str, ours: Path, theirs: Path) -> dict[str, Any]:
    """What differs between two merged folders: tensors (max |Δ|), layer count, vocabulary."""
    a, b = _tensors(ours), _tensors(theirs)
    result: dict[str, Any] = {"case": name, "tensors": len(b), "max_abs_diff": 0.0, "problems": []}
    error = (theirs / MERGEKIT_ERROR).read_text() if (theirs / MERGEKIT_ERROR).is_file() else None
    ca = json.loads((ours / "config.json").read_text())
    if error is not None and LAYER_TYPES_ERROR in error and b:
        result["note"] = "mergekit wrote the tensors but could not save its config (layer_types); hf_time's loads"
        from transformers import AutoConfig

        cb = AutoConfig.from_pretrained(ours).to_dict()  # raises if hf_time's config were inconsistent too
        cb["num_hidden_layers"] = 1 + max(int(k.split(".")[2]) for k in b if k.startswith("model.layers."))
    elif error is not None:
        result["problems"].append(f"mergekit failed: {error.splitlines()[0][:200]}")
        result["ok"] = False
        return result
    else:
        cb = json.loads((theirs / "config.json").read_text())
    if set(a) != set(b):
        result["problems"].append(f"tensor names differ: only hf_time {sorted(set(a) - set(b))[:3]}, "
                                  f"only mergekit {sorted(set(b) - set(a))[:3]}")
    for key in ("num_hidden_layers", "vocab_size"):
        if ca.get(key) != cb.get(key):
            result["problems"].append(f"config {key}: hf_time {ca.get(key)} vs mergekit {cb.get(key)}")
    va = _vocab(ours) if (ours / "tokenizer.json").is_file() else None
    vb = _vocab(theirs) if (theirs / "tokenizer.json").is_file() else None
    by_token = va is not None and vb is not None and va != vb
    if by_token and set(va) != set(vb):
        result["problems"].append(f"tokenizer vocabularies differ: {sorted(set(va) ^ set(vb))[:5]}")
    worst = 0.0
    for key in sorted(set(a) & set(b)):
        x, y = a[key].float(), b[key].float()
        if by_token and x.shape[0] == len(va) and y.shape[0] == len(vb) and key.split(".")[-2] in ("embed_tokens", "lm_head"):
            common = sorted(set(va) & set(vb))
            x, y = x[[va[t] for t in common]], y[[vb[t] for t in common]]
            result["compared_by_token"] = True
        if x.shape != y.shape:
            result["problems"].append(f"{key}: shape {list(x.shape)} vs mergekit {list(y.shape)}")
            continue
        worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
    result["max_abs_diff"] = worst
    if worst > TOLERANCE:
        result["problems"].append(f"max |Δ| {worst:.3g} > {TOLERANCE}")
    result["ok"] = not result["problems"]
    return result


def run_parity(workdir: Path, cases: list[str] | None = None, archs: tuple[str, ...] = ARCHS) -> list[dict[str, Any]]:
    """Build the models, run both tools on every case and compare. Returns one result per case."""
    models = build_models(workdir / "models", archs)
    configs = case_configs(models, archs)
    if cases:
        configs = {k: v for k, v in configs.items() if any(k.startswith(c) for c in cases)}
    theirs = run_mergekit(configs, workdir)
    ours = run_hf_time(configs, workdir)
    return [compare(name, ours[name], theirs[name]) for name in configs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "runs" / "mergekit_parity")
    p.add_argument("--cases", nargs="*", help="only cases whose name starts with one of these")
    p.add_argument("--setup", action="store_true", help="create .venv-mergekit with benchmarks/setup_mergekit.sh if missing")
    p.add_argument("--json", type=Path, help="write every result as JSON")
    p.add_argument("--mergekit-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mergekit_worker:
        _mergekit_worker(*args.mergekit_worker)
        return 0
    if mergekit_available() and args.setup:
        subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "setup_mergekit.sh")], check=True,
                       env={**os.environ, "VENV": str(MERGEKIT_VENV)})
    reason = mergekit_available()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    results = run_parity(args.workdir, args.cases)
    print(f"{'case':<52} {'tensors':>7} {'max |Δ|':>10}  result")
    for r in results:
        note = " (embeddings by token)" if r.get("compared_by_token") else ""
        note += f" ({r['note']})" if r.get("note") else ""
        print(f"{r['case']:<52} {r['tensors']:>7} {r['max_abs_diff']:>10.2e}  "
              f"{'PASS' if r['ok'] else 'FAIL: ' + '; '.join(r['problems'])}{note}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
