"""Slices: an output model assembled from layer ranges of input models, as mergekit's ``slices`` key says.

``slices: [{sources: [{model, layer_range: [a, b], parameters}], parameters}]``: output slice k holds
``b − a`` layers; layer i of it is the merge (by the config's method) of layer ``a + i`` of each of
its sources. Slices are stacked in order, so the output has the sum of their lengths as its layer
count: with ``passthrough`` and one source per slice this is layer stacking ("frankenmerges"); with
two sources and ``slerp`` it is a merge restricted to (and possibly reordering) layer ranges.

This module holds the typed form of the key (declared with :func:`hf_time.schema.field`, read with
the rest of the merge YAML) and the checks that need no model: ranges in order, sources of a slice
agreeing in length. Ranges are checked against each model's layer count once its config is read
(:mod:`hf_time.pipeline.layout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hf_time import schema
from hf_time.errors import ConfigError


@dataclass(frozen=True)
class SliceSource:
    """One source of an output slice: layers ``[start, end)`` of a model, with its own parameters."""

    model: str = schema.field(help="org/name[@rev] or a folder")
    layer_range: tuple[int, ...] = schema.field(help="[start, end]: the layers start..end-1 of that model")
    parameters: Mapping[str, Any] = schema.field(default_factory=dict, help="its weight and per-model parameters")

    def __post_init__(self) -> None:
        r = self.layer_range
        if len(r) != 2:
            raise ConfigError(f"layer_range must be [start, end], two layer indices, got {list(r)}")
        if r[0] < 0 or r[1] <= r[0]:
            raise ConfigError(f"layer_range must satisfy 0 <= start < end (end excluded), got {list(r)}")

    @property
    def length(self) -> int:
        return self.layer_range[1] - self.layer_range[0]


@dataclass(frozen=True)
class OutputSlice:
    """One output slice: its sources (merged layer by layer) and parameters for this slice only."""

    sources: tuple[SliceSource, ...] = schema.field(help="[{model, layer_range, parameters}]")
    parameters: Mapping[str, Any] = schema.field(default_factory=dict, help="parameters of this slice")

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("sources must list at least one {model, layer_range}")

    @property
    def length(self) -> int:
        return self.sources[0].length


def check_lengths(slices: Sequence[OutputSlice], problems: list[str], path: str = "slices") -> None:
    """Every source of a slice gives the same number of layers (layer i of the slice merges one from each)."""
    for k, s in enumerate(slices):
        lengths = [src.length for src in s.sources]
        if len(set(lengths)) > 1:
            parts = ", ".join(f"{src.model} {list(src.layer_range)} ({src.length})" for src in s.sources)
            problems.append(f"{path}[{k}]: its sources disagree in length: {parts}; every source of a slice gives the "
                            "same number of layers")


def slice_models(slices: Sequence[OutputSlice]) -> list[str]:
    """The distinct models of ``slices``, in order of first appearance."""
    return list(dict.fromkeys(src.model for s in slices for src in s.sources))


def from_data(data: Any, problems: list[str], path: str = "slices") -> tuple[OutputSlice, ...] | None:
    """Typed slices from plain data (the Python API's dicts), problems recorded with key paths."""
    if not isinstance(data, (list, tuple)) or not data:
        problems.append(f"{path}: expected a non-empty list of {{sources: [...]}}")
        return None
    out = []
    for k, entry in enumerate(data):
        if isinstance(entry, OutputSlice):
            out.append(entry)
            continue
        built = schema.build(OutputSlice, entry, path=f"{path}[{k}]", problems=problems)
        if built is not None:
            out.append(built)
    return tuple(out) if len(out) == len(data) else None


def to_data(slices: Sequence[OutputSlice]) -> list[dict[str, Any]]:
    """The YAML form of ``slices``."""
    out = []
    for s in slices:
        entry: dict[str, Any] = {"sources": [{"model": src.model, "layer_range": list(src.layer_range),
                                              **({"parameters": dict(src.parameters)} if src.parameters else {})}
                                             for src in s.sources]}
        if s.parameters:
            entry["parameters"] = dict(s.parameters)
        out.append(entry)
    return out
