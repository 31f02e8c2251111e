"""``hf-time fisher``, ``hf-time eval`` and ``hf-time soup``: the commands that read task data (argument parsing only)."""

from __future__ import annotations

import argparse

from hf_time.cli_common import add_publish_args, print_published, startup_imports


def _task_args(p: argparse.ArgumentParser, *, many: bool) -> None:
    if many:
        p.add_argument("--task", action="append", required=True, metavar="NAME",
                       help="a built-in task, or a name for --dataset (repeat)")
    else:
        p.add_argument("--task", required=True, metavar="NAME", help="a built-in task, or a name for --dataset")
    p.add_argument("--dataset", help="with one --task: a Hub dataset org/name[@rev], a local folder or a data file")
    p.add_argument("--text-column", default="text", help="the dataset's text column (default text)")
    p.add_argument("--label-column", default="label", help="the dataset's label column (default label)")
    p.add_argument("--label-description", action="append", default=None, metavar="PHRASE",
                   help="one phrase per label, in label order (repeat); default: the label names")
    _lm_task_args(p)


def _lm_task_args(p: argparse.ArgumentParser) -> None:
    """A causal-LM task over --dataset: classification as generation, or SFT (prompt/completion columns)."""
    p.add_argument("--kind", choices=("text", "classification", "sft"), default="text",
                   help="with --dataset: text (head-free, encoders), classification or sft (causal LMs)")
    p.add_argument("--template", help="--kind classification: the prompt, with {text} where the text goes")
    p.add_argument("--verbalizer", action="append", default=None, metavar="COMPLETION",
                   help="--kind classification: one completion per label, in label order (repeat)")
    p.add_argument("--prompt-column", default="prompt", help="--kind sft: the prompt column (default prompt)")
    p.add_argument("--completion-column", default="completion", help="--kind sft: the completion column")


def task_configs(args) -> list:
    """The TaskConfig of each --task (a dataset applies to a single task)."""
    from hf_time.errors import ConfigError
    from hf_time.timeline.config import TaskConfig

    names = args.task if isinstance(args.task, list) else [args.task]
    if args.dataset and len(names) != 1:
        raise ConfigError(f"--dataset describes one task, got {len(names)} --task; evaluate dataset tasks one at a time")
    extra = {}
    kind = getattr(args, "kind", "text")
    if args.dataset and kind == "text":
        extra = {"dataset": args.dataset, "text_column": args.text_column, "label_column": args.label_column,
                 "label_descriptions": tuple(args.label_description) if args.label_description else None}
    elif args.dataset and kind == "classification":
        extra = {"kind": kind, "dataset": args.dataset, "text_column": args.text_column, "label_column": args.label_column,
                 "template": args.template, "verbalizers": tuple(args.verbalizer) if args.verbalizer else None}
    elif args.dataset:
        extra = {"kind": kind, "dataset": args.dataset, "prompt_column": args.prompt_column,
                 "completion_column": args.completion_column}
    elif kind != "text":
        raise ConfigError(f"--kind {kind} describes a task over --dataset; give --dataset (built-in causal-LM tasks are "
                          "the *_prompt ones, e.g. --task movie_sentiment_prompt)")
    configs = [TaskConfig(name=n, **extra) for n in names]
    for c in configs:
        if c.is_lm:
            c.lm_spec()  # a missing template or verbalizer is a one-line error here, before anything is read
    return configs


