"""Per-tensor parameters of a dense merge: gradients, filters and slices, planned once, resolved per tensor.

mergekit resolves every parameter of every tensor from a chain of places, first match wins: the
model's (slice source's) own parameters, then its output slice's, then the global ones; a
gradient is read at the tensor's position in its slice. :func:`plan_tensor_params` turns the
request into that chain, already checked against the method's declarations; :class:`TensorParams`
resolves it for one tensor (:meth:`TensorParams.resolve`), which the dense executor calls inside
its tensor op. The engine and the methods see plain values, as before.

Without ``slices`` the whole model is one implicit slice and only parameters written as gradients
or filters are scheduled: a merge with plain values plans exactly as it always did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from hf_time.merges import DenseMethod, MethodSpec
from hf_time.schedules import Schedule, is_setting
from hf_time.slices import OutputSlice, check_lengths
from hf_time.tensor_settings import WEIGHT, public_name, split


@dataclass(frozen=True)
class SourcePlan:
    """Layers ``[start, end)`` of input model ``model`` (0: the base, i: expert i − 1 of the request)."""

    model: int
    start: int
    end: int


@dataclass(frozen=True)
class SlicePlan:
    """One output slice: where its layers come from and how its parameters resolve.

    Attributes:
        base: the base's layers (methods reading θ_0), else None.
        experts: one source per expert slot, in order.
        shared: method field -> schedule (this slice's value, then the global one).
        per_expert: per expert slot, ``weight`` / per-expert field -> schedule (the source's, the
            slice's, the global one).
        length: its layer count (0 without ``slices``).
    """

    base: SourcePlan | None
    experts: tuple[SourcePlan, ...]
    shared: Mapping[str, Schedule] = field(default_factory=dict)
    per_expert: tuple[Mapping[str, Schedule], ...] = ()
    length: int = 0


@dataclass(frozen=True)
class TensorParams:
    """How the parameters of a dense merge resolve for each tensor.

    Attributes:
        slices: the output slices (one implicit slice over whole models without ``slices``).
        layered: the request gave ``slices`` (sources are layer ranges, the output is assembled).
        recorded: what the lineage records: ``parameters`` (global schedules by public name),
            ``experts`` (per expert, ``weight`` and per-expert schedules by public name) and
            ``slices`` (the slices as given, models by input index), all as plain data.
    """

    slices: tuple[SlicePlan, ...]
    layered: bool = False
    recorded: Mapping[str, Any] = field(default_factory=dict)

    def expert_record(self, i: int) -> dict[str, Any]:
        """Expert i's schedules by public name (``weight`` included), as the lineage records them."""
        experts = self.recorded.get("experts") or []
        return dict(experts[i]) if i < len(experts) else {}

    def slices_record(self, refs: Sequence[str]) -> tuple[dict[str, Any], ...]:
        """The slices as they ran, each source's model given by ``refs[model index]`` (pinned refs)."""
        out = []
        for s in self.recorded.get("slices") or []:
            sources = [{"model": refs[src["model"]], "layer_range": list(src["layer_range"]),
                        **({"parameters": dict(src["parameters"])} if src["parameters"] else {})} for src in s["sources"]]
            out.append({"sources": sources, **({"parameters": dict(s["parameters"])} if s["parameters"] else {})})
        return tuple(out)

    @property
    def slot_count(self) -> int:
        return len(self.slices[0].experts) if self.layered else len(self.slices[0].per_expert)

    def resolve(self, k: int, t: float, name: str, inputs: Sequence[str], config: Any, weights: Sequence[float],
                expert_params: Sequence[Mapping[str, Any]]) -> tuple[Any, tuple[float, ...], tuple[dict, ...]]:
        """The method config, weights and per-expert parameters of one tensor.

        Args:
            k: its output slice.
            t: its gradient position (0 outside the layers).
            name: its output name (shared parameters' filters match it).
            inputs: per expert slot, the input tensor's name (per-expert filters match it, as in mergekit).
            config, weights, expert_params: the plan's plain values, used where no rule matches.
        """
        s = self.slices[k]
        values = {attr: v for attr, sched in s.shared.items() if (v := sched.value(name, t)) is not None}
        config = dataclasses.replace(config, **values) if values else config
        n = len(inputs)
        out_w = list(weights) + [1.0] * (n - len(weights))
        out_p = [dict(p) for p in expert_params] + [{} for _ in range(n - len(expert_params))]
        for j, scheds in enumerate(s.per_expert):
            for attr, sched in scheds.items():
                v = sched.value(inputs[j], t)
                if v is None:
                    continue
                if attr == WEIGHT:
                    out_w[j] = float(v)
                else:
                    out_p[j][attr] = v
        return config, tuple(out_w), tuple(out_p)


@dataclass(frozen=True)
class Split:
    """A request's parameters split into the plan's plain values and its per-tensor schedules."""

    params: dict[str, Any]
    expert_params: list[dict[str, Any]]
    weights: list[Any]
    tensor_params: TensorParams | None
    slots: int


def _data(spec: MethodSpec, plain: Mapping[str, Any], schedules: Mapping[str, Schedule]) -> dict[str, Any]:
    """Parameters by public name as the lineage writes them: plain values and schedules' YAML form."""
    return {**dict(plain), **{public_name(spec, a): s.to_data() for a, s in schedules.items()}}


def _whole_models(spec: DenseMethod, params: Mapping[str, Any], experts: Sequence[Any], problems: list[str],
                  where: Any) -> Split:
    plain_g, sched_g = split(spec, params, problems, where="parameters")
    plain_e, sched_e, weights = [], [], []
    for i, e in enumerate(experts):
        at = where(i)
        plain, sched = split(spec, {**dict(e.params), WEIGHT: e.weight}, problems, where=at, per_expert=True,
                             allow_weight=True)
        weights.append(plain.pop(WEIGHT, 1.0))
        plain_e.append(plain)
        sched_e.append(sched)
    if not spec.uses_weights and any(WEIGHT in s for s in sched_e):
        problems.append(f"{spec.name} does not weight its experts, so `weight` would have no effect; remove it")
    tp = None
    if sched_g or any(sched_e):
        recorded = {"parameters": _data(spec, {}, sched_g),
                    "experts": [_data(spec, {}, s) for s in sched_e]}
        tp = TensorParams((SlicePlan(None, (), dict(sched_g), tuple(dict(s) for s in sched_e)),), False, recorded)
    return Split(plain_g, plain_e, weights, tp, len(experts))


def _level(spec: MethodSpec, values: Mapping[str, Any], problems: list[str], where: str, *, per_expert: bool
           ) -> tuple[dict[str, Schedule], dict[str, Any]]:
    """One level of the chain (a source's, a slice's or the global parameters) as schedules by field name,
    plain values included (checked by the method's declarations), and its recorded data."""
    plain, sched = split(spec, values, problems, where=where, per_expert=per_expert, allow_weight=True)
    weight = plain.pop(WEIGHT, None)
    out = dict(sched)
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            problems.append(f"{where}.weight: expected a number, got {weight!r}")
        else:
            out[WEIGHT] = Schedule.constant(float(weight))
    if per_expert:
        checked = spec.collect_expert_params([plain], problems, path=lambda _i: where)[0]
    else:
        config = spec.collect_config(plain, problems, path=where)
        attrs = {p.name: p.attr for p in spec.parameters()}
        checked = {attrs[k]: getattr(config, attrs[k]) for k in plain if k in attrs} if config is not None else {}
    out.update({attr: Schedule.constant(v) for attr, v in checked.items()})
    recorded = {public_name(spec, a): s.to_data() for a, s in out.items()}
    return out, recorded


def _chain(*levels: Mapping[str, Schedule], keys: set[str]) -> dict[str, Schedule]:
    out = {}
    for key in keys:
        chain = None
        for level in reversed(levels):
            if key in level:
                chain = level[key].then(chain)
        if chain is not None:
            out[key] = chain
    return out


def _layered(spec: DenseMethod, params: Mapping[str, Any], base: str, experts: Sequence[str],
             slices: Sequence[OutputSlice], problems: list[str]) -> Split:
    check_lengths(slices, problems)
    per_expert_attrs = {p.attr for p in spec.parameters() if p.per_expert} | {WEIGHT}
    shared_attrs = {p.attr for p in spec.parameters()} - per_expert_attrs
    # Plain global values go into the method's config as without slices (checked there, once); only
    # the global weight and the global schedules join the chains.
    plain_g, glob = split(spec, params, problems, where="parameters", allow_weight=True)
    weight = plain_g.pop(WEIGHT, None)
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            problems.append(f"parameters.weight: expected a number, got {weight!r}")
        else:
            glob[WEIGHT] = Schedule.constant(float(weight))
    glob_data = {public_name(spec, a): s.to_data() for a, s in glob.items()}
    planned, recorded, slots = [], [], None
    for k, s in enumerate(slices):
        level, level_data = _level(spec, s.parameters, problems, f"slices[{k}].parameters", per_expert=False)
        base_src, expert_srcs, per_slot, sources_data = None, [], [], []
        for j, src in enumerate(s.sources):
            at = f"slices[{k}].sources[{j}]"
            own, own_data = _level(spec, src.parameters, problems, f"{at}.parameters", per_expert=True)
            if spec.uses_base and src.model == base:
                if base_src is not None:
                    problems.append(f"{at}.model: the base {base} is listed twice in this slice")
                base_src = SourcePlan(0, *src.layer_range)
                model = 0
            elif src.model in experts:
                model = experts.index(src.model) + 1
                expert_srcs.append(SourcePlan(model, *src.layer_range))
                per_slot.append(_chain(own, level, glob, keys=per_expert_attrs))
            else:
                problems.append(f"{at}.model: {src.model} is not among the merge's models")
                continue
            sources_data.append({"model": model, "layer_range": list(src.layer_range), "parameters": own_data})
        if spec.uses_base and base_src is None:
            problems.append(f"slices[{k}]: {spec.name} reads the base θ_0, so the base model {base} must be one of the "
                            "sources of every slice")
        if slots is not None and len(expert_srcs) != slots:
            problems.append(f"slices[{k}]: {len(expert_srcs)} model(s) to merge but slices[0] has {slots}; hf_time "
                            "merges the same number of models in every slice")
        slots = len(expert_srcs) if slots is None else slots
        planned.append(SlicePlan(base_src, tuple(expert_srcs), _chain(level, glob, keys=shared_attrs),
                                 tuple(per_slot), s.length))
        recorded.append({"sources": sources_data, "parameters": level_data})
    if not spec.uses_weights and any(WEIGHT in d for sl in planned for d in sl.per_expert):
        problems.append(f"{spec.name} does not weight its experts, so `weight` would have no effect; remove it")
    record = {"parameters": {k: v for k, v in glob_data.items() if k != WEIGHT},
              "weight": glob_data.get(WEIGHT), "slices": recorded}
    tp = TensorParams(tuple(planned), True, record)
    return Split(plain_g, [{} for _ in experts], [1.0] * len(experts), tp, slots or 0)


def plan_tensor_params(spec: MethodSpec, params: Mapping[str, Any], base: str, experts: Sequence[Any],
                       slices: Sequence[OutputSlice] | None, problems: list[str], *, where: Any = None) -> Split:
    """Split a request's parameters into plain values and per-tensor schedules, checking every value.

    Args:
        spec: the method.
        params: global parameters by public name, as written (``weight`` allowed with ``slices``).
        base: the base reference; ``experts``: the request's experts (:class:`~hf_time.config.ExpertSpec`).
        slices: the request's slices, or None.
        where: ``i -> key path`` of expert i's parameters in messages (default ``expert i``).

    Returns:
        The plain values (for the method's config, per-expert overrides and weights) and, when any
        parameter varies per tensor or ``slices`` were given, the :class:`TensorParams`.
    """
    where = where or (lambda i: f"expert {i}")
    if not isinstance(spec, DenseMethod):
        if slices:
            problems.append(f"slices: layer ranges apply to dense merges of full models; {spec.name} is a {spec.kind} "
                            "method")
        given = [(f"parameters.{k}", v) for k, v in params.items()] + [
            (f"{where(i)}.{k}", v) for i, e in enumerate(experts) for k, v in {**dict(e.params), WEIGHT: e.weight}.items()]
        for at, value in given:
            if is_setting(value):
                problems.append(f"{at}: gradients and filters (values per tensor) apply to dense methods; {spec.name} "
                                f"is a {spec.kind} method, give one value")
        plain = lambda d: {k: v for k, v in d.items() if not is_setting(v)}  # noqa: E731 - settings reported above
        return Split(plain(params), [plain(e.params) for e in experts],
                     [1.0 if is_setting(e.weight) else e.weight for e in experts], None, len(experts))
    if slices:
        return _layered(spec, params, base, [e.ref for e in experts], slices, problems)
    split_ = _whole_models(spec, params, experts, problems, where)
    tp = split_.tensor_params
    if tp is not None and spec.global_quantiles is not None and split_.params.get("threshold_scope") == "global" \
            and any(a != WEIGHT for d in tp.slices[0].per_expert for a in d):
        problems.append("threshold_scope: global computes one magnitude threshold per expert over the whole model, "
                        "so density and gamma cannot vary per tensor; use threshold_scope: tensor")
    return split_
