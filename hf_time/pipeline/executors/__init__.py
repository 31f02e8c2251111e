"""One executor per method kind; the pipeline picks it by the method's declared kind, never by name.

An executor has ``execute(plan, inputs, hub, tmp, *, progress) -> Output`` (write the output's
weights into ``tmp``) and ``bind(plan, inputs, state) -> Plan`` (fix what only the inputs decide,
e.g. a fold's incoming state, before anything is written). Adding a kind (a data-aware executor,
say) is adding a module here and one line to :data:`EXECUTORS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from hf_time.errors import ConfigError
from hf_time.pipeline.executors import data, dense, lowrank, sequential


def _no_state(plan, inputs, state: Mapping[str, Any] | None = None):
    if state is not None:
        raise ConfigError(f"a state continues a sequential merge; {plan.method.name} is a {plan.method.kind} method")
    return plan


@dataclass(frozen=True)
class Executor:
    """How one kind of method runs: ``execute`` writes the output, ``bind`` completes the plan."""

    execute: Callable[..., Any]
    bind: Callable[..., Any] = _no_state


EXECUTORS: Mapping[str, Executor] = {
    "dense": Executor(dense.execute, dense.bind),
    "lowrank": Executor(lowrank.execute),
    "sequential": Executor(sequential.execute, sequential.bind),
    "data": Executor(data.execute, data.bind),
}
