"""Typed merge requests, from Python, the CLI, or YAML (hf_time's or mergekit's).

The YAML schema is mergekit's (``merge_method``, ``base_model``, ``models: [{model, parameters}]`` or
``slices: [{sources: [{model, layer_range, parameters}]}]``, ``parameters``, ``dtype``,
``tokenizer_source``, ``chat_template``) plus a few hf_time keys (``device``, ``lines``, ``previous``,
``out``, ``push_to``, ``tag``), declared once as :class:`MergeFile` with :func:`hf_time.schema.field`,
the same mechanism that declares method parameters and the timeline YAML. Any parameter may be a
gradient or a filter list (:mod:`hf_time.schedules`); values are kept as written in the request
and checked by the plan. Loading reports every problem at once, each with its key path: unknown
keys (with the closest valid one), wrong types, and — when the method is known — its parameters
and per-model parameters (``lamda``, ``models[1].parameters.densty``, ``parameters.t[1].filtr``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from hf_time import schema
from hf_time.align.config import MatchingConfig, to_data
from hf_time.errors import ConfigError, UnknownMethodError
from hf_time.schedules import is_setting, parse
from hf_time.slices import OutputSlice, slice_models
from hf_time.slices import to_data as slices_to_data

logger = logging.getLogger(__name__)

# mergekit knobs that change memory use, not results: accepted so mergekit configs run unchanged.
_IGNORED_PARAMS = {"int8_mask"}


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: a reference plus its weight and per-expert method parameters (e.g. density).

    ``weight`` and the parameters may be gradients or filter lists, as mergekit writes them.
    """

    ref: str
    weight: float | list[Any] = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeConfig:
    """A complete, reproducible description of one merge.

    Attributes:
        base: reference of θ_0 (``org/name[@rev]`` or a folder).
        experts: the experts, in order.
        method: registry name.
        params: method parameters by public name (``density``, ``lambda``...): values, gradients
            (``[0, 0.5, 1]``) or filter lists (``[{filter: mlp, value: 0.3}, {value: 0.5}]``); with
            ``slices`` also a default ``weight``.
        slices: the output assembled from layer ranges (None: whole models); ``experts`` then lists
            the models the slices merge (the base excluded for methods reading θ_0).
        tokenizer_source: ``base``, ``union`` or a model reference: the output's vocabulary, with the
            embeddings of every input aligned to it (None: the base's files are carried over as they are).
        chat_template: a Jinja chat template for the output tokenizer (None: the carried one).
        align: align each full expert to the base before merging (models of different inits; None: no).
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
    slices: tuple[OutputSlice, ...] | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    align: MatchingConfig | None = None

    def to_yaml_dict(self) -> dict[str, Any]:
        """The mergekit-compatible YAML form (the inverse of :func:`merge_config_from_dict`)."""
        d: dict[str, Any] = {"merge_method": self.method, "base_model": self.base}
        if self.slices:
            d["slices"] = slices_to_data(self.slices)
        else:
            d["models"] = [{"model": e.ref, "parameters": {"weight": e.weight, **dict(e.params)}}
                           for e in self.experts]
        if self.params:
            d["parameters"] = dict(self.params)
        if self.tokenizer_source:
            d["tokenizer_source"] = self.tokenizer_source
        if self.chat_template:
            d["chat_template"] = self.chat_template
        if self.dtype:
            d["dtype"] = self.dtype
        if self.lines:
            d["lines"] = {"alpha": self.lines[0], "beta": self.lines[1]}
        if self.previous:
            d["previous"] = self.previous
        if self.align:
            d["align"] = to_data(self.align)
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
    models: tuple[ModelEntry | str, ...] | None = schema.field(None, "the experts: [{model: REF, parameters: {...}}]")
    slices: tuple[OutputSlice, ...] | None = schema.field(
        None, "instead of models: [{sources: [{model, layer_range: [a, b], parameters}], parameters}]")
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
    tokenizer_source: str | None = schema.field(None, "the output vocabulary: base, union, or a model reference")
    chat_template: str | None = schema.field(None, "a Jinja chat template for the output tokenizer")
    name: str | None = schema.field(None, "a name for the merge (informational)")
    align: MatchingConfig | None = schema.field(None, "align each expert to the base first (models of different "
                                                "inits): {method: weight|activation, task: [...], ...}")


# mergekit slice keys hf_time does not run, with the reason (a clear line instead of "unknown key").
_REFUSED_SLICE_KEYS = {
    "base_model": "a per-slice base model is not supported; give one base_model for the whole merge",
    "residual_weight": "residual_weight is not supported (mergekit documents no semantics for it)",
}


def _refuse_slice_keys(data: dict, problems: list[str]) -> None:
    for k, entry in enumerate(data.get("slices") or []):
        if isinstance(entry, Mapping):
            for key, why in _REFUSED_SLICE_KEYS.items():
                if key in entry:
                    problems.append(f"slices[{k}].{key}: {why}")
            data["slices"][k] = {key: v for key, v in entry.items() if key not in _REFUSED_SLICE_KEYS}


def _chain_weight(own: Any, default: Any, where: str, problems: list[str]) -> Any:
    """An expert's weight as written, falling back to the global ``weight`` where its filters match nothing."""
    if own is None:
        return default
    if not is_setting(own):
        return own
    mine = parse(own, where, problems)
    if mine is None or mine.rules[-1].filter is None or not (is_setting(default) or default != 1.0):
        return own
    theirs = parse(default, "parameters.weight", problems)
    return own if theirs is None else mine.then(theirs).to_data()


