"""The dense executor: n experts (full models or LoRA adapters as base + ΔW) merged tensor by tensor.

Downloads what the merge needs at the pinned commits (weights and config/tokenizer files, never a
whole repo), opens one weight source per expert, computes global magnitude thresholds when the
method asks for them, and streams every tensor through the method — and LiNeS, when the plan has
it — into the sharded writer (:mod:`hf_time.engine`).

Parameters that vary per tensor (gradients, filters, slices) are resolved inside the tensor op
(:meth:`~hf_time.pipeline.tensor_params.TensorParams.resolve`), so the engine and the methods only
ever see plain values; an output assembled from slices or realigned to another vocabulary reads
its inputs through placed sources (:mod:`hf_time.pipeline.executors.assembled`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hf_time import __version__, engine
from hf_time.compat import check_compatible
from hf_time.errors import ConfigError
from hf_time.hub import MODEL_PATTERNS, PICKLE_PATTERNS, Hub
from hf_time.io import Checkpoint
from hf_time.lowrank.sources import LoraExpertSource, check_adapters
from hf_time.merges import DenseMethod
from hf_time.merges.lines import apply_lines
from hf_time.pipeline.artifact import Output, carry_base_files
from hf_time.pipeline.executors.assembled import finish_config, placed_sources
from hf_time.pipeline.layout import Layout, ModelView, build_layout
from hf_time.pipeline.plan import Plan
from hf_time.pipeline.resolve import Inputs, ModelInput
from hf_time.pipeline.tokenizer import build_vocab, save_tokenizer

EXPERT_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]
TOKENIZER_PATTERNS = ["tokenizer*", "*.model", "*.tiktoken", "vocab.*", "merges.txt", "special_tokens_map.json",
                      "added_tokens.json", "*.jinja"]


def open_base(hub: Hub, base: ModelInput, plan: Plan) -> tuple[Path, Checkpoint]:
    """Download the base (weights, config, tokenizer) and open it."""
    folder = hub.download(base.read, MODEL_PATTERNS + (PICKLE_PATTERNS if plan.allow_pickle else []))
    return folder, Checkpoint(folder, allow_pickle=plan.allow_pickle)


def open_sources(hub: Hub, inputs: Inputs, plan: Plan, base_ck: Checkpoint, models: list[ModelInput]) -> list:
    """One weight source per model of ``models``: a checkpoint, or base + ΔW for an adapter.

    Pickle-only inputs, which had no headers to check before download, are checked here.
    """
    pickles = PICKLE_PATTERNS if plan.allow_pickle else []
    extra = TOKENIZER_PATTERNS if plan.tokenizer is not None and plan.tokenizer.aligns_vocab else []
    cks = {id(m): Checkpoint(hub.download(m.read, EXPERT_PATTERNS + extra + pickles), allow_pickle=plan.allow_pickle)
           for m in models if m.adapter is None}
    if not inputs.headers_known and not plan.assembles_output:
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


def views(inputs: Inputs, infos: list) -> list[ModelView]:
    """The layout's view of every input (0: the base), from headers or opened checkpoints."""
    models = [inputs.base, *inputs.experts]
    return [ModelView(m.name, m.hf_config, i) for m, i in zip(models, infos)]


def layout_of(plan: Plan, models: list[ModelView]) -> Layout:
    """Where each output tensor comes from (see :mod:`hf_time.pipeline.layout`)."""
    names = {p.attr: p.name for p in plan.method.parameters()}
    return build_layout(plan.tensor_params, models, uses_base=plan.method.uses_base,
                        align_vocab=plan.tokenizer is not None and plan.tokenizer.aligns_vocab, names=names)


def bind(plan: Plan, inputs: Inputs, state=None) -> Plan:
    """Check the layout from headers before anything is downloaded: layer ranges, shapes, gradients."""
    if state is not None:
        raise ConfigError(f"a state continues a sequential merge; {plan.method.name} is a dense method")
    if plan.align is not None:  # experts of other inits: alignable, from headers (imported here: scipy, only then)
        from hf_time.align.merge_align import check_alignable

        check_alignable(inputs)
    if plan.tensor_params is None and plan.tokenizer is None:
        return plan
    adapters = [e.name for e in inputs.experts if e.adapter is not None]
    if adapters and plan.assembles_output:
        raise ConfigError(f"slices and tokenizer_source take full models; {adapters[0]} is a LoRA adapter (merge it "
                          "into its base first, or drop these keys)")
    if inputs.headers_known and not adapters:
        layout_of(plan, views(inputs, [inputs.base.infos, *(e.infos for e in inputs.experts)]))
    return plan


