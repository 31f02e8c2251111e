"""Per-tensor parameter values: mergekit's gradients and filters, parsed once, evaluated per tensor.

A merge parameter (``t``, ``density``, an expert's ``weight``...) is written in one of mergekit's forms:

* a scalar: the same value for every tensor;
* a **gradient**: a list of anchor values spread evenly over the layers of an output slice. A tensor
  at layer position ``t`` in [0, 1] gets the linear interpolation of its two nearest anchors
  (booleans and strings pick the anchor at ``int(t·(n−1))`` instead). Tensors outside the layers
  (embeddings, final norm, head) sit at ``t = 0``, the first anchor, as in mergekit;
* **filters**: a list of ``{filter: SUBSTRING, value: V}`` entries; the first entry whose substring
  occurs in the tensor name gives the value (no ``filter``, or ``*``, matches every tensor), and
  ``V`` is a scalar or a gradient. mergekit matches plain substrings, not globs or regular
  expressions, so a filter holding ``*`` or ``^`` would silently match nothing there: here it is an
  error.

A :class:`Schedule` is the parsed list of rules; :meth:`Schedule.value` is a pure function of the
tensor name and its layer position. Precedence between the places a value can be given (a model's
parameters, a slice's, the global ones) is rule concatenation (:meth:`Schedule.then`): the first
matching rule of the chain wins, which is exactly mergekit's lookup order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Union

Scalar = Union[bool, int, float, str]
MATCH_ALL = "*"
# Characters that mean something in a glob or a regular expression but never occur in tensor names.
_PATTERN_CHARS = re.compile(r"[*?\[\](){}^$|\\+]")
_FILTER_KEYS = ("filter", "pattern")


def layer_position(index: int, count: int) -> float:
    """The gradient position of layer ``index`` of a slice of ``count`` layers (mergekit: 1 for a lone layer)."""
    return index / (count - 1) if count > 1 else 1.0


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def interpolate(anchors: tuple[Scalar, ...], t: float) -> Scalar:
    """The value of a gradient at ``t`` in [0, 1]: linear between numbers, the nearest-below anchor otherwise."""
    if len(anchors) == 1:
        return anchors[0]
    if not all(_is_number(a) for a in anchors):
        return anchors[int(t * (len(anchors) - 1))]
    scaled = t * (len(anchors) - 1)
    i0 = int(scaled)
    i1 = min(len(anchors) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * anchors[i0] + frac * anchors[i1]


@dataclass(frozen=True)
class Rule:
    """One entry of a schedule: where it applies and its value (one anchor: a constant; more: a gradient).

    Attributes:
        filter: a substring of the tensor names it applies to (None or ``*``: every tensor).
        anchors: the value, or the anchors of a gradient over the layers.
    """

    filter: str | None
    anchors: tuple[Scalar, ...]

    def matches(self, tensor: str) -> bool:
        return self.filter is None or self.filter == MATCH_ALL or self.filter in tensor

    @property
    def is_gradient(self) -> bool:
        return len(self.anchors) > 1

    def to_data(self) -> Any:
        value = list(self.anchors) if self.is_gradient else self.anchors[0]
        return value if self.filter is None else {"filter": self.filter, "value": value}


@dataclass(frozen=True)
class Schedule:
    """A parameter's value for every tensor: rules tried in order, the first that matches wins."""

    rules: tuple[Rule, ...]

    @classmethod
    def constant(cls, value: Scalar) -> "Schedule":
        return cls((Rule(None, (value,)),))

    def value(self, tensor: str, t: float) -> Scalar | None:
        """The value for ``tensor`` at layer position ``t`` (None: no rule matches; the next level decides)."""
        for rule in self.rules:
            if rule.matches(tensor):
                return interpolate(rule.anchors, t)
        return None

    @property
    def is_constant(self) -> bool:
        """One value for every tensor (a plain scalar as written)."""
        return len(self.rules) == 1 and self.rules[0].filter is None and not self.rules[0].is_gradient

    @property
    def varies_with_layer(self) -> bool:
        return any(r.is_gradient for r in self.rules)

    def then(self, fallback: "Schedule | None") -> "Schedule":
        """This schedule, falling back to ``fallback`` for tensors none of its rules matches."""
        if fallback is None:
            return self
        return Schedule(self.rules + fallback.rules)

    def map(self, fn) -> "Schedule":
        """The same rules with every anchor passed through ``fn`` (e.g. a type conversion)."""
        return Schedule(tuple(Rule(r.filter, tuple(fn(a) for a in r.anchors)) for r in self.rules))

    def to_data(self) -> Any:
        """The YAML form: a scalar, a gradient list, or a list of ``{filter, value}`` entries."""
        if len(self.rules) == 1 and self.rules[0].filter is None:
            return self.rules[0].to_data()
        return [r.to_data() if r.filter is not None else {"value": r.to_data()} for r in self.rules]


