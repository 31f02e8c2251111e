"""Where every output tensor of a dense merge comes from, and where it sits in its slice.

From the plan and the inputs' tensor names and configs (headers: nothing downloaded), this maps
each output tensor name to a :class:`Place`: the output slice whose parameters apply, its gradient
position ``t`` and, per engine input, the (model, tensor name) it is read from. Without ``slices``
every input gives the tensor of the same name and only ``t`` is computed; with ``slices`` the
output is assembled: layer ``i`` of output slice ``k`` reads layer ``start + i`` of each source,
renamed into the output's contiguous numbering, and the tensors outside the layers come from the
first slice's sources (embeddings) and the last slice's (final norm, head), as in mergekit.

Checked here, each as one line naming the slice, model or tensor: a layer range outside its
model, sources whose tensors differ in shape, and a gradient filtered onto tensors outside the
layers (where a gradient has no layer to follow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hf_time.errors import ConfigError, IncompatibleExpertsError
from hf_time.io import TensorInfo
from hf_time.layers import LayerStack, find_stack, parameter_order, split_outside
from hf_time.pipeline.tensor_params import SlicePlan, TensorParams
from hf_time.schedules import MATCH_ALL, layer_position


@dataclass(frozen=True)
class ModelView:
    """What the layout needs of one input: its name, config and tensor infos."""

    name: str
    hf_config: Mapping[str, Any] | None
    infos: Mapping[str, TensorInfo]


@dataclass(frozen=True)
class Place:
    """Where one output tensor comes from.

    Attributes:
        slice: the output slice whose parameters apply.
        t: its gradient position (0 outside the layers).
        layer: its output layer (None outside the layers).
        inputs: per engine input (base first), the (model index, tensor name) read.
    """

    slice: int
    t: float
    layer: int | None
    inputs: tuple[tuple[int, str], ...]

    @property
    def expert_names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.inputs[1:])


@dataclass(frozen=True)
class Layout:
    """Every output tensor's place, in output order, and what the output config needs.

    Attributes:
        places: output tensor name -> :class:`Place`.
        stack: the output's layer stack (None when not needed).
        layers: with slices, per output layer the (model index, source layer) it was taken from.
        vocab: output tensors with a vocabulary axis (rows are tokens).
    """

    places: Mapping[str, Place]
    stack: LayerStack | None = None
    layers: tuple[tuple[int, int], ...] | None = None
    vocab: frozenset[str] = frozenset()


def _slots(s: SlicePlan, uses_base: bool):
    """The engine inputs of a slice: the base's source (or, without θ_0, the first expert's), then the experts'."""
    return [s.base if uses_base else s.experts[0], *s.experts]


def _vocab_names(models: Sequence[ModelView], places: Mapping[str, Place]) -> frozenset[str]:
    out = set()
    for name, place in places.items():
        m, src = place.inputs[0]
        size = (models[m].hf_config or {}).get("vocab_size")
        info = models[m].infos[src]
        if place.layer is None and size and info.is_float and info.shape and info.shape[0] == size:
            out.add(name)
    return frozenset(out)


def _whole_models(tp: TensorParams | None, models: Sequence[ModelView], need_stack: bool) -> Layout:
    base = models[0]
    stack = None
    if need_stack or (tp is not None and any(s.varies_with_layer for sl in tp.slices for s in _schedules(sl))):
        stack = find_stack(base.infos, base.hf_config, base.name)
    places = {}
    for name in base.infos:
        layer = stack.index(name) if stack else None
        t = layer_position(layer, stack.num_layers) if layer is not None else 0.0
        places[name] = Place(0, t, layer, tuple((m, name) for m in range(len(models))))
    return Layout(places, stack)