def merge_config_from_dict(data: Any, source: str = "config") -> MergeConfig:
    """Build a :class:`MergeConfig` from a parsed YAML mapping, reporting every problem at once.

    Raises:
        ConfigError: with one entry in ``problems`` per bad key or value, each with its key path.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    if isinstance(data.get("slices"), list):
        data["slices"] = list(data["slices"])
        _refuse_slice_keys(data, problems)
    parsed = schema.read(MergeFile, data, problems=problems)
    if "merge_method" not in data:
        problems.append("merge_method: required (e.g. 'ties'; see `hf-time ls`)")
    if ("models" in data) == ("slices" in data):
        problems.append("models: required (a non-empty list of {model: REF, parameters: {...}}), or slices instead"
                        if "models" not in data else "models, slices: give one of them, not both")
    method, base = parsed.get("merge_method"), parsed.get("base_model")
    spec = _spec(method, problems)
    params = dict(parsed.get("parameters") or {})
    for key in _IGNORED_PARAMS & set(params):
        params.pop(key)
        logger.info("ignoring mergekit parameter %r (no effect on the result in hf_time)", key)
    slices = parsed.get("slices")
    experts: list[ExpertSpec] = []
    positions: list[int] = []
    if slices is not None:
        base, experts = slice_inputs(spec, base, slices)
    else:
        default_weight = params.pop("weight", 1.0)
        models = parsed.get("models")
        if "models" in parsed and not models:
            problems.append("models: must list at least one model")
        for i, entry in enumerate(models or ()):
            entry = ModelEntry(model=entry) if isinstance(entry, str) else entry
            own = dict(entry.parameters)
            weight = _chain_weight(own.pop("weight", None), default_weight, f"models[{i}].parameters.weight", problems)
            if isinstance(weight, bool) or not isinstance(weight, (int, float, list, tuple, Mapping)):
                problems.append(f"models[{i}].parameters.weight: expected a number, got {weight!r}")
                weight = 1.0
            # mergekit lists the base among the models for task-vector methods; its task vector is zero
            # and mergekit skips it, so drop it here (it stays an expert for `linear`).
            if entry.model == base and method != "linear":
                continue
            experts.append(ExpertSpec(ref=entry.model, weight=weight, params=own))
            positions.append(i)
    if spec is not None:
        _check_method(spec, base, params, experts, positions, slices, problems)
    if problems:
        raise ConfigError.from_problems(f"invalid merge config {source}", problems)
    lines = parsed.get("lines")
    return MergeConfig(
        base=base if base is not None else experts[0].ref, experts=tuple(experts), method=method, params=params,
        dtype=parsed.get("dtype") or parsed.get("out_dtype"), device=parsed.get("device", "cpu"),
        lines=None if lines is None else (lines.alpha, lines.beta), previous=parsed.get("previous"),
        out=parsed.get("out"), push_to=parsed.get("push_to"), tag=parsed.get("tag"), slices=slices,
        tokenizer_source=parsed.get("tokenizer_source"), chat_template=parsed.get("chat_template"),
        align=parsed.get("align"))


def slice_inputs(spec, base: str | None, slices) -> tuple[str, list[ExpertSpec]]:
    """The base and experts of a merge given by ``slices``: the base (default: the first model) and every
    other model in order of first appearance; a method that ignores θ_0 merges the base's layers too."""
    models = slice_models(slices)
    base = base if base is not None else models[0]
    reads_base = spec is None or spec.requires_base
    return base, [ExpertSpec(ref=m) for m in models if not (reads_base and m == base)]


def _spec(method: str | None, problems: list[str]):
    if method is None:
        return None
    from hf_time.merges import get

    try:
        return get(method)
    except UnknownMethodError as e:
        problems.append(f"merge_method: {e}")
        return None


def _check_method(spec, base: str | None, params: Mapping[str, Any], experts: list[ExpertSpec],
                  positions: list[int], slices, problems: list[str]) -> None:
    """The method's own checks on the file's parameters, so a typo anywhere shows up in the same error."""
    from hf_time.pipeline.tensor_params import plan_tensor_params

    if base is None and spec.requires_base:
        problems.append(f"base_model: required for {spec.name!r}")
    split = plan_tensor_params(spec, params, base or "", experts, slices, problems,
                               where=lambda i: f"models[{positions[i]}].parameters")
    spec.collect_config(split.params, problems, path="parameters")
    if slices is None:  # with slices, each source's parameters were checked with the slices
        spec.collect_expert_params(split.expert_params, problems, path=lambda i: f"models[{positions[i]}].parameters")


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
