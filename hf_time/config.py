"""Typed merge configs, from Python, the CLI, or YAML (hf_time's or mergekit's).

The YAML schema is mergekit's (``merge_method``, ``base_model``, ``models: [{model, parameters}]``,
``parameters``, ``dtype``) plus a few hf_time keys (``device``, ``lines``, ``out``, ``push_to``,
``tag``), so an existing mergekit config works unchanged for the methods both tools share. Unknown
keys are rejected and every problem is reported at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from hf_time.errors import ConfigError

logger = logging.getLogger(__name__)

_TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "device", "lines", "out", "push_to",
             "tag", "tokenizer_source", "name", "out_dtype", "previous"}
_MODEL_KEYS = {"model", "parameters"}
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
        """The mergekit-compatible YAML form (used in model cards so a merge can be reproduced)."""
        d: dict[str, Any] = {"merge_method": self.method, "base_model": self.base, "models": []}
        for e in self.experts:
            p = {"weight": e.weight, **dict(e.params)}
            d["models"].append({"model": e.ref, "parameters": p})
        if self.params:
            d["parameters"] = dict(self.params)
        if self.dtype:
            d["dtype"] = self.dtype
        if self.lines:
            d["lines"] = {"alpha": self.lines[0], "beta": self.lines[1]}
        if self.previous:
            d["previous"] = self.previous
        return d


def _scalar(value: Any, where: str, problems: list[str]) -> Any:
    # mergekit allows per-filter lists and layer gradients; hf_time takes one value per parameter.
    if isinstance(value, (list, dict)):
        problems.append(
            f"{where}: per-tensor filters and layer gradients are not supported ({value!r}); use a single value"
        )
        return None
    return value


def merge_config_from_dict(data: Mapping[str, Any], source: str = "config") -> MergeConfig:
    """Build a :class:`MergeConfig` from a parsed YAML mapping, reporting every problem at once.

    Raises:
        ConfigError: with one entry in ``problems`` per bad key or value.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(f"unknown key {key!r} (valid: {', '.join(sorted(_TOP_KEYS))})")
    if "slices" in data:
        problems.append("'slices' (layer-range merges) is not supported; list whole models under 'models'")
    method = data.get("merge_method")
    if not isinstance(method, str):
        problems.append("'merge_method' is required (e.g. 'ties'); see `hf-time ls`")
    base = data.get("base_model")
    if base is not None and not isinstance(base, str):
        problems.append(f"'base_model' must be a model reference string, got {base!r}")
    if data.get("tokenizer_source") not in (None, "base"):
        problems.append("'tokenizer_source': only 'base' is supported (the base's tokenizer is carried over)")
    global_params = dict(data.get("parameters") or {})
    default_weight = global_params.pop("weight", 1.0)
    for key in _IGNORED_PARAMS & set(global_params):
        global_params.pop(key)
        logger.info("ignoring mergekit parameter %r (no effect on the result in hf_time)", key)
    for k, v in list(global_params.items()):
        global_params[k] = _scalar(v, f"parameters.{k}", problems)
    experts: list[ExpertSpec] = []
    models = data.get("models")
    if not isinstance(models, list) or not models:
        problems.append("'models' must be a non-empty list of {model: REF, parameters: {...}}")
        models = []
    for i, entry in enumerate(models):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or "model" not in entry:
            problems.append(f"models[{i}] must be a mapping with a 'model' key, got {entry!r}")
            continue
        for key in entry:
            if key not in _MODEL_KEYS:
                problems.append(f"models[{i}]: unknown key {key!r} (valid: model, parameters)")
        ref = entry["model"]
        params = dict(entry.get("parameters") or {})
        weight = _scalar(params.pop("weight", default_weight), f"models[{i}].parameters.weight", problems)
        try:
            weight = float(weight) if weight is not None else 1.0
        except (TypeError, ValueError):
            problems.append(f"models[{i}].parameters.weight must be a number, got {weight!r}")
            weight = 1.0
        for k, v in list(params.items()):
            params[k] = _scalar(v, f"models[{i}].parameters.{k}", problems)
        # mergekit lists the base among the models for task-vector methods; its task vector is zero
        # and mergekit skips it, so drop it here (it stays an expert for `linear`).
        if ref == base and method not in ("linear",):
            continue
        experts.append(ExpertSpec(ref=str(ref), weight=weight, params=params))
    lines = data.get("lines")
    lines_t = None
    if lines is not None:
        if not (isinstance(lines, Mapping) and set(lines) <= {"alpha", "beta"}):
            problems.append(f"'lines' must be a mapping {{alpha: A, beta: B}}, got {lines!r}")
        else:
            lines_t = (float(lines.get("alpha", 0.5)), float(lines.get("beta", 0.5)))
    if base is None and method not in (None, "linear"):
        problems.append(f"'base_model' is required for {method!r}")
    if problems:
        raise ConfigError.from_problems(f"invalid merge config {source}", problems)
    dtype = data.get("dtype") or data.get("out_dtype")
    return MergeConfig(
        base=str(base) if base is not None else experts[0].ref,
        experts=tuple(experts),
        method=method,
        params=global_params,
        dtype=dtype,
        device=str(data.get("device", "cpu")),
        lines=lines_t,
        previous=data.get("previous"),
        out=data.get("out"),
        push_to=data.get("push_to"),
        tag=data.get("tag"),
    )


def load_merge_config(path: str | os.PathLike) -> MergeConfig:
    """Read a merge config YAML file (hf_time or mergekit style).

    Raises:
        ConfigError: unreadable YAML or invalid content (all problems listed).
    """
    return merge_config_from_dict(read_yaml(path, "merge config"), source=os.fspath(path))


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file; a missing file or bad YAML becomes a ConfigError naming ``what`` and the path."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} {os.fspath(path)!r} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {os.fspath(path)!r} is not valid YAML: {e}") from None
