"""The dense executor: n experts (full models or LoRA adapters as base + ΔW) merged tensor by tensor.

Downloads what the merge needs at the pinned commits (weights and config/tokenizer files, never a
whole repo), opens one weight source per expert, computes global magnitude thresholds when the
method asks for them, and streams every tensor through the method — and LiNeS, when the plan has
it — into the sharded writer (:mod:`hf_time.engine`).
"""

from __future__ import annotations

from pathlib import Path

from hf_time import __version__, engine
from hf_time.compat import check_compatible
from hf_time.hub import MODEL_PATTERNS, PICKLE_PATTERNS, Hub
from hf_time.io import Checkpoint
from hf_time.lowrank.sources import LoraExpertSource, check_adapters
from hf_time.merges import DenseMethod
from hf_time.merges.lines import apply_lines
from hf_time.pipeline.artifact import Output, carry_base_files
from hf_time.pipeline.plan import Plan
from hf_time.pipeline.resolve import Inputs, ModelInput

EXPERT_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]


def open_base(hub: Hub, base: ModelInput, plan: Plan) -> tuple[Path, Checkpoint]:
    """Download the base (weights, config, tokenizer) and open it."""
    folder = hub.download(base.read, MODEL_PATTERNS + (PICKLE_PATTERNS if plan.allow_pickle else []))
    return folder, Checkpoint(folder, allow_pickle=plan.allow_pickle)


def open_sources(hub: Hub, inputs: Inputs, plan: Plan, base_ck: Checkpoint, models: list[ModelInput]) -> list:
    """One weight source per model of ``models``: a checkpoint, or base + ΔW for an adapter.

    Pickle-only inputs, which had no headers to check before download, are checked here.
    """
    pickles = PICKLE_PATTERNS if plan.allow_pickle else []
    cks = {id(m): Checkpoint(hub.download(m.read, EXPERT_PATTERNS + pickles), allow_pickle=plan.allow_pickle)
           for m in models if m.adapter is None}
    if not inputs.headers_known:
        check_compatible(inputs.base.name, inputs.base.hf_config, base_ck.infos,
                         [(m.name, m.hf_config, cks[id(m)].infos) for m in models if m.adapter is None])
    sources = []
    for m in models:
        if m.adapter is None:
            sources.append(cks[id(m)])
            continue
        i = inputs.experts.index(m)
        targets = inputs.targets[i] if inputs.targets and inputs.targets[i] is not None else \
            check_adapters(inputs.base.res, base_ck.infos, [m.adapter])[0]
        sources.append(LoraExpertSource.from_adapter(base_ck, m.adapter, targets))
    return sources


def execute(plan: Plan, inputs: Inputs, hub: Hub, tmp: Path, *, progress: bool = True) -> Output:
    """Run a dense merge into ``tmp``; returns what was written."""
    method = plan.method
    assert isinstance(method, DenseMethod)
    base_dir, base_ck = open_base(hub, inputs.base, plan)
    experts = open_sources(hub, inputs, plan, base_ck, list(inputs.experts))
    thresholds = None
    if method.global_quantiles is not None:
        wanted = [method.global_quantiles(plan.config, ep) for ep in (plan.expert_params or [{}] * len(experts))]
        if any(wanted):  # () means this expert needs no statistics (e.g. per-tensor scope, or density 1)
            thresholds = engine.magnitude_quantiles(base_ck, experts, wanted, progress=progress)
    config, lines = plan.config, plan.lines

    def op(base, tensors, ctx):
        result = method.fn(base if method.uses_base else None, tensors, config, ctx)
        if lines is not None:
            result = apply_lines(base.to(result.dtype), result, ctx, *lines)
        return result

    job = engine.StreamJob(op=op, weights=plan.weights, expert_params=plan.expert_params, device=plan.device,
                           native_inputs=method.native_inputs, thresholds=thresholds, label=f"merging ({method.name})",
                           names=("the base", *(f"expert {e.name}" for e in inputs.experts)),
                           allow_nonfinite=plan.allow_nonfinite)
    writer = engine.make_writer(tmp, base_ck.infos, plan.torch_dtype, plan.max_shard_bytes, {"hf_time": __version__})
    engine.run(base_ck, experts, job, writer, progress=progress)
    files = writer.close()
    carry_base_files(base_dir, tmp, plan.dtype)
    return Output("model", tuple(files))
