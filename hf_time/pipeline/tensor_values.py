"""The parameter values one tensor of a merged model was merged with, derived from the snapshot alone.

A lineage records gradients, filters and slices as written (resolved and pinned), not a table of
values per tensor. This module reads them back: the snapshot's ``hf_time.json`` is planned again
(no network: planning never reads a model) and the tensor's place (its slice and gradient
position) is found from the snapshot's own layer stack, exactly as the merge found it. So "what
``t`` did ``model.layers.3.mlp.up_proj.weight`` get?" has an answer for every published merge.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hf_time.config import merge_config_from_dict
from hf_time.errors import ConfigError
from hf_time.io import Checkpoint
from hf_time.layers import find_stack, parameter_order, split_outside
from hf_time.lineage import Lineage
from hf_time.pipeline.plan import make_plan
from hf_time.schedules import layer_position


@dataclass(frozen=True)
class TensorValues:
    """What one output tensor was merged with.

    Attributes:
        parameters: every method parameter by public name.
        weights: per merged input (expert slot), its weight.
        expert_parameters: per merged input, its own per-expert parameters by public name.
        slice: the output slice the tensor belongs to (0 without slices).
        t: its gradient position.
    """

    parameters: Mapping[str, Any]
    weights: tuple[float, ...]
    expert_parameters: tuple[Mapping[str, Any], ...]
    slice: int
    t: float


def tensor_values(folder: str | os.PathLike, name: str) -> TensorValues:
    """The values tensor ``name`` of the merged snapshot in ``folder`` got (see the module docstring).

    Raises:
        ConfigError: the folder holds no merge lineage, or no tensor ``name``.
    """
    folder = Path(folder)
    lineage = Lineage.load(folder)
    data = lineage.merge_config() if lineage is not None and lineage.kind == "merge" else None
    if data is None:
        raise ConfigError(f"{folder} holds no dense merge lineage (hf_time.json)")
    plan = make_plan(merge_config_from_dict(data, str(folder / "hf_time.json")))
    with Checkpoint(folder) as ck:
        names = list(ck.infos)
    if name not in names:
        raise ConfigError(f"{folder} has no tensor {name!r}")
    hf_config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else None
    tp = plan.tensor_params
    public = {p.attr: p.name for p in plan.method.parameters()}
    if tp is None:
        params = plan.parameters
        return TensorValues(params, plan.weights, tuple({public[k]: v for k, v in p.items()} for p in plan.expert_params),
                            0, 0.0)
    stack = find_stack(names, hf_config, str(folder))
    layer = stack.index(name)
    slots = tp.slot_count
    inputs = (name,) * slots
    if not tp.layered:
        k, t = 0, (layer_position(layer, stack.num_layers) if layer is not None else 0.0)
    elif layer is None:
        before, _ = split_outside(names, stack, parameter_order(hf_config))
        k, t = (0 if name in before else len(tp.slices) - 1), 0.0
    else:
        k, o = 0, layer
        while o >= tp.slices[k].length:
            o -= tp.slices[k].length
            k += 1
        t = layer_position(o, tp.slices[k].length)
        rest = name[len(stack.prefix) + 1:].partition(".")[2]
        inputs = tuple(f"{stack.prefix}.{src.start + o}.{rest}" for src in tp.slices[k].experts)
    weights = plan.weights if not tp.layered else (1.0,) * slots
    expert_params = plan.expert_params if not tp.layered else ()
    config, w, ep = tp.resolve(k, t, name, inputs, plan.config, weights, expert_params)
    params = plan.method.resolved_parameters(config)
    return TensorValues(params, w, tuple({public[a]: v for a, v in p.items()} for p in ep), k, t)
