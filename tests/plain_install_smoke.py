"""The README's commands from a plain ``pip install hf_time`` (no extras), end to end on tiny models.

Run by ``make test`` (hence by CI) with the interpreter of a fresh venv holding only hf_time and its
declared dependencies, in isolated mode so the checkout's own ``hf_time/`` cannot stand in for the
installed package::

    .venv-plain/bin/python -I tests/plain_install_smoke.py

It starts the embedded Hub with ``hf-time hub serve``, publishes a tiny BERT and two tiny experts,
and runs ``hf-time ls``, ``merge`` (dense, published and tagged), a two-step sequential chain with
``--previous``, a reversible low-rank merge and ``revert``, ``align`` and ``merge --align`` of a model
of another init, a two-step ``timeline run`` that really
trains, ``timeline status`` and ``timeline report``. Exits non-zero on the first failure. It must not
import pytest or anything else that only the ``dev`` extra installs.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ["apple", "pear", "zebra", "lion", "red", "blue", "fast", "slow", "a", "the", "text", "about"]


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"plain-install smoke FAILED: {what}")
    print(f"ok  {what}", flush=True)


def cli(*args: str, env: dict, cwd: Path) -> str:
    exe = Path(sys.executable).with_name("hf-time")
    proc = subprocess.run([str(exe), *args], check=False, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"plain-install smoke FAILED: hf-time {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def tiny_bert(path: Path, seed: int, shift: float = 0.0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                 vocab_size=len(WORDS) + 5, max_position_embeddings=32))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift * torch.randn(p.shape))
    model.save_pretrained(path)
    return path


def tiny_lora(path: Path, base: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertModel

    model = get_peft_model(BertModel.from_pretrained(base), LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(path))
    return path


def toy_task(path: Path, a: tuple[str, str], b: tuple[str, str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(10):
            w.writerow([f"{a[i % 2]} {WORDS[8 + i % 4]} text", 0])
            w.writerow([f"{b[i % 2]} {WORDS[8 + i % 4]} text", 1])
    return path


def main() -> int:
    import hf_time

    check("site-packages" in hf_time.__file__, f"hf_time imported from the installed package ({hf_time.__file__})")
    for extra in ("pytest", "matplotlib", "hypothesis"):
        try:
            __import__(extra)
        except ImportError:
            continue
        raise SystemExit(f"plain-install smoke FAILED: {extra} is installed; this venv must hold no extras")
    work = Path(tempfile.mkdtemp(prefix="hf_time_plain_"))
    token = "plain-smoke-token"
    env = {**os.environ, "HF_HOME": str(work / "hf_home"), "HF_HUB_DISABLE_XET": "1", "HF_TIME_HUB_TOKEN": token,
           "HF_TOKEN": token, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    exe = Path(sys.executable).with_name("hf-time")
    server = subprocess.Popen([str(exe), "hub", "serve", "--root", str(work / "hub"), "--port", "0"], env=env, cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip().split(" at ")[-1]
        check(url.startswith("http://127.0.0.1:"), f"hf-time hub serve listens ({url})")
        env["HF_ENDPOINT"] = url
        os.environ.update(env)  # this process's client too (huggingface_hub is not imported yet)
        from hf_time.hub import Hub

        hub = Hub(endpoint=url)
        base = tiny_bert(work / "base", 0)
        hub.publish(base, "smoke/base", commit_message="base")
        for i in (1, 2):
            hub.publish(tiny_bert(work / f"e{i}", 0, shift=0.01 * i), f"smoke/e{i}", commit_message=f"expert {i}")
        check("ties" in cli("ls", env=env, cwd=work), "hf-time ls lists the methods")
        cli("merge", "--base", "smoke/base", "--expert", "smoke/e1", "--expert", "smoke/e2", "--method", "ties",
                "--param", "density=0.5", "--out", "m", "--push-to", "smoke/ties", "--tag", "v1", "--quiet", env=env, cwd=work)
        check((work / "m" / "model.safetensors").is_file() and "v1" in hub.list_tags("smoke/ties"), "dense merge published, tagged")
        cli("merge", "--base", "smoke/base", "--expert", "smoke/e1", "--method", "opcm", "--out", "f1",
                "--push-to", "smoke/opcm", "--tag", "step-1", "--quiet", env=env, cwd=work)
        out = cli("merge", "--base", "smoke/base", "--expert", "smoke/e2", "--method", "opcm", "--previous",
                      "smoke/opcm@step-1", "--out", "f2", "--push-to", "smoke/opcm", "--tag", "step-2", "--quiet",
                      env=env, cwd=work)
        check("folded expert 2" in out, "sequential fold from the previous snapshot on the Hub")
        for i in (1, 2):
            hub.publish(tiny_lora(work / f"a{i}", base, i), f"smoke/adapter-{i}", commit_message=f"adapter {i}")
        cli("merge", "--base", "smoke/base", "--expert", "smoke/adapter-1", "--expert", "smoke/adapter-2", "--method",
                "rmm", "--out", "rmm", "--quiet", env=env, cwd=work)
        cli("revert", "rmm", "--expert", "1", "--out", "reverted", "--quiet", env=env, cwd=work)
        check((work / "reverted" / "adapter_model.safetensors").is_file(), "reversible LoRA merge (rmm) and revert")
        hub.publish(tiny_bert(work / "other-init", 7), "smoke/other-init", commit_message="another init")
        out = cli("align", "--reference", "smoke/base", "--expert", "smoke/other-init", "--out", "aligned",
                  "--push-to", "smoke/aligned", "--quiet", env=env, cwd=work)
        check("aligned ->" in out and (work / "aligned" / "alignment.safetensors").is_file(),
              "hf-time align (weight matching, scipy from the declared dependencies) published")
        cli("merge", "--base", "smoke/base", "--expert", "smoke/base", "--expert", "smoke/other-init", "--method", "linear",
            "--align", "weight", "--out", "aligned-avg", "--quiet", env=env, cwd=work)
        check((work / "aligned-avg" / "alignment" / "expert-1.safetensors").is_file(), "merge --align weight")
        timeline = work / "timeline.yaml"
        tasks = {n: toy_task(work / f"{n}.csv", a, b) for n, a, b in
                 (("fruit", ("apple", "pear"), ("zebra", "lion")), ("colour", ("red", "blue"), ("fast", "slow")))}
        timeline.write_text(
            "name: smoke-timeline\nnamespace: smoke\nbase: smoke/base\n"
            f"tasks:\n  - {{name: fruit, dataset: {tasks['fruit']}, label_descriptions: [about fruit, about animal]}}\n"
            f"held_out:\n  - {{name: colour, dataset: {tasks['colour']}, label_descriptions: [a colour, a speed]}}\n"
            "data: {n_test: 6}\nstrategy: {init: ema, deploy: ema, method: linear}\n"
            "training: {steps: 2, batch_size: 4, max_length: 8, learning_rate: 0.001}\n")
        cli("timeline", "run", str(timeline), "--hub", url, "--work", "tl", env=env, cwd=work)
        status = cli("timeline", "status", "smoke/smoke-timeline", "--hub", url, env=env, cwd=work)
        check("step" in status.lower(), "timeline run + status (real training, from a plain install)")
        files = hub.list_files(hub.resolve("smoke/smoke-timeline@step-1"))
        card = (Path(hub.download(hub.resolve("smoke/smoke-timeline@step-1"), ["README.md"])) / "README.md").read_text()
        check("plot.png" not in files and "hf_time[plot]" in card, "no matplotlib: no plot, and the card says how to get it")
        cli("timeline", "report", "smoke/smoke-timeline@step-1", "--hub", url, env=env, cwd=work)
        check(True, "timeline report")
        # Data-aware merging and evaluation (README "Data-aware merging"), on the toy task's data.
        data = ["--task", "fruit", "--dataset", str(tasks["fruit"]), "--label-description", "about fruit",
                "--label-description", "about animal"]
        for i in (1, 2):
            cli("fisher", f"smoke/e{i}", *data, "--n-examples", "8", "--max-length", "8", "--push-to", f"smoke/e{i}",
                "--quiet", env=env, cwd=work)
        cli("merge", "--base", "smoke/base", "--expert", "smoke/e1", "--expert", "smoke/e2", "--method", "fisher",
            "--out", "fisher-merge", "--quiet", env=env, cwd=work)
        check("fisher.safetensors" in hub.list_files(hub.resolve("smoke/e1")) and
              (work / "fisher-merge" / "model.safetensors").is_file(), "hf-time fisher pushed, merge --method fisher")
        cli("soup", "--expert", "smoke/e1", "--expert", "smoke/e2", *data, "--n-val", "6", "--n-test", "6", "--max-length", "8",
            "--out", "soup", "--quiet", env=env, cwd=work)
        check((work / "soup" / "model.safetensors").is_file(), "hf-time soup")
        table = cli("eval", "smoke/ties", *data, "--n-test", "6", "--max-length", "8", "--push-to-card", env=env, cwd=work)
        card = (Path(hub.download(hub.resolve("smoke/ties"), ["README.md"])) / "README.md").read_text()
        check("fruit" in table and "model-index" in card and "fruit" in card, "hf-time eval --push-to-card")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
