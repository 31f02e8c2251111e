"""The lineage of every model folder hf_time writes: what was done, to which pinned inputs, with what.

:class:`Lineage` is the one typed record behind ``hf_time.json``; :meth:`Lineage.save` is the only
code that writes that file and :meth:`Lineage.load` the only code that reads it (older files are
upgraded on read). A lineage is built by the pipeline from the plan that was *executed*
(:mod:`hf_time.pipeline.artifact`), so it says what was done, never what was asked: an option the
method could not honour is refused before anything runs, and what ran is recorded with every
parameter resolved (defaults included).

Kinds (:data:`KINDS`): ``merge`` (a dense or low-rank merge), ``fold`` (a sequential merge of one
expert into a previous snapshot, with the method's state), ``revert`` (one expert rebuilt from an
RMM snapshot), ``train`` (an expert finetuned from an init model), ``moe`` (dense experts of one
base upcycled into a mixture-of-experts model), ``align`` (models of different inits: an expert
permuted into a reference's basis, or merged by ZipIt!/PLeaS; the permutations' digest in
``details``). A timeline snapshot is the lineage of the node it
deploys plus a ``timeline`` section (step, accuracy, metrics).

Parameters that varied per tensor are recorded as their schedules, in mergekit's YAML form
(gradient lists, ``{filter, value}`` lists), and an output assembled from layer ranges records its
``slices``: with :func:`hf_time.pipeline.tensor_values.tensor_values` the value every tensor got is
derived from the lineage alone, and :meth:`Lineage.merge_config` writes them back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hf_time import __version__
from hf_time.errors import ConfigError

LINEAGE_FILE = "hf_time.json"
SCHEMA_VERSION = 2
KINDS = ("merge", "fold", "revert", "train", "moe", "align")
# a transformers folder, a PEFT adapter, a reversible snapshot, a shared trunk with per-expert heads (ZipIt!, PLeaS)
FORMATS = ("model", "adapter", "rmm", "multihead")


@dataclass(frozen=True)
class RefRecord:
    """A model input as it was read: the reference as written and the commit it was pinned to.

    Attributes:
        ref: the reference as given (``org/name@v1``) or the absolute local folder.
        repo_id, revision, sha: the Hub repo, the revision asked for, the commit read (None locally).
    """

    ref: str
    repo_id: str | None = None
    revision: str | None = None
    sha: str | None = None

    @classmethod
    def from_resolved(cls, res: Any) -> "RefRecord":
        """From a :class:`hf_time.refs.ResolvedRef`."""
        ref = res.ref
        if ref.is_local:
            return cls(str(ref.path))
        return cls(str(ref), ref.repo_id, ref.revision, res.sha)

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    @property
    def pinned(self) -> str:
        """``org/name@<sha>`` for a Hub input, the folder for a local one."""
        return f"{self.repo_id}@{self.sha}" if self.repo_id and self.sha else self.ref

    @property
    def short_name(self) -> str:
        return (self.repo_id or self.ref).rstrip("/").split("/")[-1]


@dataclass(frozen=True)
class ExpertRecord(RefRecord):
    """An expert of a merge: its reference, weight, per-expert parameters and output-specific figures.

    ``weight`` and ``parameters`` values are numbers, or schedules in YAML form when they varied per tensor.
    """

    weight: float | list[Any] = 1.0
    parameters: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def ref_record(self) -> RefRecord:
        return RefRecord(self.ref, self.repo_id, self.revision, self.sha)


@dataclass(frozen=True)
class MethodRecord:
    """The method that ran, with every parameter resolved and the LiNeS scaling that was *applied*."""

    name: str
    kind: str
    summary: str = ""
    paper: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    lines: tuple[float, float] | None = None


@dataclass(frozen=True)
class OutputRecord:
    """What was written: the format, the sha256 of every weight file, dtype and device, and figures.

    ``details`` holds the format's own data (an RMM snapshot's module table and storage ratio, a
    merged adapter's per-module ranks and energies) that readers such as ``revert`` need.
    """

    format: str
    files: Mapping[str, str] = field(default_factory=dict)
    dtype: str | None = None
    device: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    """Everything ``hf_time.json`` says about one model folder.

    Attributes:
        kind: one of :data:`KINDS`.
        output: what was written.
        method: the merge method (None for ``train`` and ``revert``).
        base: θ_0 (the init model for ``train``).
        experts: the experts, in the order they were merged.
        previous: the snapshot a ``fold`` continued.
        source: the snapshot a ``revert`` read.
        state: a sequential method's state after this fold (what the next fold needs).
        details: kind-specific facts (``revert``: which expert; ``train``: task, training, stats).
        timeline: a timeline snapshot's section (step, node, accuracy matrix, metrics).
        evaluation: scores measured on this output, one mapping per (task, metric): ``task``, ``metric``,
            ``value`` and optionally ``dataset``, ``split``, ``n`` (examples); they go into the card's model-index.
        slices: an output assembled from layer ranges: per output slice its ``sources`` (``model``
            pinned, ``layer_range``, ``parameters``) and ``parameters``, in mergekit's YAML form.
        tokenizer: the output vocabulary's ``tokenizer_source`` (a model pinned) and ``chat_template``.
        hf_time_version, schema_version: who wrote it, in which format.
    """

    kind: str
    output: OutputRecord
    method: MethodRecord | None = None
    base: RefRecord | None = None
    experts: tuple[ExpertRecord, ...] = ()
    previous: RefRecord | None = None
    source: RefRecord | None = None
    state: Mapping[str, Any] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    timeline: Mapping[str, Any] | None = None
    evaluation: tuple[Mapping[str, Any], ...] = ()
    slices: tuple[Mapping[str, Any], ...] = ()
    tokenizer: Mapping[str, Any] | None = None
    hf_time_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"lineage kind must be one of {KINDS}, got {self.kind!r}")
        if self.output.format not in FORMATS:
            raise ValueError(f"output format must be one of {FORMATS}, got {self.output.format!r}")

    # -- derived views -------------------------------------------------------------------------
    def inputs(self) -> list[RefRecord]:
        """Every model this one was made from (base, experts, previous, source)."""
        out = [r for r in (self.base, self.previous, self.source) if r is not None]
        return out + [e.ref_record() for e in self.experts]

    def with_timeline(self, section: Mapping[str, Any]) -> "Lineage":
        return dataclasses.replace(self, timeline=dict(section))

    def with_evaluation(self, results: Sequence[Mapping[str, Any]]) -> "Lineage":
        """This lineage with ``results`` replacing earlier scores of the same (task, metric).

        Raises:
            ConfigError: a result without ``task``, ``metric`` or a finite numeric ``value``.
        """
        problems = [f"evaluation[{i}]: needs task, metric and a finite numeric value, got {dict(r)!r}"
                    for i, r in enumerate(results) if not _valid_score(r)]
        if problems:
            raise ConfigError.from_problems("invalid evaluation results", problems)
        new = {(r["task"], r["metric"]): dict(r) for r in results}
        kept = [e for e in self.evaluation if (e["task"], e["metric"]) not in new]
        return dataclasses.replace(self, evaluation=tuple(kept) + tuple(new.values()))

    @property
    def node_key(self) -> str | None:
        """The content key of the timeline node this lineage describes (None: not a timeline node)."""
        return ((self.timeline or {}).get("node") or {}).get("key")

    def merge_config(self) -> dict[str, Any] | None:
        """The mergekit-style YAML that reproduces this merge from pinned inputs (None if not a merge).

        Parameters are the resolved ones (defaults included), so the file means the same thing under
        a later hf_time whose defaults differ.
        """
        if self.kind == "moe" and self.base is not None:  # the mergekit-moe YAML: `hf-time moe` reruns it
            def entry(e: ExpertRecord) -> dict[str, Any]:
                return {"source_model": e.pinned, **dict(e.parameters)}

            config = {k: v for k, v in (self.details.get("config") or {}).items() if v is not None}
            shared = [entry(e) for e in self.experts if e.details.get("role") == "shared"]
            return {"base_model": self.base.pinned, **config,
                    "experts": [entry(e) for e in self.experts if e.details.get("role") != "shared"],
                    **({"shared_experts": shared} if shared else {})}
        if self.kind not in ("merge", "fold") or self.method is None or self.base is None:
            return None
        data: dict[str, Any] = {"merge_method": self.method.name, "base_model": self.base.pinned}
        if self.slices:
            data["slices"] = [dict(s) for s in self.slices]
        else:
            data["models"] = [{"model": e.pinned, "parameters": {"weight": e.weight, **dict(e.parameters)}}
                              for e in self.experts]
        if self.tokenizer:
            data.update(self.tokenizer)
        if self.details.get("align"):  # experts aligned to the base first (hf-time merge --align)
            data["align"] = dict(self.details["align"])
        if self.previous is not None:
            data["previous"] = self.previous.pinned
        if self.method.parameters:
            data["parameters"] = dict(self.method.parameters)
        if self.output.dtype:
            data["dtype"] = self.output.dtype
        if self.method.lines:
            data["lines"] = {"alpha": self.method.lines[0], "beta": self.method.lines[1]}
        return data

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = LINEAGE_FILE) -> "Lineage":
        """Read a lineage (any schema version this hf_time knows; older ones are upgraded).

        Raises:
            ConfigError: not an hf_time lineage, or a newer schema than this version reads.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source} is not an hf_time lineage (expected a JSON object)")
        version = data.get("schema_version", 1)
        if version == 1:
            from hf_time.lineage_v1 import upgrade

            data = upgrade(data, source)
        elif version != SCHEMA_VERSION:
            raise ConfigError(f"{source} has lineage schema {version!r}; this hf_time reads up to {SCHEMA_VERSION}: "
                              "upgrade hf_time")
        try:
            experts = tuple(ExpertRecord(**e) for e in data.get("experts") or ())
            method = data.get("method")
            return cls(
                kind=data["kind"], output=OutputRecord(**data["output"]),
                method=None if method is None else MethodRecord(**{**method, "lines": _pair(method.get("lines"))}),
                base=_ref(data.get("base")), experts=experts, previous=_ref(data.get("previous")),
                source=_ref(data.get("source")), state=data.get("state"), details=data.get("details") or {},
                timeline=data.get("timeline"), evaluation=tuple(data.get("evaluation") or ()),
                slices=tuple(data.get("slices") or ()), tokenizer=data.get("tokenizer"),
                hf_time_version=data.get("hf_time_version", "?"),
                schema_version=SCHEMA_VERSION)
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field of the wrong JSON type
            raise ConfigError(f"{source} is not a valid hf_time lineage ({type(e).__name__}: {e})") from None

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``hf_time.json`` into ``folder`` (the only writer of that file). Returns its path."""
        path = Path(folder) / LINEAGE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Lineage | None":
        """The lineage of a model folder, or None when it has no ``hf_time.json``."""
        path = Path(folder) / LINEAGE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); delete it or restore it from the Hub") from None
        return cls.from_dict(data, str(path))


def node_section(repo: str, kind: str, step: int, key: str) -> dict[str, Any]:
    """The ``timeline`` section of a timeline node's lineage: which timeline, which node, under which key.

    ``kind`` is the node's kind in the timeline's DAG (``base``, ``expert``, ``chain``, ``merge_all``).
    """
    return {"repo": repo, "node": {"kind": kind, "step": step, "key": key}}


def _valid_score(r: Any) -> bool:
    import math

    value = r.get("value") if isinstance(r, Mapping) else None
    return (isinstance(r, Mapping) and isinstance(r.get("task"), str) and isinstance(r.get("metric"), str)
            and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def _ref(data: Mapping[str, Any] | None) -> RefRecord | None:
    return None if data is None else RefRecord(**{k: data.get(k) for k in ("ref", "repo_id", "revision", "sha")})


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))
