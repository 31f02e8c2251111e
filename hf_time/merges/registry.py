"""The merge registry: one way in (``@register``), checked on entry, queried by name.

A method is a pure function plus a frozen config dataclass whose parameters are declared with
:func:`param` (:func:`hf_time.schema.field`: help, range, public alias such as ``lambda``). What a
method *can do* is declared when it registers and kept on its spec, one class per kind, so the
pipeline asks the spec and never probes the config:

* :class:`DenseMethod` — ``fn(base, experts, config, ctx) -> Tensor`` for one tensor name; declares
  ``uses_base`` (θ_0 is read, so LiNeS applies), ``native_inputs`` (reads stored bf16 directly),
  ``elementwise`` (each output entry depends only on the same entry of the inputs),
  ``global_quantiles`` (statistics a global magnitude threshold needs).
* :class:`LowRankMethod` — ``fn(modules, config, ctx) -> ModuleResult`` for one adapted module
  (:mod:`hf_time.merges.factors`); declares its ``output`` format (``adapter`` or ``rmm``) and
  ``requires_equal_ranks``; its config has a ``strict`` field.
* :class:`SequentialMethod` — ``fn(previous, base, expert, config, ctx, state) -> Tensor`` folding
  one expert into a running merge; declares ``state_keys``, ``two_pass``, ``next_state``,
  ``check_state`` (see :mod:`hf_time.pipeline.executors.sequential`).
* :class:`DataMethod` — ``fn(base, experts, statistics, config, ctx) -> Tensor`` for one tensor name,
  where ``statistics[i]`` is expert i's per-parameter statistic computed on its task data (a diagonal
  Fisher) with the same name and shape; declares the ``statistic`` file each expert must carry
  (see :mod:`hf_time.pipeline.executors.data`).

Every kind declares ``uses_weights`` (False: per-expert weights are refused, not silently ignored)
and an optional ``check(config, n_experts) -> problems`` for cross-field rules. The CLI ``ls``, the
README table and the contract tests are all derived from this registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch

from hf_time import schema
from hf_time.errors import ConfigError, UnknownMethodError

KINDS: tuple[str, ...] = ("dense", "lowrank", "sequential", "data")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")
OUTPUTS = ("adapter", "rmm")

param = schema.field  # a method parameter is a schema field (help, range, alias, per_expert)
ParamInfo = schema.FieldInfo


@dataclass(frozen=True)
class TensorContext:
    """What a method may know about the tensor it merges, besides the tensors themselves.

    Attributes:
        name: tensor name in the checkpoint (seeds derive from it: same name, same masks).
        weights: one weight per expert (default 1.0).
        expert_params: per-expert parameter overrides (e.g. ``density``), one mapping per expert.
        layer, num_layers: transformer block index of this tensor and block count (None outside blocks).
        magnitude_thresholds: with global thresholds, per expert the |τ| values at the fractions the
            method asked for (:attr:`DenseMethod.global_quantiles`), computed over the whole model.
    """

    name: str
    weights: tuple[float, ...]
    expert_params: tuple[Mapping[str, Any], ...] = ()
    layer: int | None = None
    num_layers: int | None = None
    magnitude_thresholds: tuple[tuple[float, ...], ...] | None = None

    def per_expert(self, key: str, default: Any) -> tuple[Any, ...]:
        """The value of ``key`` for every expert: its override if set, else ``default``."""
        n = len(self.weights)
        params = self.expert_params or ({},) * n
        return tuple(p.get(key, default) for p in params)


def tensor_seed(seed: int, name: str) -> int:
    """Deterministic per-tensor seed: same config seed + same tensor name -> same random masks."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