def add_commands(sub) -> None:
    """Register ``hf-time fisher``, ``hf-time eval`` and ``hf-time soup``."""
    p = sub.add_parser("fisher", help="compute an expert's diagonal Fisher on its task (for `merge --method fisher`)",
                       description="Compute the diagonal Fisher of a model (encoder: head-free objective; causal LM: "
                       "completion likelihood) on N training examples of its task, with y sampled from the model (the "
                       "paper) or the gold label (--empirical), and store it as fisher.safetensors with its provenance.")
    p.add_argument("ref", help="the expert: org/name[@rev] or a folder")
    _task_args(p, many=False)
    p.add_argument("--n-examples", type=int, default=256, help="examples of the train split (default 256)")
    p.add_argument("--empirical", action="store_true", help="use the gold labels (empirical Fisher) instead of sampling")
    p.add_argument("--max-length", type=int, default=32, help="token cap per example (default 32)")
    p.add_argument("--no-word-embeddings", action="store_true", help="skip the word-embedding matrix (stored as zeros): "
                   "for experts trained with frozen word embeddings, hf_time's default")
    p.add_argument("--base", help="the base the expert was trained from (recorded: a merge onto another base is refused)")
    p.add_argument("--out", help="folder to write fisher.safetensors into (default: the expert's folder, when local)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    add_publish_args(p)
    p.set_defaults(func=cmd_fisher)
    add_soup(sub)
    add_eval(sub)


def cmd_fisher(args) -> int:
    with startup_imports():
        from hf_time.fisher import FisherConfig
        from hf_time.fisher_run import run_fisher
        from hf_time.hub import Hub

    config = FisherConfig(n_examples=args.n_examples, empirical=args.empirical, max_length=args.max_length,
                          word_embeddings=not args.no_word_embeddings)
    result = run_fisher(args.ref, task_configs(args)[0], config=config, base=args.base, out=args.out,
                        push_to=args.push_to, hub=Hub(endpoint=args.endpoint), device=args.device,
                        progress=not args.quiet)
    p = result.provenance
    where = f" -> {result.path}" if result.path else ""
    print(f"Fisher of {p['model']} on {p['task']} ({p['n_examples']} examples, {p['estimator']}, "
          f"{result.seconds:.1f} s){where}")
    if result.published is not None:
        print_published(result.published)
    return 0


def add_soup(sub) -> None:
    p = sub.add_parser("soup", help="greedy soup: average the ingredients that do not hurt held-out accuracy",
                       description="Greedy soup (Wortsman et al., 2022): ingredients sorted by held-out accuracy, each "
                       "added to the uniform average only if the soup's held-out accuracy does not drop. The card lists "
                       "every decision with its accuracy.")
    p.add_argument("--expert", action="append", default=[], required=True, metavar="REF", help="an ingredient (repeat, >= 2)")
    _task_args(p, many=True)
    p.add_argument("--split", choices=("validation", "test"), default="validation", help="held-out data: the last "
                   "--n-val training examples (default; ingredients must not have trained on them) or the test split")
    p.add_argument("--n-val", type=int, default=100, help="held-out examples per task (default 100)")
    p.add_argument("--n-test", type=int, default=200, help="test examples per task (--split test)")
    p.add_argument("--max-length", type=int, default=32, help="token cap per text (default 32)")
    p.add_argument("--out", required=True, help="output folder")
    add_publish_args(p)
    p.set_defaults(func=cmd_soup)


def cmd_soup(args) -> int:
    with startup_imports():
        from hf_time.fisher_run import load_cli_task
        from hf_time.hub import Hub
        from hf_time.soup import check_ingredients, run_greedy_soup
        from hf_time.timeline.config import DataConfig

    check_ingredients(args.expert)  # before any task or model is read
    hub = Hub(endpoint=args.endpoint)
    data = DataConfig(n_test=args.n_test)
    tasks = [load_cli_task(t, data, hub).task for t in task_configs(args)]
    merged, soup = run_greedy_soup(args.expert, tasks, out=args.out, hub=hub, n_val=args.n_val, split=args.split,
                                   push_to=args.push_to, max_length=args.max_length, progress=not args.quiet)
    for d in soup.decisions:
        before = "-" if d.soup_before is None else f"{d.soup_before:.4f}"
        print(f"{'kept   ' if d.kept else 'dropped'} {d.ingredient}  alone {d.alone:.4f}  soup {before} -> {d.with_it:.4f}")
    print(f"greedy soup of {len(soup.members)}/{len(soup.decisions)} ingredients (held-out accuracy {soup.accuracy:.4f}) "
          f"-> {merged.out_dir}")
    print_published(merged.published)
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="score a Hub model or adapter on timeline tasks (optionally into its card)",
                       description="Evaluate any model or PEFT adapter (org/name[@rev] or a folder) on built-in or "
                       "`datasets` tasks with hf_time's scorers (head-free for encoders, likelihood for causal LMs), or "
                       "on lm-evaluation-harness tasks (--backend lm_eval); print a table; with --push-to-card add the "
                       "results to the repo card's model-index in one commit.")
    p.add_argument("ref", help="the model: org/name[@rev] or a folder")
    p.add_argument("--task", action="append", default=[], metavar="NAME", help="a built-in task, or a name for --dataset (repeat)")
    p.add_argument("--dataset", help="with one --task: a Hub dataset org/name[@rev], a local folder or a data file")
    p.add_argument("--text-column", default="text", help="the dataset's text column (default text)")
    p.add_argument("--label-column", default="label", help="the dataset's label column (default label)")
    p.add_argument("--label-description", action="append", default=None, metavar="PHRASE",
                   help="one phrase per label, in label order (repeat)")
    _lm_task_args(p)
    p.add_argument("--split", default="test", help="test (default) or train")
    p.add_argument("--n-test", type=int, default=200, help="balanced test examples per task (default 200)")
    p.add_argument("--max-length", type=int, default=32, help="token cap per text (default 32)")
    p.add_argument("--backend", choices=("hf_time", "lm_eval"), default="hf_time", help="scorer (default hf_time)")
    p.add_argument("--lm-eval-task", action="append", default=[], metavar="NAME", help="--backend lm_eval: a task (repeat)")
    p.add_argument("--lm-eval-include", metavar="DIR", help="--backend lm_eval: a folder of task YAMLs (offline tasks)")
    p.add_argument("--push-to-card", action="store_true", help="add the results to the repo card's model-index (one commit)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i]")
    p.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    with startup_imports():
        from hf_time.eval_run import run_eval
        from hf_time.hub import Hub
        from hf_time.timeline.config import DataConfig

    tasks = task_configs(args) if args.task else []
    report = run_eval(args.ref, tasks, split=args.split, data=DataConfig(n_test=args.n_test), hub=Hub(endpoint=args.endpoint),
                      push_to_card=args.push_to_card, backend=args.backend, lm_eval_tasks=args.lm_eval_task,
                      lm_eval_include=args.lm_eval_include, max_length=args.max_length, device=args.device)
    print(f"{report.model}")
    print(report.table())
    print_published(report.published)
    return 0
