"""Typed merge requests, from Python, the CLI, or YAML (hf_time's or mergekit's).

The YAML schema is mergekit's (``merge_method``, ``base_model``, ``models: [{model, parameters}]``,
``parameters``, ``dtype``) plus a few hf_time keys (``device``, ``lines``, ``previous``, ``out``,
``push_to``, ``tag``), declared once as :class:`MergeFile` with :func:`hf_time.schema.field`, the
same mechanism that declares method parameters and the timeline YAML. Loading reports every problem
at once, each with its key path: unknown keys (with the closest valid one), wrong types, and — when
the method is known — its parameters and per-model parameters (``lamda``, ``models[1].parameters.densty``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from hf_time import schema
from hf_time.errors import ConfigError, UnknownMethodError

logger = logging.getLogger(__name__)

# mergekit knobs that change memory use, not results: accepted so mergekit configs run unchanged.
_IGNORED_PARAMS = {"int8_mask"}


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: a reference plus its weight and per-expert method parameters (e.g. density)."""

    ref: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeConfig:
    """A complete, reproducible description of one merge.

    Attributes:
        base: reference of θ_0 (``org/name[@rev]`` or a folder).
        experts: the experts, in order.
        method: registry name.
        params: method parameters by public name (``density``, ``lambda``...).
        dtype: output dtype of floating tensors (None keeps the base's).
        device: where to compute.
        lines: (alpha, beta) LiNeS layer scaling, or None.
        previous: the snapshot a sequential method continues (None at its first step).
        out, push_to, tag: where the result goes.
    """

    base: str
    experts: tuple[ExpertSpec, ...]
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    device: str = "cpu"
    lines: tuple[float, float] | None = None
    previous: str | None = None
    out: str | None = None
    push_to: str | None = None
    tag: str | None = None

    def to_yaml_dict(self) -> dict[str, Any]:
        """The mergekit-compatible YAML form (the inverse of :func:`merge_config_from_dict`)."""
        d: dict[str, Any] = {"merge_method": self.method, "base_model": self.base, "models": []}
        for e in self.experts:
            d["models"].append({"model": e.ref, "parameters": {"weight": e.weight, **dict(e.params)}})
        if self.params:
            d["parameters"] = dict(self.params)
        if self.dtype:
            d["dtype"] = self.dtype
        if self.lines:
            d["lines"] = {"alpha": self.lines[0], "beta": self.lines[1]}
        if self.previous:
            d["previous"] = self.previous
        return d


# -- the YAML file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """One entry of ``models``."""

    model: str = schema.field(help="an expert: org/name[@rev] or a folder")
    parameters: Mapping[str, Any] = schema.field(default_factory=dict, help="its weight and per-expert parameters")


@dataclass(frozen=True)
class LinesEntry:
    """LiNeS layer scaling of the merged task vector: alpha + beta·ℓ/(L−1) for block ℓ of L."""

    alpha: float = schema.field(0.5, "scale of the first block and of parameters outside the blocks")
    beta: float = schema.field(0.5, "growth of the scale from the first block to the last")


@dataclass(frozen=True)
class MergeFile:
    """A merge config file, as written (mergekit's keys plus hf_time's)."""

    merge_method: str = schema.field(help="registry method (`hf-time ls`)")
    models: tuple[ModelEntry | str, ...] = schema.field(help="the experts: [{model: REF, parameters: {...}}]")
    base_model: str | None = schema.field(None, "θ_0: org/name[@rev] or a folder")
    parameters: Mapping[str, Any] = schema.field(default_factory=dict, help="method parameters")
    dtype: str | None = schema.field(None, "output dtype of floating tensors")
    out_dtype: str | None = schema.field(None, "mergekit's name for dtype")
    device: str = schema.field("cpu", "where to compute: cpu or cuda[:i]")
    lines: LinesEntry | None = schema.field(None, "LiNeS scaling {alpha, beta} (task-vector methods)")
    previous: str | None = schema.field(None, "sequential methods: the snapshot the previous fold wrote")
    out: str | None = schema.field(None, "output folder")
    push_to: str | None = schema.field(None, "Hub repo to publish to")
    tag: str | None = schema.field(None, "tag of the published commit")
    tokenizer_source: str | None = schema.field(None, "only 'base': the base's tokenizer is carried over")
    name: str | None = schema.field(None, "a name for the merge (informational)")