def seeded_generator(seed: int, name: str, *, offset: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by (config seed, tensor name, offset such as the expert index)."""
    g = torch.Generator(device=device)
    g.manual_seed((tensor_seed(seed, name) + 1_000_003 * offset) % (2**63 - 1))
    return g


@dataclass(frozen=True)
class MethodSpec:
    """What every registered method declares, whatever its kind.

    Attributes:
        name: registry name (lowercase snake case).
        fn: the pure function (its signature depends on the kind).
        config_cls: the frozen config dataclass.
        paper: link to the paper (or reference).
        summary: first line of the function's docstring.
        min_experts, max_experts: how many experts a merge takes (None: no upper bound).
        uses_weights: whether per-expert weights change the result (False refuses weights != 1).
        check: cross-field rules ``check(config, n_experts or None) -> problems``.
    """

    kind: ClassVar[str] = ""
    name: str
    fn: Callable[..., Any]
    config_cls: type
    paper: str | None
    summary: str
    min_experts: int = 1
    max_experts: int | None = None
    uses_weights: bool = True
    check: Callable[[Any, int | None], list[str]] | None = None

    # -- parameters -----------------------------------------------------------------------------
    def parameters(self) -> list[ParamInfo]:
        """The public parameters of this method, in declaration order."""
        return list(schema.fields(self.config_cls))

    def resolved_parameters(self, config: Any) -> dict[str, Any]:
        """Every parameter's value in ``config`` by public name (defaults included)."""
        return {p.name: getattr(config, p.attr) for p in self.parameters()}

    def _unknown(self, path: str, valid: Sequence[str]) -> Callable[[str], str]:
        def message(key: str) -> str:
            close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(valid) or 'none'})"
            where = f"{schema.key_path(path, key)}: " if path else ""
            return f"{where}unknown parameter {key!r} for method {self.name!r}{hint}"
        return message

    def _label(self, path: str) -> Callable[[str], str]:
        return (lambda key: schema.key_path(path, key)) if path else (lambda key: f"parameter {key!r} of {self.name!r}")

    def collect_config(self, params: Mapping[str, Any] | None, problems: list[str], *, path: str = "",
                       n_experts: int | None = None) -> Any | None:
        """Build the method's config from public names, appending every problem to ``problems``.

        Strings (from the CLI) are converted to the field's type; the method's own ``check`` runs
        when the values are valid. Returns None when anything is wrong.
        """
        before = len(problems)
        valid = [p.name for p in self.parameters()]
        values = schema.read(self.config_cls, dict(params or {}), path=path, problems=problems, strings=True,
                             label=self._label(path), unknown=self._unknown(path, valid))
        if values is None or len(problems) > before:
            return None
        config = self.config_cls(**values)
        extra = list(self.check(config, n_experts)) if self.check else []
        problems.extend(f"{path}: {p}" if path else p for p in extra)
        return None if extra else config

    def make_config(self, params: Mapping[str, Any] | None = None, *, n_experts: int | None = None) -> Any:
        """Build the method's config from public parameter names, checking every value.

        Raises:
            ConfigError: unknown parameter, wrong type or out-of-range value (each named, all at once).
        """
        problems: list[str] = []
        config = self.collect_config(params, problems, n_experts=n_experts)
        if problems:
            raise ConfigError.from_problems(f"invalid parameters for {self.name!r}", problems)
        return config

    def collect_expert_params(self, expert_params: Sequence[Mapping[str, Any]], problems: list[str], *,
                              path: Callable[[int], str] | None = None) -> list[dict[str, Any]]:
        """Per-expert overrides (only parameters declared ``per_expert``), converted; problems appended.

        ``weight`` is skipped: the pipeline handles weights for every method.

        Args:
            path: the key path of expert i's parameters in a config file (``models[1].parameters``);
                None names them ``expert i``.

        Returns:
            One mapping of field names to values per expert.
        """
        per_expert = {p.name for p in self.parameters() if p.per_expert}
        valid = ["weight", *sorted(per_expert)]
        out = []
        for i, ep in enumerate(expert_params):
            where = path(i) if path else f"expert {i}"
            label = (lambda k, w=where: f"{w}.{k}") if path else (lambda k, w=where: f"{w}: parameter {k!r}")
            values = {k: v for k, v in ep.items() if k != "weight"}
            for key in [k for k in values if k not in per_expert]:
                close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(valid)})"
                problems.append(f"{label(key)}: cannot be set per expert for {self.name!r}{hint}")
                values.pop(key)
            clean = schema.read(self.config_cls, values, path=where, problems=problems, strings=True, label=label)
            out.append(clean or {})
        return out

    def check_expert_params(self, expert_params: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`collect_expert_params`, raising one :class:`ConfigError` with every problem."""
        problems: list[str] = []
        out = self.collect_expert_params(expert_params, problems)
        if problems:
            raise ConfigError.from_problems(f"invalid per-expert parameters for {self.name!r}", problems)
        return out

    @property
    def requires_base(self) -> bool:
        """Whether a merge needs θ_0 as an input (every kind but a dense method that ignores it)."""
        return True

    def describe(self) -> dict[str, Any]:
        """Plain data for ``hf-time ls --json``."""
        return dict(name=self.name, kind=self.kind, summary=self.summary, paper=self.paper,
                    parameters=[dict(name=p.name, type=p.type, default=p.default, help=p.help, per_expert=p.per_expert,
                                     bounds=p.bounds) for p in self.parameters()])


@dataclass(frozen=True)
class DenseMethod(MethodSpec):
    """A method merging n experts onto θ_0, one tensor name at a time.

    Attributes:
        uses_base: θ_0 is an input (task-vector methods); also what makes LiNeS applicable.
        native_inputs: accepts floating inputs of any dtype (bf16 as stored) and computes in float32
            itself, so the engine skips converting its inputs (most of the work of memory-bound methods).
        elementwise: output entry k is a function of entry k of each input only (no shape, norm, rank,
            random draw or threshold over the tensor), so the engine may run ``fn`` on cache-sized
            slices of the flattened tensors and get the same bits as on whole tensors, ~3x faster.
        global_quantiles: ``(config, expert_params) -> fractions`` of |τ| a global magnitude
            threshold needs for one expert (empty: none, e.g. per-tensor scope).
    """

    kind: ClassVar[str] = "dense"
    uses_base: bool = True
    native_inputs: bool = False
    elementwise: bool = False
    global_quantiles: Callable[[Any, Mapping[str, Any]], tuple[float, ...]] | None = None

    @property
    def requires_base(self) -> bool:
        return self.uses_base

    @property
    def supports_lines(self) -> bool:
        """LiNeS scales the merged task vector θ − θ_0, which exists only for methods reading θ_0."""
        return self.uses_base


@dataclass(frozen=True)
class LowRankMethod(MethodSpec):
    """A method merging LoRA adapters module by module, in factor space.

    Attributes:
        output: ``adapter`` (a standard PEFT adapter: tensors ``A``/``B``) or ``rmm`` (a reversible snapshot).
        requires_equal_ranks: every adapter must have the same rank per module (checked from headers).
    """

    kind: ClassVar[str] = "lowrank"
    output: str = "adapter"
    requires_equal_ranks: bool = False


@dataclass(frozen=True)
class SequentialMethod(MethodSpec):
    """A method folding one new expert at a time into a running merge, in constant memory.

    Attributes:
        uses_base: θ_0 enters the formula (EMA from r_0 = θ_0, task vectors); False for averaging.
        state_keys: keys (besides ``method``, ``t``, ``params``) a previous fold's state must carry.
        two_pass: ``(config, t) -> bool``: fold t needs a global rescale (pass 1 writes S, pass 2 θ_0 + S/λ_t).
        next_state: ``(config, state, stats) -> (keys of the next state, divisor or None)``.
        check_state: ``(config, state) -> problems`` with an incoming state.
    """

    kind: ClassVar[str] = "sequential"
    uses_base: bool = True
    state_keys: tuple[str, ...] = ()
    two_pass: Callable[[Any, int], bool] | None = None
    next_state: Callable[[Any, Mapping[str, Any], Any], tuple[dict[str, Any], float | None]] | None = None
    check_state: Callable[[Any, Mapping[str, Any]], list[str]] | None = None


@dataclass(frozen=True)
class DataMethod(MethodSpec):
    """A method merging n full experts with per-parameter statistics each expert carries (data-aware).

    Attributes:
        uses_base: θ_0 enters the formula.
        statistic: the file in each expert's repo (or folder) holding its statistic, e.g. ``fisher.safetensors``.
        compute_hint: the command that computes a missing statistic (``{expert}`` is replaced).
    """

    kind: ClassVar[str] = "data"
    uses_base: bool = False
    statistic: str = ""
    compute_hint: str = ""

    @property
    def requires_base(self) -> bool:
        return self.uses_base


_SPEC_CLASSES: dict[str, type[MethodSpec]] = {"dense": DenseMethod, "lowrank": LowRankMethod, "sequential": SequentialMethod,
                                              "data": DataMethod}
_COMMON = {f.name for f in dataclasses.fields(MethodSpec)}
_REGISTRY: dict[str, MethodSpec] = {}


def _check_spec(spec: MethodSpec) -> None:
    """Registration-time checks of what a spec declares (raise ValueError naming the method)."""
    where = f"method {spec.name!r}"
    if spec.min_experts < 1 or (spec.max_experts is not None and spec.max_experts < spec.min_experts):
        raise ValueError(f"{where}: expert counts must satisfy 1 <= min_experts <= max_experts")
    if isinstance(spec, LowRankMethod):
        if spec.output not in OUTPUTS:
            raise ValueError(f"{where}: output must be one of {OUTPUTS}, got {spec.output!r}")
        if "strict" not in {f.attr for f in schema.fields(spec.config_cls)}:
            raise ValueError(f"{where}: a low-rank method's config declares a `strict` parameter")
    if isinstance(spec, SequentialMethod):
        if spec.two_pass is not None and spec.next_state is None:
            raise ValueError(f"{where}: a two-pass sequential method must define next_state (it gives the divisor)")
        if spec.uses_weights or spec.min_experts != 1 or spec.max_experts != 1:
            raise ValueError(f"{where}: a sequential method folds exactly one unweighted expert")
    if isinstance(spec, DataMethod) and not spec.statistic:
        raise ValueError(f"{where}: a data-aware method declares the statistic file its experts carry")


def register(name: str, *, kind: str, config: type, paper: str | None = None, **declared: Any) -> Callable:
    """Register a merge method under ``name`` (decorator). The function itself is returned unchanged.

    Args:
        name: lowercase snake case, unique.
        kind: ``dense``, ``lowrank``, ``sequential`` or ``data``.
        config: the frozen config dataclass (fields declared with :func:`param`).
        paper: link to the paper.
        **declared: the capabilities of that kind (fields of :class:`DenseMethod`,
            :class:`LowRankMethod`, :class:`SequentialMethod` or :class:`DataMethod`) and the common ones (``min_experts``,
            ``max_experts``, ``uses_weights``, ``check``).

    Raises:
        ValueError: a bad or taken name, an unknown kind, a capability the kind does not have, a
            config that is not a frozen dataclass, or inconsistent declarations.
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not _NAME_RE.match(name):
            raise ValueError(f"method name {name!r} must be lowercase snake_case")
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered (by {_REGISTRY[name].fn.__module__})")
        if kind not in _SPEC_CLASSES:
            raise ValueError(f"method {name!r}: kind must be one of {KINDS}, got {kind!r}")
        if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
            raise ValueError(f"method {name!r}: config {config!r} must be a frozen dataclass")
        cls = _SPEC_CLASSES[kind]
        allowed = {f.name for f in dataclasses.fields(cls)} - {"name", "fn", "config_cls", "paper", "summary"}
        extra = sorted(set(declared) - allowed)
        if extra:
            raise ValueError(f"method {name!r}: {kind} methods do not declare {', '.join(extra)} "
                             f"(valid: {', '.join(sorted(allowed))})")
        if kind == "sequential":
            declared.setdefault("uses_weights", False)
            declared.setdefault("max_experts", 1)
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        spec = cls(name=name, fn=fn, config_cls=config, paper=paper, summary=summary, **declared)
        _check_spec(spec)
        _REGISTRY[name] = spec
        return fn

    return decorator


def get(name: str) -> MethodSpec:
    """Look up a method by name.

    Raises:
        UnknownMethodError: with the closest name and the list of valid ones.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        valid = sorted(_REGISTRY)
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownMethodError(f"unknown merge method {name!r}{hint}; valid methods: {', '.join(valid)}") from None


def list_methods(kind: str | None = None) -> list[MethodSpec]:
    """All registered methods (optionally of one kind), sorted by kind then name."""
    specs = [s for s in _REGISTRY.values() if kind is None or s.kind == kind]
    return sorted(specs, key=lambda s: (KINDS.index(s.kind), s.name))
