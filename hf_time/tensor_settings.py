"""A method's parameters as written (scalars, gradients, filters) split into plain values and schedules.

A dense method declares its parameters once (:func:`hf_time.schema.field`). Any of them may be
given as a gradient or a filter list (:mod:`hf_time.schedules`) unless it is declared
``per_tensor=False`` (a whole-model setting such as ``threshold_scope``); an expert's ``weight`` and
its per-expert parameters may be too. Each anchor value is checked against the declaration (type
and range) here, so a schedule that parses is valid at every tensor: ranges are intervals, and an
interpolation of two values in an interval stays inside it. Integer parameters take filters but
no gradients (an interpolated value would not be an integer).
"""

from __future__ import annotations

from typing import Any, Mapping

from hf_time import schema
from hf_time.merges.registry import MethodSpec
from hf_time.schedules import Schedule, is_setting, parse

WEIGHT = "weight"


def _check_anchors(schedule: Schedule, spec: MethodSpec, info: schema.FieldInfo | None, where: str,
                   problems: list[str]) -> Schedule | None:
    """The schedule with its anchors converted to the field's type, or None (problems recorded)."""
    before = len(problems)
    if info is not None and info.annotation is int and schedule.varies_with_layer:
        problems.append(f"{where}: {info.name} is an integer, so it cannot follow a gradient over the layers; give one "
                        "value (filters are fine)")
        return None

    def convert(value: Any) -> Any:
        if info is None:  # an expert's weight: any finite number
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
                problems.append(f"{where}: a weight is a finite number, got {value!r}")
            return float(value) if isinstance(value, (int, float)) else value
        got = schema.read(spec.config_cls, {info.name: value}, problems=problems, strings=True,
                          label=lambda _key: where)
        return got.get(info.attr, value) if got else value

    converted = schedule.map(convert)
    return converted if len(problems) == before else None


def split(spec: MethodSpec, values: Mapping[str, Any], problems: list[str], *, where: str,
          per_expert: bool = False, allow_weight: bool = False) -> tuple[dict[str, Any], dict[str, Schedule]]:
    """Separate plain values from schedules (by field name, ``weight`` as is) and check the schedules.

    Plain values are returned by public name for the method's own checks (unknown names, ranges);
    only values written as gradients or filters are parsed here.

    Args:
        spec: the method.
        values: parameters by public name, as written.
        where: key path of ``values`` for messages (``parameters``, ``models[1].parameters``).
        per_expert: ``values`` are one expert's (only per-expert parameters may vary there).
        allow_weight: ``weight`` may be among ``values`` (an expert's weight, or the default of all).

    Returns:
        (plain values by public name, schedules by field name or ``weight``).
    """
    infos = {p.name: p for p in spec.parameters()}
    plain: dict[str, Any] = {}
    schedules: dict[str, Schedule] = {}
    for key, value in values.items():
        at = schema.key_path(where, key)
        if not is_setting(value):
            plain[key] = value
            continue
        info = infos.get(key)
        if key == WEIGHT and allow_weight:
            info = None
        elif info is None:
            plain[key] = value  # the method's checks name the unknown parameter, with the closest valid one
            continue
        elif per_expert and not info.per_expert:
            problems.append(f"{at}: cannot be set per expert for {spec.name!r}")
            continue
        elif not info.meta.get("per_tensor", True):
            problems.append(f"{at}: {key} is a whole-model setting of {spec.name!r}; it cannot vary per tensor "
                            f"(gradients and filters), give one value")
            continue
        parsed = parse(value, at, problems)
        if parsed is None:
            continue
        checked = _check_anchors(parsed, spec, info, at, problems)
        if checked is None:
            continue
        name = WEIGHT if info is None else info.attr
        if checked.is_constant:
            plain[key] = checked.rules[0].anchors[0]
        else:
            schedules[name] = checked
    return plain, schedules


def public_name(spec: MethodSpec, attr: str) -> str:
    """The public name of field ``attr`` (``lambda`` for ``lambda_``); ``weight`` stays ``weight``."""
    return next((p.name for p in spec.parameters() if p.attr == attr), attr)
