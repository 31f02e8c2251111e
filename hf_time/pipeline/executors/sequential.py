"""The sequential executor: one new expert folded into a previous snapshot, in constant memory.

A fold reads θ_0 (base), θ_t (the expert: a full model or a LoRA adapter as base + ΔW) and, from
t = 2 on, the running merge θ^(t−1) (``previous``), whose ``hf_time.json`` carries the method's
*state* (``method``, ``t``, ``params`` and the method's own keys, e.g. OPCM's λ and norm list). It
writes θ^(t) as a full transformers folder and the state the next fold needs. A chain of T folds
is therefore T independent commands, each pinned to its inputs and publishable on its own.

The contract of a :class:`~hf_time.merges.registry.SequentialMethod`:
``fn(previous, base, expert, config, ctx, state) -> Tensor`` for one tensor name, pure: ``previous``
is θ^(t−1) (None at t = 1: the method applies its own θ^(0) rule), ``state`` the incoming state with
``t`` set to this fold's step. It returns θ^(t) — or, in a two-pass fold (``two_pass(config, t)``),
the update S of θ^(t) = θ_0 + S/λ_t: pass 1 writes each S to a float32 scratch file while ‖S‖ is
accumulated, ``next_state`` turns the norms into λ_t, pass 2 writes θ_0 + S/λ_t.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from hf_time import __version__, engine
from hf_time.errors import ConfigError
from hf_time.hub import Hub
from hf_time.io import Checkpoint
from hf_time.merges import SequentialMethod
from hf_time.pipeline.artifact import Output, carry_base_files
from hf_time.pipeline.executors.dense import open_base, open_sources
from hf_time.pipeline.plan import Plan
from hf_time.pipeline.resolve import Inputs

_SCRATCH = ".pass1"  # inside the atomic temp dir, so a failed fold cleans it up with the rest
_BASE_KEYS = ("method", "t", "params")


@dataclass(frozen=True)
class FoldStats:
    """Whole-model statistics of one fold, given to a method's ``next_state``.

    Attributes:
        task_vector_norm: ‖θ_t − θ_0‖ over all floating tensors (one flattened vector).
        update_norm: ‖S‖ of the pass-1 outputs (two-pass folds only, else None).
    """

    task_vector_norm: float
    update_norm: float | None


def bind(plan: Plan, inputs: Inputs, state: Mapping[str, Any] | None = None) -> Plan:
    """The plan with the fold's incoming state: ``state`` if given, else the previous snapshot's.

    Every problem is reported at once, each naming its key.

    Raises:
        ConfigError: a state without a previous snapshot, a previous snapshot without a state, or a
            state from another method, with other parameters, or lacking a key.
    """
    method = plan.method
    assert isinstance(method, SequentialMethod)
    resolved = plan.parameters
    previous = inputs.previous
    if previous is None:
        if state is not None:
            raise ConfigError("a state was given without `previous`; pass the snapshot the state belongs to")
        return dataclasses.replace(plan, state={"method": method.name, "t": 1, "params": resolved})
    if state is None:
        recorded = previous.lineage.state if previous.lineage is not None else None
        if recorded is None:
            raise ConfigError(f"previous {previous.name} was given without its state: it has no hf_time.json with a "
                              f"{method.name} state (is it the output of a fold?); pass the snapshot a fold wrote, or "
                              "its `state`")
        state = recorded
    if not isinstance(state, Mapping):
        raise ConfigError(f"state must be a mapping (the `state` of a fold), got {type(state).__name__}")
    problems = [f"state is missing key {key!r}" for key in (*_BASE_KEYS, *method.state_keys) if key not in state]
    if "method" in state and state["method"] != method.name:
        problems.append(f"state key 'method' is {state['method']!r} but this fold runs {method.name!r}; "
                        "a state only continues the method that produced it")
    t_prev = state.get("t")
    if "t" in state and not (isinstance(t_prev, int) and not isinstance(t_prev, bool) and t_prev >= 1):
        problems.append(f"state key 't' must be the number of experts folded so far (>= 1), got {t_prev!r}")
    old = state.get("params")
    if "params" in state:
        if not isinstance(old, Mapping):
            problems.append(f"state key 'params' must be a mapping, got {old!r}")
        else:
            problems += [f"state key 'params': {k!r} was {old.get(k)!r} in earlier folds but is {v!r} now; "
                         "keep the parameters of a sequential merge fixed" for k, v in resolved.items() if old.get(k) != v]
    if problems:
        raise ConfigError.from_problems(f"invalid state for {method.name!r}", problems)
    problems = list(method.check_state(plan.config, dict(state))) if method.check_state else []
    if problems:
        raise ConfigError.from_problems(f"invalid state for {method.name!r}", problems)
    return dataclasses.replace(plan, state={**state, "t": t_prev + 1})


class _Norms:
    """Sums of squares accumulated tensor by tensor, in float64 so the order of tensors barely matters."""

    def __init__(self) -> None:
        self.tau_sq = 0.0
        self.update_sq = 0.0

    def stats(self, two_pass: bool) -> FoldStats:
        return FoldStats(math.sqrt(self.tau_sq), math.sqrt(self.update_sq) if two_pass else None)


def execute(plan: Plan, inputs: Inputs, hub: Hub, tmp: Path, *, progress: bool = True) -> Output:
    """Run one fold into ``tmp``; returns what was written, with the state after this fold."""
    method = plan.method
    assert isinstance(method, SequentialMethod) and plan.state is not None
    state, config = dict(plan.state), plan.config
    t = state["t"]
    two_pass = bool(method.two_pass and method.two_pass(config, t))
    track = method.next_state is not None  # norms cost a subtraction per tensor: only for methods that use them
    norms = _Norms()
    base_dir, base_ck = open_base(hub, inputs.base, plan)
    models = ([inputs.previous] if inputs.previous is not None else []) + list(inputs.experts)
    sources = open_sources(hub, inputs, plan, base_ck, models)
    has_previous = inputs.previous is not None

    def op(base, tensors, ctx):
        previous, expert = tensors if has_previous else (None, tensors[0])
        out = method.fn(previous, base, expert, config, ctx, state)
        if track:
            norms.tau_sq += float(torch.linalg.vector_norm(expert - base, dtype=torch.float64)) ** 2
            if two_pass:
                norms.update_sq += float(torch.linalg.vector_norm(out, dtype=torch.float64)) ** 2
        return out

    label = f"folding expert {t} ({method.name})"
    names = ("the base", *(f"previous {m.name}" if m is inputs.previous else f"expert {m.name}" for m in models))
    job = engine.StreamJob(op=op, weights=(1.0,) * len(sources), device=plan.device, label=label, names=names,
                           allow_nonfinite=plan.allow_nonfinite)
    writer = engine.make_writer(tmp, base_ck.infos, plan.torch_dtype, plan.max_shard_bytes, {"hf_time": __version__})
    if not two_pass:
        engine.run(base_ck, sources, job, writer, progress=progress)
        extra = method.next_state(config, state, norms.stats(False))[0] if track else {}
    else:
        extra = _two_passes(method, config, state, base_ck, sources, job, writer, tmp, norms, progress)
    files = writer.close()
    carry_base_files(base_dir, tmp, plan.dtype)
    new_state = {"method": method.name, "t": t, "params": plan.parameters, **extra}
    return Output("model", tuple(files), state=new_state)


def _two_passes(method: SequentialMethod, config: Any, state: dict, base_ck: Checkpoint, sources: list,
                job: engine.StreamJob, writer, tmp: Path, norms: _Norms, progress: bool) -> dict[str, Any]:
    """Pass 1: S per tensor into a float32 scratch file (‖S‖² accumulates); pass 2: θ_0 + S/λ_t."""
    scratch = tmp / _SCRATCH
    scratch.mkdir()
    s_writer = engine.make_writer(scratch, base_ck.infos, job.compute_dtype, 2**62, hashed=False)  # read once, deleted
    engine.run(base_ck, sources, job, s_writer, progress=progress)
    s_writer.close()
    extra, divisor = method.next_state(config, state, norms.stats(True))
    if divisor is None or not (math.isfinite(divisor) and divisor > 0):
        raise ValueError(f"{method.name}: a two-pass fold needs a positive finite divisor, got {divisor!r}")
    with Checkpoint(scratch) as s_ck:
        rescale = dataclasses.replace(job, op=lambda b, ups, _ctx: ups[0].div(divisor).add_(b), weights=(1.0,),
                                      label=f"{job.label}: rescaling")
        engine.run(base_ck, [s_ck], rescale, writer, progress=progress)
    shutil.rmtree(scratch)
    return extra
