"""Init and deploy strategies as data: which checkpoint each step starts from and which one it serves.

Every model a timeline can touch is a :class:`Node` of a small DAG over the buffer
[θ_0, θ^s_1..θ^s_T] (shared/design/methods.md §1):

==============  ==========================================================================================
``base``        θ_0.
``expert-t``    θ^s_t, finetuned from the init node of step t.
``chain-t``     the running merge: r_0 = θ_0 and r_t = merge([θ^s_t, r_{t−1}]) anchored at θ_0 with
                weights [w, 1−w] for a dense technique (linear = TIME's EMA); for a sequential technique
                r_t = fold(r_{t−1}, θ_0, θ^s_t) with the method's own rule (EMA, OPCM...).
``merge_all-t`` merge(θ^s_1..θ^s_t) in one go onto θ_0 (time-aware weights optional). A sequential
                technique merges all experts by folding them, so there ``merge_all`` *is* the chain.
``soup-t``      the greedy soup of θ^s_1..θ^s_t (uniform average of the experts kept, chosen on held-out
                slices of the seen tasks; :mod:`hf_time.soup`), deploy ``greedy_soup`` only.
==============  ==========================================================================================

Init of step t: ``base`` -> base; ``latest`` -> expert-(t−1); ``merge_all`` -> merge_all-(t−1);
``ema`` -> chain-(t−1); at t = 1 every init is θ_0. Deploy after step t: ``latest`` -> expert-t,
``merge_all`` -> merge_all-t, ``ema`` -> chain-t.

Each node's key hashes its inputs' keys and the settings that shape it (a Merkle DAG rooted at the
base's commit sha and the tasks' content keys), so every key of the whole timeline is known before
anything is trained, and a node that exists under its key — in the local cache or on the Hub — is
never computed twice. Products are computed by the merge pipeline (:mod:`hf_time.pipeline`), the
same one ``hf-time merge`` runs: a dense merge, or a fold continuing the previous chain snapshot.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from hf_time.config import ExpertSpec, MergeConfig
from hf_time.lineage import Lineage
from hf_time.merges import get
from hf_time.pipeline import RunOptions, prepare, produce
from hf_time.timeline.config import TimelineConfig
from hf_time.timeline.data import content_key
from hf_time.training import TrainingConfig

_INIT_KIND = {"base": "base", "latest": "expert", "merge_all": "merge_all", "ema": "chain"}
_DEPLOY_KIND = {"latest": "expert", "merge_all": "merge_all", "ema": "chain", "greedy_soup": "soup"}


@dataclass(frozen=True)
class Node:
    """One model of the timeline's DAG: ``kind`` in base/expert/chain/merge_all, its step, its key."""

    kind: str
    step: int
    key: str

    @property
    def label(self) -> str:
        return "base" if self.kind == "base" else f"{self.kind}-{self.step}"

    @property
    def is_product(self) -> bool:
        """Whether the node is computed by merging (not trained, not given)."""
        return self.kind in ("chain", "merge_all", "soup")


@dataclass(frozen=True)
class StepPlan:
    """What step ``step`` reads and makes, with the content key of the whole step."""

    step: int
    task: str
    init: Node
    expert: Node
    deploy: Node
    training: TrainingConfig
    key: str


@dataclass(frozen=True)
class Plan:
    """The whole timeline's DAG: the base node, the steps, and every node any step needs."""

    base: Node
    steps: tuple[StepPlan, ...]
    nodes: Mapping[tuple[str, int], Node]
    sequential: bool

    def node(self, kind: str, step: int) -> Node:
        """The node ``kind-step`` (``chain-0`` and ``merge_all-0`` are the base)."""
        if kind == "base" or step == 0:
            return self.base
        return self.nodes[(kind, step)]

    def inputs(self, node: Node) -> list[Node]:
        """The nodes a product is computed from, in the order the merge reads them."""
        if node.kind == "chain":
            return [self.node("expert", node.step), self.node("chain", node.step - 1)]
        if node.kind in ("merge_all", "soup"):
            return [self.node("expert", j) for j in range(1, node.step + 1)]
        return []


def describe_node(node: Node) -> str:
    """A node in plain words, for cards and logs ("the expert of step 3", "the running merge after step 2")."""
    if node.kind == "base" or node.step == 0:
        return "the base model"
    return {"expert": f"the expert of step {node.step}", "chain": f"the running merge after step {node.step}",
            "merge_all": f"the merge of experts 1..{node.step}",
            "soup": f"the greedy soup of experts 1..{node.step}"}[node.kind]


def is_sequential(method: str) -> bool:
    return get(method).kind == "sequential"


def step_training(config: TimelineConfig, step: int) -> TrainingConfig:
    """The training config of step ``step``: the replay share filled in and a per-step seed."""
    replay = config.replay
    total = (replay.past_fraction if step > 1 else 0.0) + replay.base_fraction
    return dataclasses.replace(config.training, seed=config.training.seed + step, replay_fraction=round(total, 6))


