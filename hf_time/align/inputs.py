"""The models an alignment reads: pinned and checked from metadata, then downloaded and opened.

Everything that can be judged before downloading weights is judged in :func:`resolve_pair`: both
references pinned to a commit, their ``config.json`` and safetensors headers read, the architecture
supported (:func:`~hf_time.align.spec.arch_spec`) and the two bodies of one shape. Task data is
checked too (a task that does not exist fails here). Only then does :func:`open_models` download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hf_time.align.spec import ArchSpec, arch_spec, check_same_shape
from hf_time.hub import MODEL_PATTERNS, Hub, require_weights
from hf_time.io import TensorInfo
from hf_time.lineage import RefRecord
from hf_time.pipeline.resolve import pin
from hf_time.refs import ResolvedRef

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelIn:
    """One input, pinned: its reference as recorded, where it is read, its config, headers and layout."""

    res: ResolvedRef
    read: ResolvedRef
    hf_config: dict
    infos: dict[str, TensorInfo]
    spec: ArchSpec

    @property
    def name(self) -> str:
        return str(self.res.ref)

    @property
    def record(self) -> RefRecord:
        return RefRecord.from_resolved(self.res)


def resolve_model(hub: Hub, ref: str) -> ModelIn:
    """Pin ``ref`` and read what is small: config, file list, safetensors headers; check its layout.

    Raises:
        RepoNotFoundError, RevisionNotFoundError: no such model or revision.
        MissingWeightsError, UnsafeCheckpointError: no safetensors weights.
        UnsupportedArchitectureError: a model whose symmetries hf_time does not know.
    """
    res, read = pin(hub, ref)
    infos = hub.tensor_infos(read)
    if infos is None:
        require_weights(None, res, False, list(hub.list_files(read)))
    cfg = hub.read_json(read, "config.json") or {}
    return ModelIn(res, read, cfg, infos, arch_spec(cfg, infos, str(res.ref)))


def resolve_pair(hub: Hub, reference: str, experts: Sequence[str], tasks: Sequence[str] = ()) -> tuple[ModelIn, list[ModelIn]]:
    """The reference and the experts, checked against each other (and the tasks checked to exist).

    Raises:
        IncompatibleExpertsError: an expert whose body differs in shape from the reference's.
        UnknownTaskError: a task name hf_time does not know.
    """
    from hf_time.tasks import get_task_spec

    for task in tasks:
        get_task_spec(task)
    ref = resolve_model(hub, reference)
    out = []
    for e in experts:
        m = resolve_model(hub, e)
        check_same_shape(ref.spec, m.spec, ref.infos, m.infos, ref.name, m.name)
        out.append(m)
    return ref, out


def shared_tensors(a: ModelIn, b: ModelIn) -> set[str]:
    """Tensors both models hold with one shape (task heads of other sizes are compared by nobody)."""
    return {n for n, t in a.spec.tensors.items() if n in b.infos and b.infos[n].shape == a.infos[n].shape}


def download(hub: Hub, model: ModelIn) -> Path:
    return hub.download(model.read, MODEL_PATTERNS)
