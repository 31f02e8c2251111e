"""The resolve stage: every reference pinned to a commit and checked from metadata, nothing downloaded.

For each input (base, experts, previous snapshot) this reads only what is small: the file list,
``config.json``, safetensors headers (HTTP range requests on the Hub), ``hf_time.json`` of a previous
snapshot and the files of LoRA adapters (their factors are small). Architecture, tensor names and
shapes are checked here, so a wrong expert costs kilobytes, not gigabytes. Pickle-only inputs have
no headers: they are checked after download, by the executor.

A caller that already holds a pinned input on disk (the timeline's node cache) passes it in
``local``: the lineage still records the Hub reference and its commit, and the files are read from
that folder instead of the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from hf_time.compat import check_compatible
from hf_time.config import MergeConfig
from hf_time.errors import ConfigError, InvalidReferenceError
from hf_time.hub import Hub, require_weights
from hf_time.io import TensorInfo
from hf_time.lineage import Lineage
from hf_time.lowrank.adapters import LoraAdapter
from hf_time.lowrank.sources import check_adapters, open_lora_experts
from hf_time.merges import DataMethod, LowRankMethod
from hf_time.pipeline.plan import Plan
from hf_time.refs import ModelRef, ResolvedRef, parse_ref

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInput:
    """One input model, pinned, with what is known about it before any weight is downloaded.

    Attributes:
        res: the reference as recorded in the lineage (a Hub ref with its commit sha, or a folder).
        read: where its files are read from: ``res`` itself, or a local copy of that same commit.
        files: its file paths.
        hf_config: its ``config.json`` (None if absent).
        infos: tensor names, dtypes and shapes from safetensors headers (None: pickle-only, or an adapter).
        adapter: the opened PEFT adapter when the input is one (its factors are read lazily).
        lineage: its ``hf_time.json`` when it has one (a previous snapshot's state lives there).
        statistic: for a data-aware merge, the expert's statistic file as read from its header (metadata,
            tensor infos) and the content ids of its weight files now; None when it has none.
    """

    res: ResolvedRef
    read: ResolvedRef
    files: tuple[str, ...] = ()
    hf_config: Mapping | None = None
    infos: Mapping[str, TensorInfo] | None = None
    adapter: LoraAdapter | None = None
    lineage: Lineage | None = None
    statistic: Mapping | None = None

    @property
    def name(self) -> str:
        return str(self.res.ref)


@dataclass(frozen=True)
class Inputs:
    """The resolved inputs of one merge.

    Attributes:
        base, experts, previous: the inputs (``previous`` only for a sequential fold).
        targets: per expert, the adapted module path -> base tensor name (None for a full model, or
            when the base has no headers yet: then the executor maps it after download).
    """

    base: ModelInput
    experts: tuple[ModelInput, ...]
    previous: ModelInput | None = None
    targets: tuple[Mapping[str, str] | None, ...] = field(default_factory=tuple)

    @property
    def headers_known(self) -> bool:
        """Whether every full-model input was checked from its headers (False: a pickle-only input)."""
        full = [self.base, self.previous, *(e for e in self.experts if e.adapter is None)]
        return all(m.infos is not None for m in full if m is not None)

    def full_models(self) -> list[ModelInput]:
        """The inputs compared tensor by tensor with the base: full experts and the previous snapshot."""
        return [e for e in self.experts if e.adapter is None] + ([self.previous] if self.previous else [])


def pin(hub: Hub, text: str, local: Mapping[str, Path] | None = None) -> tuple[ResolvedRef, ResolvedRef]:
    """``(recorded, read)`` references of one input; no network for a pinned ref found in ``local``."""
    if local and text in local:
        ref = parse_ref(text)
        if ref.is_local or not ref.is_pinned:
            raise InvalidReferenceError(f"{text!r}: only refs pinned to a commit sha can be read from a local copy")
        return ResolvedRef(ref, ref.revision), ResolvedRef(ModelRef(path=Path(local[text]).absolute()), None)
    res = hub.resolve(text)
    return res, res


def _model(hub: Hub, text: str, local: Mapping[str, Path] | None, *, with_lineage: bool = False) -> ModelInput:
    res, read = pin(hub, text, local)
    infos = hub.tensor_infos(read)
    files = tuple(hub.list_files(read))
    if infos is None:
        require_weights(infos, res, True, list(files))  # no weights at all is an error even with pickles allowed
    lineage = hub.read_lineage(read) if with_lineage else None
    return ModelInput(res, read, files, hub.read_json(read, "config.json"), infos, lineage=lineage)


def resolve(hub: Hub, config: MergeConfig, plan: Plan, *, local: Mapping[str, Path] | None = None) -> Inputs:
    """Pin and check every input of ``config``.

    Args:
        hub: the Hub client (also reads local folders).
        config: the merge request.
        plan: its validated plan.
        local: pinned ref -> a local folder holding that commit's files.

    Raises:
        RepoNotFoundError, RevisionNotFoundError: a reference that does not exist.
        UnsafeCheckpointError, MissingWeightsError: pickle-only without ``allow_pickle``, or no weights.
        IncompatibleExpertsError: architecture, tensor names or shapes differ from the base.
        MissingAdapterConfigError, UnsupportedAdapterError: adapters hf_time cannot merge exactly.
        ConfigError: a low-rank method given a full model.
    """
    base = _model(hub, config.base, local)
    if base.infos is None and not plan.allow_pickle:
        require_weights(None, base.res, False, list(base.files))
    expert_pins = [pin(hub, e.ref, local) for e in config.experts]
    adapters = open_lora_experts(hub, [read for _, read in expert_pins], allow_pickle=plan.allow_pickle)
    experts = []
    for i, (res, read) in enumerate(expert_pins):
        if i in adapters:
            experts.append(ModelInput(res, read, tuple(hub.list_files(read)), adapter=adapters[i]))
        else:
            experts.append(_model(hub, config.experts[i].ref, local))
            if experts[-1].infos is None and not plan.allow_pickle:
                require_weights(None, res, False, list(experts[-1].files))
    if isinstance(plan.method, LowRankMethod):
        full = [e.name for e in experts if e.adapter is None]
        if full:
            raise ConfigError(f"{plan.method.name} merges LoRA adapters, but {full[0]} has no adapter_config.json (a full "
                              "model?); use a dense method such as task_arithmetic, which takes full and LoRA experts")
    if isinstance(plan.method, DataMethod):
        experts = [_with_statistic(hub, e, plan.method.statistic) for e in experts]
    previous = None if config.previous is None else _model(hub, config.previous, local, with_lineage=True)
    inputs = Inputs(base, tuple(experts), previous)
    if inputs.headers_known and not plan.assembles_output:  # an assembled output is checked by its layout
        check_compatible(base.name, base.hf_config, base.infos,
                         [(m.name, m.hf_config, m.infos) for m in inputs.full_models()])
    targets: list[Mapping[str, str] | None] = [None] * len(experts)
    if base.infos is not None and adapters:
        mapped = check_adapters(base.res, base.infos, [adapters[i] for i in sorted(adapters)])
        for i, t in zip(sorted(adapters), mapped):
            targets[i] = t
    return Inputs(base, tuple(experts), previous, tuple(targets))


def _with_statistic(hub: Hub, model: ModelInput, filename: str) -> ModelInput:
    """The expert with its statistic file's header and its weight files' content ids (nothing downloaded)."""
    import dataclasses

    from hf_time.fisher import weight_file_names

    if model.adapter is not None or filename not in model.files:
        return model
    metadata, infos = hub.safetensors_file(model.read, filename)
    index = hub.read_json(model.read, "model.safetensors.index.json") if "model.safetensors.index.json" in model.files else None
    weights = hub.file_hashes(model.read, weight_file_names(list(model.files), index))
    return dataclasses.replace(model, statistic={"metadata": metadata, "infos": infos, "weights": weights})