def _scalars(values: Mapping[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Parameters with one value each; mergekit's per-layer gradients and per-tensor filters are refused."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (list, dict)):
            problems.append(f"{schema.key_path(where, key)}: per-tensor filters and layer gradients are not supported "
                            f"({value!r}); use a single value")
        else:
            out[key] = value
    return out


def merge_config_from_dict(data: Any, source: str = "config") -> MergeConfig:
    """Build a :class:`MergeConfig` from a parsed YAML mapping, reporting every problem at once.

    Raises:
        ConfigError: with one entry in ``problems`` per bad key or value, each with its key path.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    if "slices" in data:
        data.pop("slices")
        problems.append("slices: layer-range merges are not supported; list whole models under 'models'")
    parsed = schema.read(MergeFile, data, problems=problems)
    for key in ("merge_method", "models"):
        if key not in data:
            problems.append(f"{key}: required" + (" (e.g. 'ties'; see `hf-time ls`)" if key == "merge_method" else
                                                 " (a non-empty list of {model: REF, parameters: {...}})"))
    method, base = parsed.get("merge_method"), parsed.get("base_model")
    if parsed.get("tokenizer_source") not in (None, "base"):
        problems.append("tokenizer_source: only 'base' is supported (the base's tokenizer is carried over)")
    params = dict(parsed.get("parameters") or {})
    default_weight = params.pop("weight", 1.0)
    for key in _IGNORED_PARAMS & set(params):
        params.pop(key)
        logger.info("ignoring mergekit parameter %r (no effect on the result in hf_time)", key)
    params = _scalars(params, "parameters", problems)
    experts: list[ExpertSpec] = []
    positions: list[int] = []
    models = parsed.get("models")
    if "models" in parsed and not models:
        problems.append("models: must list at least one model")
    for i, entry in enumerate(models or ()):
        entry = ModelEntry(model=entry) if isinstance(entry, str) else entry
        own = dict(entry.parameters)
        weight = own.pop("weight", default_weight)
        own = _scalars(own, f"models[{i}].parameters", problems)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            problems.append(f"models[{i}].parameters.weight: expected a number, got {weight!r}")
            weight = 1.0
        # mergekit lists the base among the models for task-vector methods; its task vector is zero
        # and mergekit skips it, so drop it here (it stays an expert for `linear`).
        if entry.model == base and method != "linear":
            continue
        experts.append(ExpertSpec(ref=entry.model, weight=float(weight), params=own))
        positions.append(i)
    _check_method(method, base, params, experts, positions, problems)
    if problems:
        raise ConfigError.from_problems(f"invalid merge config {source}", problems)
    lines = parsed.get("lines")
    return MergeConfig(
        base=base if base is not None else experts[0].ref, experts=tuple(experts), method=method, params=params,
        dtype=parsed.get("dtype") or parsed.get("out_dtype"), device=parsed.get("device", "cpu"),
        lines=None if lines is None else (lines.alpha, lines.beta), previous=parsed.get("previous"),
        out=parsed.get("out"), push_to=parsed.get("push_to"), tag=parsed.get("tag"))


def _check_method(method: str | None, base: str | None, params: Mapping[str, Any], experts: list[ExpertSpec],
                  positions: list[int], problems: list[str]) -> None:
    """The method's own checks on the file's parameters, so a typo anywhere shows up in the same error."""
    if method is None:
        return
    from hf_time.merges import get

    try:
        spec = get(method)
    except UnknownMethodError as e:
        problems.append(f"merge_method: {e}")
        return
    if base is None and spec.requires_base:
        problems.append(f"base_model: required for {method!r}")
    spec.collect_config(params, problems, path="parameters")
    spec.collect_expert_params([e.params for e in experts], problems,
                               path=lambda i: f"models[{positions[i]}].parameters")


def load_merge_config(path: str | os.PathLike) -> MergeConfig:
    """Read a merge config YAML file (hf_time or mergekit style).

    Raises:
        ConfigError: unreadable YAML or invalid content (all problems listed).
    """
    return merge_config_from_dict(read_yaml(path, "merge config"), source=os.fspath(path))


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file; a missing file, bad YAML or binary content becomes a ConfigError naming the path."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} {os.fspath(path)!r} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {os.fspath(path)!r} is a folder; give the YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {os.fspath(path)!r} is not a text file (YAML expected)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {os.fspath(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