def execute(plan: Plan, inputs: Inputs, hub: Hub, tmp: Path, *, progress: bool = True) -> Output:
    """Run a dense merge into ``tmp``; returns what was written."""
    method = plan.method
    assert isinstance(method, DenseMethod)
    base_dir, base_ck = open_base(hub, inputs.base, plan)
    experts = open_sources(hub, inputs, plan, base_ck, list(inputs.experts))
    aligned = None
    if plan.align is not None:  # read every expert through its permutations onto the base
        from hf_time.align.merge_align import align_experts

        aligned = align_experts(plan.align, inputs, base_dir, base_ck, experts, tmp, progress=progress)
        experts = aligned.sources
    engine_base, engine_inputs, weights, expert_params = base_ck, experts, plan.weights, plan.expert_params
    layout = vocab = None
    if plan.tensor_params is not None or plan.tokenizer is not None:
        layout = layout_of(plan, views(inputs, [base_ck.infos, *(e.infos for e in experts)]))
    if plan.assembles_output:
        engine_base, engine_inputs, vocab = _assemble(plan, inputs, base_dir, [base_ck, *experts], layout)
        if plan.tensor_params is not None and plan.tensor_params.layered:  # weights resolve per tensor and slot
            weights, expert_params = (1.0,) * len(engine_inputs), ()
    thresholds = None
    if method.global_quantiles is not None:
        wanted = [method.global_quantiles(plan.config, ep) for ep in (expert_params or [{}] * len(engine_inputs))]
        if any(wanted):  # () means this expert needs no statistics (e.g. per-tensor scope, or density 1)
            thresholds = engine.magnitude_quantiles(engine_base, engine_inputs, wanted, progress=progress)
    config, lines, tp = plan.config, plan.lines, plan.tensor_params
    places = layout.places if (layout is not None and tp is not None) else None

    def op(base, tensors, ctx):
        cfg = config
        if places is not None:  # gradients, filters, slices: this tensor's own values
            place = places[ctx.name]
            cfg, w, ep = tp.resolve(place.slice, place.t, ctx.name, place.expert_names, config, ctx.weights,
                                    ctx.expert_params)
            ctx = dataclasses.replace(ctx, weights=w, expert_params=ep)
        result = method.fn(base if method.uses_base else None, tensors, cfg, ctx)
        if lines is not None:
            result = apply_lines(base.to(result.dtype), result, ctx, *lines)
        return result

    layered = tp is not None and tp.layered
    job = engine.StreamJob(op=op, weights=weights, expert_params=expert_params, device=plan.device,
                           native_inputs=method.native_inputs, elementwise=method.elementwise,
                           thresholds=thresholds, label=f"merging ({method.name})",
                           names=() if layered else ("the base", *(f"expert {e.name}" for e in inputs.experts)),
                           allow_nonfinite=plan.allow_nonfinite)
    writer = engine.make_writer(tmp, engine_base.infos, plan.torch_dtype, plan.max_shard_bytes, {"hf_time": __version__})
    engine.run(engine_base, engine_inputs, job, writer, progress=progress)
    files = writer.close()
    carry_base_files(base_dir, tmp, plan.dtype)
    if plan.assembles_output:
        finish_config(tmp, layout, [inputs.base.hf_config, *(e.hf_config for e in inputs.experts)],
                      None if vocab is None else len(vocab.vocab))
    if plan.tokenizer is not None:
        _write_tokenizer(plan, vocab, base_dir, tmp)
    details = {} if layout is None or layout.layers is None else {"num_layers": len(layout.layers)}
    if aligned is not None:
        return Output("model", tuple(files) + aligned.files, details, expert_details=aligned.details)
    return Output("model", tuple(files), details)


def _assemble(plan: Plan, inputs: Inputs, base_dir: Path, sources: list, layout: Layout):
    """Engine inputs reading each output tensor from its place; the output vocabulary when realigned."""
    tp = plan.tensor_params
    slots = 1 + (tp.slot_count if tp is not None and tp.layered else len(inputs.experts))
    models = [inputs.base, *inputs.experts]
    vocab = None
    if plan.tokenizer is not None and plan.tokenizer.aligns_vocab:  # experts were opened with their tokenizer files
        vocab = build_vocab(plan.tokenizer, [base_dir, *(ck.folder for ck in sources[1:])], [m.hf_config for m in models])
    placed = placed_sources(layout, sources, slots, vocab=None if vocab is None else vocab.vocab,
                            input_vocabs=None if vocab is None else vocab.inputs, keys=[m.name for m in models],
                            base_key=inputs.base.name)
    return placed[0], placed[1:], vocab


def _write_tokenizer(plan: Plan, vocab, base_dir: Path, tmp: Path) -> None:
    """The output tokenizer: the realigned vocabulary's, or the base's with the chat template set."""
    if vocab is None:  # only a chat template: the base's tokenizer carries it
        vocab = build_vocab(dataclasses.replace(plan.tokenizer, source="base"), [base_dir], [None])
    save_tokenizer(vocab.tokenizer, tmp)
