"""How long training and evaluation will take on this machine, measured before the long work starts.

A fixed figure ("about a minute") is wrong by 15x on a machine other people are using (measured: the
timeline demo took 90 s idle and 4-22 minutes busy, on the same 2 cores). So a recipe measures instead:
a few training steps of the real model on the real task, and one evaluation pass, then multiplies.
The figure comes with the machine's load at the time, because the load decides it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hf_time import progress
from hf_time.training_config import TrainingConfig


@dataclass(frozen=True)
class Speed:
    """Measured on this machine: seconds per training step, seconds per evaluated text, load average."""

    s_per_step: float
    tokens_per_s: float
    s_per_text: float
    load: float | None  # 1-minute load average when measured (None where the OS has none)
    cpus: int

    def seconds(self, *, training_steps: int, texts: int) -> float:
        """Expected seconds for ``training_steps`` optimizer steps and ``texts`` evaluated texts."""
        return training_steps * self.s_per_step + texts * self.s_per_text


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def measure_speed(model_dir: str | os.PathLike, task, training: TrainingConfig, *, steps: int = 3,
                  device: str | None = None, name: str | None = None) -> Speed:
    """Time ``steps`` real training steps and one evaluation of ``task`` with the model in ``model_dir``.

    The first steps include warm-up (allocation, first kernels), so the figure errs long.

    Args:
        model_dir: the model to train (a local folder).
        task: a text or causal-LM task; its train split is trained on, its test split scored.
        training: the run's training settings; only the step count is replaced.
        steps: training steps to time.
        device: as :func:`hf_time.training.finetune`.
        name: the model in words, for the evaluation bar (default: its repo id or folder name).

    Returns:
        A :class:`Speed`.
    """
    from hf_time.evaluation import evaluate_tasks, folder_name
    from hf_time.trainer_common import TrainingStats
    from hf_time.training import finetune

    with tempfile.TemporaryDirectory(prefix="hf_time_speed_") as scratch, progress.unit("measuring this machine's speed"), \
            progress.subject(name or folder_name(model_dir)):
        out = finetune(model_dir, task, dataclasses.replace(training, steps=steps), Path(scratch) / "expert",
                       device=device)
        stats = TrainingStats.load(out)
        start = time.perf_counter()
        evaluate_tasks(model_dir, [task], device=device)
        eval_s = time.perf_counter() - start
    return Speed(s_per_step=stats.seconds / steps, tokens_per_s=stats.tokens_per_s,
                 s_per_text=eval_s / max(1, len(task.test)), load=load_average(), cpus=os.cpu_count() or 1)


def format_estimate(speed: Speed, *, training_steps: int, texts: int, what: str) -> str:
    """One line: the estimate, what it covers and the conditions it was measured under."""
    total = speed.seconds(training_steps=training_steps, texts=texts)
    load = f"load {speed.load:.1f} on {speed.cpus} CPUs" if speed.load is not None else f"{speed.cpus} CPUs"
    return (f"estimate: about {_duration(total)} for {what} ({training_steps} training steps at "
            f"{speed.s_per_step:.2f} s/step, {speed.tokens_per_s:.0f} tokens/s, and {texts} texts scored at "
            f"{1000 * speed.s_per_text:.0f} ms each; measured just now, {load}; more if the load rises)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def estimate_timeline(config, base_dir: str | os.PathLike, adaptation, held_out, done: int) -> str | None:
    """A measured estimate of what is left of a timeline, or None when every step is published.

    Trains a few steps of the base on the first task still to do and scores its test split (the
    :func:`measure_speed` figures), then multiplies by the training steps and the evaluations left
    (the base's own evaluation counts on a fresh timeline). Steps whose expert another timeline
    already trained (the shared cache) take less, so the figure errs long. Made from what the
    timeline runner has loaded (its ``before_steps`` hook), so nothing is resolved or loaded twice.

    Args:
        config: a :class:`hf_time.timeline.config.TimelineConfig`.
        base_dir: the downloaded base.
        adaptation, held_out: the loaded tasks (:class:`hf_time.timeline.data.LoadedTask`).
        done: how many steps are already published.
    """
    todo = len(config.tasks) - done
    if todo <= 0:
        return None
    speed = measure_speed(base_dir, adaptation[done].task, config.training, device=config.device,
                          name=f"the base {config.base_ref}")
    evaluations = todo + (done == 0)
    texts = evaluations * sum(len(t.task.test) for t in [*adaptation, *held_out])
    return format_estimate(speed, training_steps=todo * config.training.steps, texts=texts,
                           what=f"{todo} experts and {evaluations} evaluations")


def print_estimate(config):
    """A ``before_steps`` hook for :func:`hf_time.timeline.runner.run_timeline` that prints
    :func:`estimate_timeline`'s line for ``config`` (nothing when every step is published)."""

    def hook(base_dir, adaptation, held_out, done: int) -> None:
        line = estimate_timeline(config, base_dir, adaptation, held_out, done)
        if line:
            print(line, flush=True)

    return hook