def is_setting(value: Any) -> bool:
    """Whether ``value`` is written as a gradient or filters (not a plain scalar)."""
    return isinstance(value, (list, tuple, Mapping))


def _anchors(value: Any, where: str, problems: list[str]) -> tuple[Scalar, ...] | None:
    if _is_scalar(value):
        return (value,)
    if isinstance(value, (list, tuple)):
        if not value:
            problems.append(f"{where}: an empty gradient gives no value; write at least one value")
            return None
        bad = [v for v in value if not _is_scalar(v)]
        if bad:
            problems.append(f"{where}: a gradient is a list of plain values, got {bad[0]!r} in it")
            return None
        return tuple(value)
    problems.append(f"{where}: expected a value or a list of values (a gradient over the layers), got {value!r}")
    return None


def _filter(entry: Mapping[str, Any], where: str, problems: list[str]) -> tuple[bool, str | None]:
    given = [k for k in _FILTER_KEYS if k in entry]
    if len(given) > 1:
        problems.append(f"{where}: give `filter` or its alias `pattern`, not both")
        return False, None
    if not given:
        return True, None
    text = entry[given[0]]
    if not isinstance(text, str) or not text:
        problems.append(f"{where}.{given[0]}: expected a non-empty string (a substring of tensor names), got {text!r}")
        return False, None
    if text != MATCH_ALL and _PATTERN_CHARS.search(text):
        problems.append(f"{where}.{given[0]}: {text!r} is not a substring filter: filters match plain substrings of "
                        f"tensor names as in mergekit (only a lone '*' matches every tensor), so it would match "
                        f"nothing; write e.g. 'self_attn' or 'mlp'")
        return False, None
    return True, text


def parse(raw: Any, where: str, problems: list[str]) -> Schedule | None:
    """Parse a parameter as written (scalar, gradient or filters) into a :class:`Schedule`.

    Values are not type-checked here (the parameter's declaration does that); every problem is
    appended to ``problems`` with its key path.

    Returns:
        The schedule, or None when anything is wrong.
    """
    if _is_scalar(raw):
        return Schedule.constant(raw)
    if isinstance(raw, Mapping):  # one {filter, value} entry on its own, as mergekit accepts
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        problems.append(f"{where}: expected a value, a gradient list or a list of {{filter, value}}, got {raw!r}")
        return None
    if not raw:
        problems.append(f"{where}: an empty list gives no value; write a value, a list of values (a gradient over "
                        "the layers) or a list of {filter, value} entries")
        return None
    if all(_is_scalar(v) for v in raw):
        return Schedule((Rule(None, tuple(raw)),))
    if not all(isinstance(v, Mapping) for v in raw):
        problems.append(f"{where}: a list is either plain values (a gradient) or {{filter, value}} entries, not a mix")
        return None
    before = len(problems)
    rules = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        unknown = [k for k in entry if k not in ("value", *_FILTER_KEYS)]
        if unknown:
            problems.append(f"{at}: unknown filter syntax {unknown[0]!r}; an entry is {{filter: SUBSTRING, value: V}} "
                            "(mergekit matches the substring against tensor names), or {value: V} as the fallback")
            continue
        if "value" not in entry:
            problems.append(f"{at}: a filter entry needs a `value`")
            continue
        ok, text = _filter(entry, at, problems)
        anchors = _anchors(entry["value"], f"{at}.value", problems)
        if ok and anchors is not None:
            rules.append(Rule(text, anchors))
    return Schedule(tuple(rules)) if len(problems) == before else None
