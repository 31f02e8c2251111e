"""The merge registry: one way in (``@register``), checked on entry, queried by name.

A method is a pure function plus a frozen config dataclass. Its parameters are declared with
:func:`param`, which carries the help text, the valid range and (when the Python name differs, as for
``lambda``) the public name. The CLI ``ls``, the README table and the contract tests are all derived
from this registry, so there is no second list of methods anywhere.

Kinds and the function signature the engine calls:

* ``dense``: ``fn(base, experts, config, ctx) -> Tensor`` for one tensor name. ``base`` is θ_0 (or
  None for methods that ignore it), ``experts`` the θ_i, ``ctx`` a :class:`TensorContext`.
* ``lowrank``: merges LoRA factors; see :mod:`hf_time.lowrank`.
* ``sequential``: folds one new expert into a running state; see :mod:`hf_time.timeline`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import torch

from hf_time.errors import ConfigError, UnknownMethodError

MethodKind = Literal["dense", "lowrank", "sequential"]
KINDS: tuple[str, ...] = ("dense", "lowrank", "sequential")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def param(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    alias: str | None = None,
    per_expert: bool = False,
) -> Any:
    """Declare a method parameter as a dataclass field with its help, range and public name.

    Args:
        default: default value.
        help: one line for ``hf-time ls`` and the README.
        ge, gt, le, lt: inclusive/exclusive numeric bounds.
        choices: allowed values.
        alias: the public name when it is not a valid Python identifier (``lambda``).
        per_expert: the value may also be set per expert (mergekit's per-model ``parameters``).
    """
    meta = dict(help=help, ge=ge, gt=gt, le=le, lt=lt, choices=choices, alias=alias, per_expert=per_expert)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamInfo:
    """Public description of one method parameter."""

    name: str
    field: str
    type: str
    default: Any
    help: str
    per_expert: bool
    bounds: str


@dataclass(frozen=True)
class TensorContext:
    """What a dense method may know about the tensor it merges, besides the tensors themselves.

    Attributes:
        name: tensor name in the checkpoint.
        weights: one weight per expert (default 1.0).
        expert_params: per-expert parameter overrides (e.g. ``density``), one mapping per expert.
        layer, num_layers: transformer block index of this tensor and block count (None outside blocks).
        seed: a per-tensor seed derived from the config seed and the tensor name (see :func:`tensor_seed`).
        magnitude_thresholds: with global thresholds, per expert the |τ| values at the fractions the
            method asked for (:attr:`MethodSpec.global_quantiles`), computed over the whole model.
    """

    name: str
    weights: tuple[float, ...]
    expert_params: tuple[Mapping[str, Any], ...] = ()
    layer: int | None = None
    num_layers: int | None = None
    seed: int = 0
    magnitude_thresholds: tuple[tuple[float, ...], ...] | None = None

    def per_expert(self, key: str, default: Any) -> tuple[Any, ...]:
        """The value of ``key`` for every expert: its override if set, else ``default``."""
        n = len(self.weights)
        params = self.expert_params or ({},) * n
        return tuple(p.get(key, default) for p in params)

    def generator(self, device: torch.device | str = "cpu", offset: int = 0) -> torch.Generator:
        """A generator seeded for this tensor (and ``offset``, e.g. the expert index)."""
        g = torch.Generator(device=device)
        g.manual_seed((self.seed + 1_000_003 * offset) % (2**63 - 1))
        return g


def tensor_seed(seed: int, name: str) -> int:
    """Deterministic per-tensor seed: same config seed + same tensor name -> same random masks."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method."""

    name: str
    kind: str
    fn: Callable[..., Any]
    config_cls: type
    paper: str | None
    summary: str
    uses_base: bool
    min_experts: int
    max_experts: int | None
    global_quantiles: Callable[[Any, Mapping[str, Any]], tuple[float, ...]] | None = None
    native_inputs: bool = False

    # -- parameters -----------------------------------------------------------------------------
    def parameters(self) -> list[ParamInfo]:
        """The public parameters of this method, in declaration order."""
        hints = typing.get_type_hints(self.config_cls)
        out = []
        for f in dataclasses.fields(self.config_cls):
            m = f.metadata
            bounds = ", ".join(
                f"{op} {m[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if m.get(k) is not None
            )
            if m.get("choices"):
                bounds = "one of " + "/".join(map(str, m["choices"]))
            out.append(
                ParamInfo(
                    name=m.get("alias") or f.name,
                    field=f.name,
                    type=_type_name(hints[f.name]),
                    default=f.default,
                    help=m.get("help", ""),
                    per_expert=bool(m.get("per_expert")),
                    bounds=bounds,
                )
            )
        return out

    def make_config(self, params: Mapping[str, Any] | None = None) -> Any:
        """Build the method's config from public parameter names, checking every value.

        Strings (from the CLI) are converted to the field's type. All problems are reported at once.

        Raises:
            ConfigError: unknown parameter, wrong type or out-of-range value (each named).
        """
        infos = {p.name: p for p in self.parameters()}
        valid = ", ".join(infos) or "(none)"
        kwargs, problems = self._check_values(
            dict(params or {}), infos, prefix="parameter",
            unknown=lambda key: f"unknown parameter {key!r} for method {self.name!r} (valid: {valid})",
        )
        if problems:
            raise ConfigError.from_problems(f"invalid parameters for {self.name!r}", problems)
        config = self.config_cls(**kwargs)
        # Cross-field checks live in the config's own `validate()` (returns a list of problems).
        extra = getattr(config, "validate", lambda: [])()
        if extra:
            raise ConfigError.from_problems(f"invalid parameters for {self.name!r}", list(extra))
        return config

    def check_expert_params(self, expert_params: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validate per-expert overrides (only parameters declared ``per_expert``); return coerced copies.

        ``weight`` is skipped: the engine handles weights for every method.
        """
        infos = {p.name: p for p in self.parameters() if p.per_expert}
        valid = ", ".join(["weight", *infos])
        problems, out = [], []
        for i, ep in enumerate(expert_params):
            values = {k: v for k, v in ep.items() if k != "weight"}
            clean, found = self._check_values(
                values, infos, prefix=f"expert {i}: parameter",
                unknown=lambda key, i=i: f"expert {i}: parameter {key!r} cannot be set per expert for {self.name!r} (valid: {valid})",
            )
            problems += found
            out.append(clean)
        if problems:
            raise ConfigError.from_problems(f"invalid per-expert parameters for {self.name!r}", problems)
        return out

    def _check_values(self, values: Mapping[str, Any], infos: Mapping[str, ParamInfo], *, prefix: str,
                      unknown: Callable[[str], str]) -> tuple[dict[str, Any], list[str]]:
        """Coerce and range-check public-name values; returns (field-name values, problems)."""
        clean: dict[str, Any] = {}
        problems: list[str] = []
        for key, raw in values.items():
            info = infos.get(key)
            if info is None:
                problems.append(unknown(key))
                continue
            try:
                value = coerce(raw, info.type)
            except ValueError as e:
                problems.append(f"{prefix} {key!r} of {self.name!r}: {e}")
                continue
            problem = check_range(self.config_cls, info.field, value)
            if problem:
                problems.append(f"{prefix} {key!r} of {self.name!r} {problem}")
                continue
            clean[info.field] = value
        return clean, problems


def _type_name(tp: Any) -> str:
    if tp in (int, float, bool, str):
        return tp.__name__
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float, bool, str):
        return f"{args[0].__name__}?"  # optional
    return str(tp)


def coerce(raw: Any, type_name: str) -> Any:
    """Convert a CLI/YAML value to the declared parameter type. ``?`` types also accept none/null."""
    optional = type_name.endswith("?")
    base = type_name.rstrip("?")
    if raw is None or (optional and isinstance(raw, str) and raw.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ValueError(f"a value is required (expected {base})")
    if base == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return raw.lower() in ("true", "1", "yes", "on")
        raise ValueError(f"expected true/false, got {raw!r}")
    if base == "int":
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if base == "float":
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {raw!r}")
        return value
    if base == "str":
        return str(raw)
    return raw


def check_range(config_cls: type, field_name: str, value: Any) -> str | None:
    """Return a description of the violated bound, or None when ``value`` is allowed."""
    meta = {f.name: f.metadata for f in dataclasses.fields(config_cls)}[field_name]
    if value is None:
        return None
    if meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, ok, op in (
            ("ge", lambda v, b: v >= b, ">="),
            ("gt", lambda v, b: v > b, ">"),
            ("le", lambda v, b: v <= b, "<="),
            ("lt", lambda v, b: v < b, "<"),
        ):
            bound = meta.get(key)
            if bound is not None and not ok(value, bound):
                return f"must be {op} {bound}, got {value}"
    return None


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    *,
    kind: MethodKind,
    config: type,
    paper: str | None = None,
    uses_base: bool = True,
    min_experts: int = 1,
    max_experts: int | None = None,
    global_quantiles: Callable[[Any, Mapping[str, Any]], tuple[float, ...]] | None = None,
    native_inputs: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a merge method under ``name`` (decorator). The function itself is returned unchanged.

    ``native_inputs=True`` declares that the method accepts floating inputs of any dtype (e.g. the
    checkpoint's bfloat16) and computes in float32 itself; the engine then skips converting its inputs,
    which for memory-bound methods such as task arithmetic is most of the work.

    Raises:
        ValueError: the name is not lowercase snake case, already taken, the kind is unknown, or the
            config is not a frozen dataclass.
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not _NAME_RE.match(name):
            raise ValueError(f"method name {name!r} must be lowercase snake_case")
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered (by {_REGISTRY[name].fn.__module__})")
        if kind not in KINDS:
            raise ValueError(f"method {name!r}: kind must be one of {KINDS}, got {kind!r}")
        if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
            raise ValueError(f"method {name!r}: config {config!r} must be a frozen dataclass")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = MethodSpec(
            name=name,
            kind=kind,
            fn=fn,
            config_cls=config,
            paper=paper,
            summary=summary,
            uses_base=uses_base,
            min_experts=min_experts,
            max_experts=max_experts,
            global_quantiles=global_quantiles,
            native_inputs=native_inputs,
        )
        return fn

    return decorator


def get(name: str) -> MethodSpec:
    """Look up a method by name.

    Raises:
        UnknownMethodError: with the list of valid names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        raise UnknownMethodError(f"unknown merge method {name!r}; valid methods: {valid}") from None


def list_methods(kind: str | None = None) -> list[MethodSpec]:
    """All registered methods (optionally of one kind), sorted by kind then name."""
    specs = [s for s in _REGISTRY.values() if kind is None or s.kind == kind]
    return sorted(specs, key=lambda s: (KINDS.index(s.kind), s.name))
