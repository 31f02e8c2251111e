"""What must hold between a timeline's base, its tasks and its training settings, checked before any
training: the same problems the trainers would find at step t, found at step 0 and all at once.

* causal-LM tasks (``classification``, ``sft``, the built-in ``*_prompt`` tasks) need a causal-LM base;
  text tasks train encoders head-free, so they need an encoder;
* chat tasks (a ``messages`` column) need a tokenizer with a chat template;
* LoRA target modules must be modules of the base (from its safetensors headers: no weights loaded);
* under torchrun/accelerate launch, a batch splits evenly over the processes and accumulation steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from hf_time import distributed
from hf_time.errors import IncompatibleTaskError
from hf_time.io import TensorInfo
from hf_time.timeline.config import TimelineConfig
from hf_time.timeline.data import LoadedTask


def lora_targets_missing(targets: Sequence[str], infos: Mapping[str, TensorInfo]) -> tuple[list[str], list[str]]:
    """(targets no 2-D weight of the base is named after, the base's 2-D module leaf names), as PEFT matches a list."""
    modules = {name.removesuffix(".weight") for name, info in infos.items()
               if name.endswith(".weight") and len(info.shape) == 2}
    if tuple(targets) == ("all-linear",):
        return [], []
    missing = [t for t in targets if not any(m == t or m.endswith("." + t) for m in modules)]
    leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
    return missing, leaves


def check(config: TimelineConfig, base_dir: Path, infos: Mapping[str, TensorInfo], tasks: Sequence[LoadedTask]) -> None:
    """Raise one error listing every mismatch between the base, the tasks and the training settings.

    Raises:
        IncompatibleTaskError: a task the base cannot learn or be scored on (each named), a chat task
            without a chat template, LoRA targets the base lacks.
    """
    from transformers import AutoConfig

    from hf_time.evaluation import is_causal_config
    from hf_time.lm_task_types import is_lm_task

    problems: list[str] = []
    hf_config = AutoConfig.from_pretrained(str(base_dir))
    causal = is_causal_config(hf_config)
    arch = (getattr(hf_config, "architectures", None) or [type(hf_config).__name__])[0]
    trained = {t.name for t in config.tasks}
    lm = [t.name for t in tasks if is_lm_task(t.task)]
    text = [t.name for t in tasks if not is_lm_task(t.task) and t.name in trained]
    if lm and not causal:
        problems.append(f"tasks {lm} are generation tasks but the base is {arch}, an encoder; use a causal-LM base "
                        "(e.g. SmolLM2) or text tasks")
    if text and causal:
        problems.append(f"tasks {text} are text tasks, trained head-free on encoders, but the base is {arch}, a causal "
                        "LM; give them as kind classification (or use the built-in *_prompt versions)")
    chat = [t.name for t in tasks if getattr(t.task, "is_chat", False)]
    if chat and causal:
        from transformers import AutoTokenizer

        if not getattr(AutoTokenizer.from_pretrained(str(base_dir)), "chat_template", None):
            problems.append(f"tasks {chat} hold chat messages but the base's tokenizer has no chat template; use "
                            "prompt/completion columns, or a base whose tokenizer_config.json has a chat_template")
    lora = config.training.lora
    if lora is not None:
        missing, leaves = lora_targets_missing(lora.target_modules, infos)
        if missing:
            problems.append(f"training.lora.target_modules: {missing} are not modules of the base ({arch}); its "
                            f"linear layers are {leaves}")
    processes = distributed.world().size
    batch, accumulation = config.training.batch_size, config.training.gradient_accumulation_steps
    if batch % (accumulation * processes):
        problems.append(f"training.batch_size={batch} is not a multiple of gradient_accumulation_steps × processes = "
                        f"{accumulation} × {processes}; set it to a multiple of {accumulation * processes} so every "
                        "process gets equal micro-batches")
    if problems:
        raise IncompatibleTaskError.from_problems("the timeline cannot train on this base", problems)