def time_weights(kind: str, k: int) -> list[float]:
    """Weights of merge_all over experts j = 1..k, scaled to mean 1 (``uniform`` gives all 1.0)."""
    f = {"uniform": lambda j: 1.0, "linear": float, "sqrt": math.sqrt, "square": lambda j: float(j * j),
         "exp": math.exp, "log": lambda j: math.log(j + 1), "reversed": lambda j: float(k + 1 - j)}[kind]
    raw = [f(j) for j in range(1, k + 1)]
    return [k * w / sum(raw) for w in raw]


def build_plan(config: TimelineConfig, base_key: str, task_keys: Mapping[str, str], eval_key: str,
               base_task_keys: Sequence[str] = ()) -> Plan:
    """Every node and step key of the timeline, from the config and the inputs' keys alone.

    Args:
        config: the timeline.
        base_key: the base's content key (from its commit sha, or its files for a folder).
        task_keys: task name -> content key, for the adaptation tasks.
        eval_key: key of the evaluation (tasks and settings); part of each step key.
        base_task_keys: keys of the base-domain replay tasks.
    """
    s = config.strategy
    sequential = is_sequential(s.method)
    init_kind = dict(_INIT_KIND)
    deploy_kind = dict(_DEPLOY_KIND)
    if sequential:  # folding all experts is the sequential technique's merge of all of them
        init_kind["merge_all"] = deploy_kind["merge_all"] = "chain"
    technique = {"method": s.method, "params": dict(s.params)}
    base = Node("base", 0, base_key)
    nodes: dict[tuple[str, int], Node] = {}
    plan = Plan(base, (), nodes, sequential)
    steps = []
    names = [t.name for t in config.tasks]
    for t, name in enumerate(names, start=1):
        init = base if t == 1 else plan.node(init_kind[s.init], t - 1)
        training = step_training(config, t)
        replay = {"past": [task_keys[n] for n in names[: t - 1]] if config.replay.past_fraction else [],
                  "base": list(base_task_keys) if config.replay.base_fraction else [],
                  "per_task": config.replay.examples_per_task}
        expert = nodes[("expert", t)] = Node("expert", t, content_key(
            "expert", init.key, task_keys[name], training.to_dict(), replay))
        nodes[("chain", t)] = Node("chain", t, content_key(
            "chain", technique, None if sequential else s.ema_weight, base.key, plan.node("chain", t - 1).key, expert.key))
        if not sequential:
            nodes[("merge_all", t)] = Node("merge_all", t, content_key(
                "merge_all", technique, s.time_weights, base.key, [nodes[("expert", j)].key for j in range(1, t + 1)]))
        if s.deploy == "greedy_soup":  # chosen on held-out slices: the key says how many examples
            nodes[("soup", t)] = Node("soup", t, content_key(
                "soup", base.key, s.soup_n_val, eval_key, [nodes[("expert", j)].key for j in range(1, t + 1)]))
        deploy = plan.node(deploy_kind[s.deploy], t)
        steps.append(StepPlan(t, name, init, expert, deploy, training,
                              content_key("step", t, s.init, s.deploy, init.key, deploy.key, eval_key)))
    return Plan(base, tuple(steps), nodes, sequential)


# ------------------------------------------------------------------------------------------------
# computing products


def product_request(plan: Plan, node: Node, config: TimelineConfig, refs: Mapping[str, str]) -> MergeConfig:
    """The merge request that computes a ``chain`` or ``merge_all`` node.

    Args:
        plan: the timeline plan.
        node: the product.
        config: the timeline config (technique, EMA weight, time weights, device).
        refs: node key -> the reference of that node (its pinned Hub ref, or a local folder), for
            the base and every input of ``node``.
    """
    s = config.strategy
    inputs = plan.inputs(node)
    common = dict(base=refs[plan.base.key], method=s.method, params=dict(s.params), device=config.device or "cpu")
    if plan.sequential:  # r_t = fold(r_{t-1}, θ_0, θ_t); r_0 is the method's own rule
        previous = inputs[1]
        return MergeConfig(experts=(ExpertSpec(refs[inputs[0].key]),), **common,
                           previous=None if previous.kind == "base" else refs[previous.key])
    if node.kind == "chain":
        weights = [s.ema_weight, 1.0 - s.ema_weight]
    else:
        weights = time_weights(s.time_weights, len(inputs))
    return MergeConfig(experts=tuple(ExpertSpec(refs[n.key], float(w)) for n, w in zip(inputs, weights)), **common)


def merge_product(plan: Plan, node: Node, config: TimelineConfig, refs: Mapping[str, str], local: Mapping[str, Path],
                  hub, out: Path, *, progress: bool = False) -> Lineage:
    """Compute a ``chain`` or ``merge_all`` node into the empty folder ``out`` through the merge pipeline.

    Inputs the timeline holds locally are read there (``local``: pinned ref -> folder) but recorded by
    their pinned Hub reference, so the node's lineage names what a user can download.

    Returns:
        The node's lineage (what ran); the caller adds the timeline section and writes the snapshot.
    """
    request = product_request(plan, node, config, refs)
    merge_plan, inputs = prepare(request, RunOptions(progress=progress), hub, local=local)
    return produce(merge_plan, inputs, hub, out, progress=progress)
