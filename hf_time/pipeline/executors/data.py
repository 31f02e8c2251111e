"""The data-aware executor: n full experts merged tensor by tensor with a statistic each expert carries.

A data-aware method (:class:`~hf_time.merges.DataMethod`, e.g. ``fisher``) reads, besides θ_i, a
per-parameter statistic S_i computed on expert i's task data and stored in its repo or folder
(``fisher.safetensors``: same tensor names and shapes as the checkpoint, provenance in the metadata).

``bind`` checks everything from headers and file ids before any weight is downloaded: every expert
has the file, it was computed on exactly these weights (sha256 / git blob ids of the weight files,
so a Fisher committed on top of the expert's weights still matches), for this base when it recorded
one, and its tensors fit the base. ``execute`` then streams base, experts and statistics through the
method like the dense executor does (:mod:`hf_time.engine`), so memory stays at a few tensors.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hf_time import __version__, engine
from hf_time.errors import (
    ConfigError,
    CorruptCheckpointError,
    IncompatibleExpertsError,
    StatisticMismatchError,
)
from hf_time.fisher import parse_provenance, statistic_problems
from hf_time.hub import Hub
from hf_time.io import Checkpoint
from hf_time.merges import DataMethod
from hf_time.pipeline.artifact import Output, carry_base_files
from hf_time.pipeline.executors.dense import open_base, open_sources
from hf_time.pipeline.plan import Plan
from hf_time.pipeline.resolve import Inputs


def _repo_hint(name: str) -> str:
    return name if "@" not in name else name.split("@")[0]


def bind(plan: Plan, inputs: Inputs, state=None) -> Plan:
    """Check every expert's statistic from its header and file ids (nothing is downloaded).

    Raises:
        ConfigError: an adapter expert, or an expert without the statistic file (naming the command that computes it).
        StatisticMismatchError: a statistic computed on other weights or for another base.
        IncompatibleExpertsError: a statistic whose tensors do not fit the base.
    """
    method = plan.method
    assert isinstance(method, DataMethod)
    if state is not None:
        raise ConfigError(f"a state continues a sequential merge; {method.name} is a data-aware method")
    for e in inputs.experts:
        if e.adapter is not None:
            raise ConfigError(f"{method.name} merges full models with their {method.statistic}; {e.name} is a LoRA adapter "
                              "(merge it into its base first)")
        if e.statistic is None:
            hint = method.compute_hint.format(expert=e.name, repo=_repo_hint(e.name))
            raise ConfigError(f"expert {e.name} has no {method.statistic} (at {e.res}); compute it with `{hint}`")
        provenance = parse_provenance(e.statistic["metadata"], f"{method.statistic} of {e.name}")
        problems = statistic_problems(e.name, provenance, e.statistic["weights"], e.statistic["infos"],
                                      inputs.base.infos, inputs.base.res.pinned)
        if problems:
            error = IncompatibleExpertsError if "does not fit the base" in problems[0] else StatisticMismatchError
            raise error(problems[0])
    return plan


def _statistic_source(folder: Path, filename: str, scratch: Path, i: int) -> Checkpoint:
    """A checkpoint reading one statistic file (linked as the only weight file of a scratch folder)."""
    path = folder / filename
    if not path.is_file():
        raise CorruptCheckpointError(f"{filename} was listed but not downloaded into {folder}; retry the merge")
    link = scratch / str(i)
    link.mkdir()
    os.symlink(path.resolve(), link / "model.safetensors")
    return Checkpoint(link)


def execute(plan: Plan, inputs: Inputs, hub: Hub, tmp: Path, *, progress: bool = True) -> Output:
    """Run a data-aware merge into ``tmp``; returns what was written."""
    method = plan.method
    assert isinstance(method, DataMethod)
    base_dir, base_ck = open_base(hub, inputs.base, plan)
    experts = open_sources(hub, inputs, plan, base_ck, list(inputs.experts))
    n = len(experts)
    with tempfile.TemporaryDirectory(prefix="hf_time_stats_") as scratch:
        stats = [_statistic_source(hub.download(e.read, [method.statistic]), method.statistic, Path(scratch), i)
                 for i, e in enumerate(inputs.experts)]
        config = plan.config

        def op(base, tensors, ctx):
            return method.fn(base if method.uses_base else None, tensors[:n], tensors[n:], config, ctx)

        job = engine.StreamJob(op=op, weights=plan.weights, device=plan.device, label=f"merging ({method.name})",
                               names=("the base", *(f"expert {e.name}" for e in inputs.experts),
                                      *(f"{method.statistic} of {e.name}" for e in inputs.experts)),
                               allow_nonfinite=plan.allow_nonfinite)
        writer = engine.make_writer(tmp, base_ck.infos, plan.torch_dtype, plan.max_shard_bytes, {"hf_time": __version__})
        engine.run(base_ck, [*experts, *stats], job, writer, progress=progress)
        files = writer.close()
        for ck in stats:
            ck.close()
    carry_base_files(base_dir, tmp, plan.dtype)
    return Output("model", tuple(files), {})
