"""The plan stage: a merge request turned into a typed, validated :class:`Plan`, before any network call.

Everything that can be judged from the request alone is judged here, and every problem is reported
at once: the method and its parameters, per-expert parameters, the expert count, the weights, and
each *option* against what the method can honour — LiNeS on a method that does not read θ_0,
``--weight`` on a method that ignores weights, ``--previous`` on a method that does not fold, a
shard size for an adapter output, an unknown dtype, a device this machine lacks. An option that
would not be applied is an error, never silently dropped: the lineage records what ran, and what
ran is exactly the plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from hf_time.align.config import MatchingConfig
from hf_time.config import MergeConfig
from hf_time.errors import ConfigError
from hf_time.io import DTYPES, parse_dtype, parse_size
from hf_time.merges import DenseMethod, LowRankMethod, MethodSpec, SequentialMethod, get
from hf_time.pipeline.tensor_params import TensorParams, plan_tensor_params
from hf_time.pipeline.tokenizer import TokenizerPlan, plan_tokenizer

DEFAULT_SHARD_SIZE = "5GB"
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)\Z")


@dataclass(frozen=True)
class RunOptions:
    """How a merge runs and where its result goes (not part of what is merged).

    Attributes:
        out: output folder (written atomically).
        overwrite: replace an existing ``out`` once the new one is complete.
        allow_pickle: accept ``pytorch_model.bin`` inputs (loaded with ``weights_only=True``).
        allow_nonfinite: write a result holding NaN/Inf instead of refusing it.
        max_shard_size: output shard size of a full model ("5GB"); None is the default.
        push_to, tag, private: publish the result as one commit.
        title: the card's title.
        progress: show progress bars.
    """

    out: str | None = None
    overwrite: bool = False
    allow_pickle: bool = False
    allow_nonfinite: bool = False
    max_shard_size: int | str | None = None
    push_to: str | None = None
    tag: str | None = None
    private: bool | None = None
    title: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class Plan:
    """A validated merge: what will run, exactly as the lineage will record it.

    Attributes:
        method: the registry spec.
        config: the method's config (every parameter resolved).
        weights: one weight per expert (all 1.0 for methods that ignore weights).
        expert_params: per-expert overrides by field name.
        dtype: output dtype name of floating tensors (None keeps the inputs').
        device: where the method computes.
        lines: LiNeS (alpha, beta), only for methods reading θ_0.
        max_shard_bytes: output shard size of a full model.
        allow_pickle: accept pickle inputs.
        allow_nonfinite: write NaN/Inf results instead of refusing them.
        state: a fold's incoming state (bound after resolve, from the previous snapshot's lineage).
        tensor_params: per-tensor parameters (gradients, filters) and the slices that assemble the
            output (None: every parameter is one value and the output has the base's layers).
        tokenizer: the output vocabulary the embeddings are aligned to (None: the base's, as is).
        align: how experts of other inits are aligned to the base before merging (None: they are not).
    """

    method: MethodSpec
    config: Any
    weights: tuple[float, ...]
    expert_params: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    dtype: str | None = None
    device: str = "cpu"
    lines: tuple[float, float] | None = None
    max_shard_bytes: int = 5 * 10**9
    allow_pickle: bool = False
    allow_nonfinite: bool = False
    state: Mapping[str, Any] | None = None
    tensor_params: TensorParams | None = None
    tokenizer: TokenizerPlan | None = None
    align: MatchingConfig | None = None

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return parse_dtype(self.dtype)

    @property
    def assembles_output(self) -> bool:
        """The output is assembled (slices) or realigned (tokenizer_source), not tensor-for-tensor the base."""
        return bool((self.tensor_params is not None and self.tensor_params.layered)
                    or (self.tokenizer is not None and self.tokenizer.aligns_vocab))

    @property
    def parameters(self) -> dict[str, Any]:
        """Every parameter of the method by public name, as it runs (a schedule in its YAML form)."""
        resolved = self.method.resolved_parameters(self.config)
        if self.tensor_params is not None:
            resolved.update(self.tensor_params.recorded.get("parameters") or {})
            if self.tensor_params.recorded.get("weight") is not None:  # with slices: the default of every source
                resolved["weight"] = self.tensor_params.recorded["weight"]
        return resolved

    def recorded_weights(self) -> tuple[Any, ...]:
        """Each expert's weight as the lineage records it: a number, or its schedule in YAML form."""
        if self.tensor_params is None or self.tensor_params.layered:
            return self.weights
        return tuple(self.tensor_params.expert_record(i).get("weight", w) for i, w in enumerate(self.weights))


def check_device(device: str, problems: list[str], *, key: str = "device") -> None:
    """A device name this machine can use (``cpu``, ``cuda[:i]`` with CUDA present, ``mps``)."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        problems.append(f"{key}: {device!r} is not a device; use cpu or cuda[:i]")
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            problems.append(f"{key}: {device!r} asked for, but this machine has no CUDA device; use cpu")
        elif ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            problems.append(f"{key}: {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    elif device == "mps" and not torch.backends.mps.is_available():
        problems.append(f"{key}: 'mps' asked for, but this machine has no MPS device; use cpu")


def _count_problem(method: MethodSpec, n: int) -> str | None:
    lo, hi = method.min_experts, method.max_experts
    if lo <= n and (hi is None or n <= hi):
        return None
    want = f"exactly {lo}" if lo == hi else f"at least {lo}" + (f" and at most {hi}" if hi else "")
    return f"method {method.name!r} takes {want} expert(s), got {n}"


def make_plan(config: MergeConfig, options: RunOptions = RunOptions()) -> Plan:
    """Validate a merge request into a :class:`Plan` (no network, nothing read).

    Raises:
        UnknownMethodError: the method is not registered (with the valid names).
        ConfigError: every other problem, all at once, each naming the option or parameter.
    """
    method = get(config.method)
    problems: list[str] = []
    split = plan_tensor_params(method, config.params, config.base, config.experts, config.slices, problems)
    n = split.slots  # with slices: the models merged per layer, not the distinct models
    if n == 0:
        problems.append("no experts given; pass at least one --expert")
    elif (count := _count_problem(method, n)) is not None:
        problems.append(count)
    method_config = method.collect_config(split.params, problems, n_experts=n)
    expert_params = method.collect_expert_params(split.expert_params, problems)
    weights = tuple(split.weights)
    tokenizer = plan_tokenizer(method, config, problems)
    if any(not (isinstance(w, (int, float)) and math.isfinite(w)) for w in weights):
        problems.append(f"expert weights must be finite numbers, got {list(weights)}")
    elif not method.uses_weights and any(w != 1 for w in weights):
        problems.append(f"{method.name} does not weight its experts, so --weight / `weight` would have no effect "
                        f"(got {list(weights)}); remove them")
    if config.lines is not None:
        if not (isinstance(method, DenseMethod) and method.supports_lines):
            why = ("it does not read the base θ_0, so there is no task vector to scale"
                   if isinstance(method, DenseMethod) else f"it is a {method.kind} method")
            problems.append(f"LiNeS (--lines / `lines`) scales the merged task vector θ − θ_0 and does not apply to "
                            f"{method.name}: {why}; remove it or use a task-vector method such as task_arithmetic")
        elif not all(isinstance(x, (int, float)) and math.isfinite(x) for x in config.lines):
            problems.append(f"lines: alpha and beta must be finite numbers, got {list(config.lines)}")
    if config.previous is not None and not isinstance(method, SequentialMethod):
        problems.append(f"--previous / `previous` continues a sequential merge; {method.name} is a {method.kind} method "
                        "(see `hf-time ls --kind sequential`)")
    if config.dtype is not None and (not isinstance(config.dtype, str) or _dtype_problem(config.dtype)):
        problems.append(f"dtype: {config.dtype!r} is not a dtype; use one of {', '.join(DTYPES)}")
    if config.align is not None:
        problems += _align_problems(config, method)
    check_device(config.device, problems)
    shard_bytes = parse_size(DEFAULT_SHARD_SIZE)
    if options.max_shard_size is not None:
        if isinstance(method, LowRankMethod):
            problems.append(f"--max-shard-size applies to full-model outputs; {method.name} writes a "
                            f"{method.output} snapshot of one file, remove it")
        else:
            shard_bytes = shard_size(options.max_shard_size, problems)
    if problems:
        raise ConfigError.from_problems(f"invalid {method.name} merge", problems)
    return Plan(method=method, config=method_config, weights=tuple(float(w) for w in weights),
                expert_params=tuple(expert_params), dtype=config.dtype, device=config.device,
                lines=None if config.lines is None else (float(config.lines[0]), float(config.lines[1])),
                max_shard_bytes=shard_bytes, allow_pickle=options.allow_pickle, allow_nonfinite=options.allow_nonfinite,
                tensor_params=split.tensor_params, tokenizer=tokenizer, align=config.align)


def _align_problems(config: MergeConfig, method: MethodSpec) -> list[str]:
    """``--align`` permutes whole experts into the base's basis before a dense merge of the usual layout."""
    problems = list(config.align.problems())
    if not isinstance(method, DenseMethod):
        problems.append(f"--align / `align` aligns experts before a dense merge; {method.name} is a {method.kind} method")
    if config.slices or config.tokenizer_source:
        problems.append("--align / `align` with slices or tokenizer_source is not supported: align the experts with "
                        "`hf-time align` first, then merge the aligned folders")
    return problems


def shard_size(value: int | str, problems: list[str]) -> int:
    """``value`` ("5GB", "500MB", bytes) in bytes; a problem is recorded when it is not a positive size."""
    try:
        size = parse_size(value)
        if size > 0:
            return size
    except (TypeError, ValueError, AttributeError):
        pass
    problems.append(f"--max-shard-size: {value!r} is not a size; write e.g. 5GB, 500MB or a number of bytes > 0")
    return parse_size(DEFAULT_SHARD_SIZE)


def _dtype_problem(name: str) -> bool:
    try:
        parse_dtype(name)
    except ConfigError:
        return True
    return False