def _assembled(tp: TensorParams, models: Sequence[ModelView], uses_base: bool) -> Layout:
    used = sorted({src.model for s in tp.slices for src in _slots(s, uses_base)} | {0})
    stacks = {m: find_stack(models[m].infos, models[m].hf_config, models[m].name) for m in used}
    for k, s in enumerate(tp.slices):
        for src in _slots(s, uses_base):
            n = stacks[src.model].num_layers
            if src.end > n:
                raise ConfigError(f"slices[{k}]: layer_range [{src.start}, {src.end}] of {models[src.model].name} is "
                                  f"outside the model, which has {n} layers (a range ends at most at {n})")
    total = sum(s.length for s in tp.slices)
    template = stacks[0]
    out_stack = LayerStack(template.prefix, total, template.count_key)
    order = parameter_order(models[0].hf_config)
    first, last = _slots(tp.slices[0], uses_base), _slots(tp.slices[-1], uses_base)
    before, _ = split_outside(list(models[first[0].model].infos), stacks[first[0].model], order)
    _, after = split_outside(list(models[last[0].model].infos), stacks[last[0].model], order)

    def outside(names_of: int, wanted: set[str], k: int, slots) -> dict[str, Place]:
        return {n: Place(k, 0.0, None, tuple((src.model, n) for src in slots))
                for n in models[names_of].infos if n in wanted}

    places = outside(first[0].model, before, 0, first)
    layers = []
    out_index = 0
    for k, s in enumerate(tp.slices):
        slots = _slots(s, uses_base)
        lead = stacks[slots[0].model]
        for o in range(s.length):
            src_layer = slots[0].start + o
            for name in models[slots[0].model].infos:
                if lead.index(name) != src_layer:
                    continue
                suffix = name[len(lead.prefix) + 1:].partition(".")[2]
                inputs = tuple((src.model, f"{stacks[src.model].prefix}.{src.start + o}.{suffix}") for src in slots)
                places[out_stack.rename(name, out_index)] = Place(k, layer_position(o, s.length), out_index, inputs)
            layers.append((slots[0].model, src_layer))
            out_index += 1
    places.update(outside(last[0].model, after, len(tp.slices) - 1, last))
    return Layout(places, out_stack, tuple(layers))


def _schedules(s: SlicePlan):
    yield from s.shared.values()
    for d in s.per_expert:
        yield from d.values()


def _check_inputs(layout: Layout, models: Sequence[ModelView], skip_rows: bool) -> None:
    for out, place in layout.places.items():
        shapes = []
        for m, name in place.inputs:
            info = models[m].infos.get(name)
            if info is None:
                raise IncompatibleExpertsError(f"{models[m].name} has no tensor {name!r}, which output tensor {out!r} "
                                               "reads; are the models of one architecture?", tensor=name)
            shapes.append(tuple(info.shape[1:] if skip_rows and out in layout.vocab else info.shape))
        if len(set(shapes)) > 1:
            (m0, n0), (m1, n1) = place.inputs[0], place.inputs[shapes.index(next(s for s in shapes if s != shapes[0]))]
            raise IncompatibleExpertsError(
                f"output tensor {out!r} merges {n0!r} of {models[m0].name} {list(models[m0].infos[n0].shape)} with "
                f"{n1!r} of {models[m1].name} {list(models[m1].infos[n1].shape)}; shapes must agree",
                tensor=out, expected=models[m0].infos[n0].shape, found=models[m1].infos[n1].shape)


def _check_gradients(tp: TensorParams, layout: Layout, names: Mapping[str, str]) -> None:
    for sl in tp.slices:
        for attr, sched in [*sl.shared.items(), *((a, s) for d in sl.per_expert for a, s in d.items())]:
            for rule in sched.rules:
                if not rule.is_gradient or rule.filter in (None, MATCH_ALL):
                    continue
                hit = [n for n in layout.places if rule.filter in n]
                if hit and all(layout.places[n].layer is None for n in hit):
                    raise ConfigError(f"parameter {names.get(attr, attr)!r}: a gradient {list(rule.anchors)} for filter "
                                      f"{rule.filter!r}, which matches only tensors outside the layers ({hit[0]!r}); "
                                      "a gradient follows the layers, so give that filter one value")


def build_layout(tp: TensorParams | None, models: Sequence[ModelView], *, uses_base: bool, align_vocab: bool,
                 names: Mapping[str, str] | None = None) -> Layout:
    """The place of every output tensor (see the module docstring).

    Args:
        tp: the plan's per-tensor parameters (None: plain values, whole models).
        models: the inputs by index (0: the base, i: expert i − 1).
        uses_base: the method reads θ_0 (the base is an engine input of every slice).
        align_vocab: embeddings are aligned to an output vocabulary (their rows may differ in number).
        names: field name -> public name, for messages.

    Raises:
        ConfigError: a layer range outside its model, no layer stack where one is needed, a
            gradient filtered onto tensors outside the layers.
        IncompatibleExpertsError: inputs of one output tensor that are missing or differ in shape.
    """
    layout = _assembled(tp, models, uses_base) if tp is not None and tp.layered else _whole_models(tp, models, align_vocab)
    if align_vocab:
        layout = Layout(layout.places, layout.stack, layout.layers, _vocab_names(models, layout.places))
    if (tp is not None and tp.layered) or align_vocab:
        _check_inputs(layout, models, align_vocab)
    if tp is not None:
        _check_gradients(tp, layout, names or {})
    return layout
