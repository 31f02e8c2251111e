"""The timeline runner: TIME's loop, one idempotent step at a time, with the Hub as its memory.

Per step t: resolve the init checkpoint (pinned sha) -> finetune the expert (or find it) -> push it
-> build the deployed model by the deploy strategy -> evaluate it on every task (seen, upcoming,
held out) -> publish it as ONE commit tagged ``step-t`` (weights, card with model-index and plot,
lineage, accuracy matrix, timeline state) -> save the state locally.

Hub layout for ``namespace/name``:

* ``{ns}/{name}`` — the deployed snapshots: one commit per step, tagged ``step-1..T``; the repo's
  history *is* the timeline and ``{ns}/{name}@step-3`` is the model deployed after step 3. Each
  commit holds the weights, config and tokenizer, ``hf_time.json`` (node key, lineage, accuracy
  matrix, metrics, sha256 of the weights), ``timeline_state.json``, ``README.md`` and ``plot.png``,
  plus ``merge_config.yaml`` (pinned Hub refs) when a dense merge made it.
* ``{ns}/{name}-experts`` — expert t tagged ``step-t``: full weights, or a PEFT adapter with
  ``training.lora`` (its ``base_model_name_or_path`` is the init repo, ``revision`` the pinned sha).
* ``{ns}/{name}-running`` — a running merge the next step starts from when it is not the deployed
  model (e.g. init ``ema`` with deploy ``latest``), tagged ``step-t``.

Resume: every node and step has a content key known before anything runs
(:mod:`hf_time.timeline.strategies`). A step whose tag exists with the same key is skipped; a node
found in the local cache or on the Hub under its key is reused, so a killed run continues where it
stopped and publishes byte-identical snapshots (timings are kept out of published files).

Many processes (``torchrun --nproc_per_node N -m hf_time.cli timeline run CFG``, or ``accelerate launch
-m hf_time.cli timeline run CFG``, FSDP through accelerate's config): the main process runs this loop
alone (resolve, download, merge, evaluate, push, publish, card, state) and the others only join each
training (:mod:`hf_time.timeline.collective`), so every node is one commit, as with one process. A
step's batch stays ``training.batch_size`` examples: each process takes
``batch_size / (processes × gradient_accumulation_steps)`` per forward pass, and the loss is divided
by the whole batch's target count, so N processes take the steps one process takes (within float
rounding).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hf_time import distributed, progress
from hf_time.cards import hub_ids
from hf_time.hashing import sha256_file
from hf_time.errors import HfTimeError, TimelineConflictError
from hf_time.hub import Hub
from hf_time.atomic import atomic_output_dir, atomic_write_text
from hf_time.lineage import LINEAGE_FILE, Lineage
from hf_time.pipeline.cards import render_card
from hf_time.pipeline.snapshot import MERGE_CONFIG_FILE, write_snapshot
from hf_time.timeline.card import PLOT_FILE, plot_png, prepare_plot, render_timeline_card
from hf_time.timeline import preflight
from hf_time.timeline.config import TimelineConfig
from hf_time.timeline.data import LoadedTask, content_key, load_tasks
from hf_time.merges import LowRankMethod, get
from hf_time.timeline.experts import ExpertMaker, Trainer, default_trainer, densify
from hf_time.timeline.state import STATE_FILE, TIMINGS_FILE, NodeRecord, StepRecord, TimelineState
from hf_time.timeline.store import NodeStore, Repos, copy_tree, node_section
from hf_time.timeline.soup_deploy import hold_out_validation, soup_product
from hf_time.timeline.strategies import Node, Plan, StepPlan, build_plan, describe_node, merge_product

logger = logging.getLogger(__name__)

Evaluator = Callable[..., dict]
# before_steps(base_dir, adaptation tasks, held-out tasks, steps already published)
BeforeSteps = Callable[[Path, Sequence[LoadedTask], Sequence[LoadedTask], int], None]
# Phases that are not the work itself (training, evaluation): the timeline's overhead.
OVERHEAD_PHASES = ("resolve", "merge", "push_expert", "card", "publish", "state")
# Files of a node folder that a snapshot replaces or must not carry (timings are not reproducible).
_NODE_ONLY = ("README.md", LINEAGE_FILE, MERGE_CONFIG_FILE, "training_stats.json", STATE_FILE, PLOT_FILE)


def _files_key(folder: str | None) -> str | None:
    """The content of a folder of lm-eval task YAMLs (so editing a task re-scores), or None."""
    if folder is None:
        return None
    root = Path(folder)
    return content_key(sorted((str(p.relative_to(root)), sha256_file(p)) for p in root.rglob("*") if p.is_file()))


def default_evaluator(model_dir, tasks, *, batch_size: int, max_length: int, device=None) -> dict[str, float]:
    from hf_time.evaluation import evaluate_tasks

    return evaluate_tasks(model_dir, tasks, batch_size=batch_size, max_length=max_length, device=device)


def _wait_for_preupload(uploading: Future) -> None:
    """Wait for the weights uploaded ahead of a publish. A failure there is not the step's failure:
    the publish then uploads them itself (and reports any network error as its own)."""
    try:
        uploading.result()
    except HfTimeError as e:
        logger.info("uploading the weights ahead of the publish failed (%s); the publish sends them", e)


@dataclass
class StepTimings:
    """Wall-clock seconds per phase of one step, and the step's total."""

    step: int
    phases: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wall: float = 0.0
    tokens: int = 0  # training tokens (for tokens/s)
    train_loop: float = 0.0  # seconds of the optimizer loop alone (the "train" phase also loads the model)

    @property
    def overhead(self) -> float:
        """Seconds spent outside training and evaluation."""
        return sum(self.phases.get(p, 0.0) for p in OVERHEAD_PHASES)

    @property
    def overhead_fraction(self) -> float:
        return self.overhead / self.wall if self.wall else 0.0

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] += time.perf_counter() - start

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "wall": round(self.wall, 3), "overhead": round(self.overhead, 3), "tokens": self.tokens,
                "train_loop": round(self.train_loop, 3), "phases": {k: round(v, 3) for k, v in self.phases.items()}}


@dataclass(frozen=True)
class TimelineRun:
    """What :func:`run_timeline` did: the final state, the steps it ran (and timed), those it skipped."""

    state: TimelineState
    timings: tuple[StepTimings, ...]
    skipped: tuple[int, ...]
    setup: StepTimings

    @property
    def repo_id(self) -> str:
        return self.state.repo_id


class TimelineRunner:
    """Runs one timeline; see :func:`run_timeline` for the arguments."""

    def __init__(self, config: TimelineConfig, *, hub: Hub | None = None, work_dir: str | os.PathLike = "runs/timeline",
                 cache_dir: str | os.PathLike | None = None, trainer: Trainer | None = None,
                 evaluator: Evaluator | None = None, progress: bool = True):
        self.config = config
        self.hub = hub or Hub()
        self.work = Path(work_dir) / config.name
        self.cache = Path(cache_dir) if cache_dir is not None else Path(work_dir) / "cache"
        self.repos = Repos.for_timeline(config.repo_id)
        self.store = NodeStore(self.hub, self.cache, self.repos)
        self.evaluator = evaluator or default_evaluator
        self.progress = progress
        self.experts = ExpertMaker(config, self.store, trainer or default_trainer)

    # -- set-up ------------------------------------------------------------------------------------
    def _setup(self, timer: StepTimings, before_steps: BeforeSteps | None = None) -> tuple[Plan, TimelineState]:
        with timer.phase("resolve"):
            self.hub.check_publish(self.repos.timeline)  # a refused token fails now, not after the first training
            base_res = self.hub.resolve(self.config.base_ref)
            base_dir = self.hub.download(base_res)
            if base_res.sha:
                base_key = content_key("base", base_res.ref.repo_id, base_res.sha)
            else:  # a local folder: its weights and config are its identity, not its path
                base_key = content_key("base", sorted((p.name, sha256_file(p)) for p in base_dir.glob("*")
                                                      if p.suffix in (".safetensors", ".json") and p.is_file()))
            adaptation, held_out, base_pool = load_tasks(self.config, self.hub)
            preflight.check(self.config, base_dir, self.hub.tensor_infos(base_res) or {}, adaptation + held_out + base_pool)
        with timer.phase("card"):
            prepare_plot()  # once per run, not inside the first step's card
        self.validation: dict[str, Any] = {}
        if self.config.strategy.deploy == "greedy_soup":
            adaptation = [self._hold_out_validation(t) for t in adaptation]
        self.tasks: dict[str, LoadedTask] = {t.name: t for t in adaptation + held_out}
        self.eval_order = [t.name for t in adaptation + held_out]
        self.experts.set_tasks(adaptation, base_pool)
        ev = self.config.evaluation
        eval_key = content_key("eval", [self.tasks[n].key for n in self.eval_order], ev.max_length)
        self.lm_eval = None
        if ev.backend == "lm_eval":  # task names checked before any training; their results are keyed apart
            from hf_time.lm_eval_backend import check_lm_eval_tasks

            self.lm_eval = check_lm_eval_tasks(ev.tasks, ev.include)
            eval_key = content_key(eval_key, "lm_eval", list(ev.tasks), _files_key(ev.include), ev.limit)
        self.eval_key = eval_key
        plan = build_plan(self.config, base_key, {t.name: t.key for t in adaptation}, eval_key, [t.key for t in base_pool])
        base_record = NodeRecord("base", 0, base_key, base_res.ref.repo_id, base_res.sha)
        self.store.remember(plan.base, base_dir, base_record)
        self.plan_base_key = plan.base.key
        state = self._resume(plan, timer)
        if before_steps is not None:  # before the base's evaluation, which a fresh timeline still has to do
            before_steps(base_dir, adaptation, held_out, state.done if state is not None else 0)
        if state is None:
            with timer.phase("evaluate"), progress.subject(f"the base {base_res.ref.repo_id or base_dir.name}"):
                base_acc = self._evaluate(plan.base, base_dir)
            state = TimelineState(self.config.repo_id, self.config.to_dict(), base_record,
                                  tuple(t.name for t in adaptation), tuple(t.name for t in held_out), base_acc)
        return plan, state

    def _resume(self, plan: Plan, timer: StepTimings) -> TimelineState | None:
        """The state of the last published step, if its keys match this plan; None for a fresh timeline."""
        with timer.phase("resolve"):
            tags = self.hub.list_tags(self.repos.timeline)
            if tags is None:  # a fresh timeline
                return None
            done = 0
            while f"step-{done + 1}" in tags and done < len(plan.steps):
                done += 1
            if done == 0:
                return None
            res = self.hub.resolve(f"{self.repos.timeline}@step-{done}")
            state = TimelineState.from_dict(self.hub.read_json(res, STATE_FILE))
        for rec, sp in zip(state.steps, plan.steps):
            if rec.key != sp.key:
                raise TimelineConflictError(
                    f"{self.repos.timeline}@step-{rec.step} was made by another config (step key {rec.key[:12]} != "
                    f"{sp.key[:12]}); give the timeline a new `name`, or delete the repo to start over")
        for rec, sp in zip(state.steps, plan.steps):
            self.store.remember(sp.init, record=rec.init if rec.init.sha else None)
            self.store.remember(sp.expert, record=rec.expert)
        self.store.remember(plan.steps[done - 1].deploy, record=dataclasses.replace(
            state.steps[-1].deployed, sha=res.sha))
        logger.info("resuming %s after step %d of %d", self.repos.timeline, done, len(plan.steps))
        return state

    # -- nodes -------------------------------------------------------------------------------------
    def _materialize(self, plan: Plan, node: Node, timer: StepTimings) -> Path:
        """A local folder of ``node``: cached, downloaded by key, or computed from its inputs."""
        folder = self.store.local(node)
        if folder is not None:
            return folder
        with timer.phase("resolve"):
            record = self.store.find(node) if node.kind != "base" else None
            if record is not None:
                folder = self.store.download(record)
                self.store.remember(node, folder)
                return folder
        if node.kind == "expert":
            raise RuntimeError(f"{node.label} is neither cached nor published; it is made by its own step")
        inputs = plan.inputs(node)
        folders = {plan.base.key: self.store.folders[plan.base.key]}
        for n in inputs:
            folders[n.key] = self._materialize(plan, n, timer)
        refs, local = {}, {}
        adapters = isinstance(get(self.config.strategy.method), LowRankMethod)
        for n in [plan.base, *inputs]:  # pinned Hub refs where published (read from the local copy), else folders
            record = self.store.records.get(n.key) if n.kind == "base" else self.store.find(n)
            refs[n.key] = record.pinned if record is not None and record.pinned else str(folders[n.key])
            # A LoRA expert's local folder is its dense copy; a low-rank technique reads the published adapter.
            if refs[n.key] != str(folders[n.key]) and not (adapters and n.kind == "expert"):
                local[refs[n.key]] = folders[n.key]
        with timer.phase("merge"):
            out = self.store.path(node)
            with atomic_output_dir(out, overwrite=True) as tmp:
                if node.kind == "soup":
                    lineage = self._soup(plan, node, refs, local, folders, tmp)
                else:
                    lineage = merge_product(plan, node, self.config, refs, local, self.hub, tmp, progress=self.progress)
                lineage = lineage.with_timeline(node_section(self.repos.timeline, node))
                write_snapshot(tmp, lineage, card=render_card(lineage, title=f"{self.repos.timeline.split('/')[-1]} "
                                                                           f"{node.label}"))
        self.store.remember(node, out)
        return out

    def _hold_out_validation(self, loaded: LoadedTask) -> LoadedTask:
        """Deploy greedy_soup: the last ``soup_n_val`` training examples become the task's validation slice."""
        kept, self.validation[loaded.name] = hold_out_validation(loaded, self.config.strategy.soup_n_val)
        return kept

    def _soup(self, plan: Plan, node: Node, refs, local, folders, out: Path) -> Lineage:
        """The greedy soup of experts 1..t: candidates scored on the seen tasks' validation slices."""
        seen = [self.validation[sp.task] for sp in plan.steps[: node.step]]
        return soup_product(plan, node, refs, local, folders, out, seen=seen, evaluator=self.evaluator,
                            evaluation=self.config.evaluation, device=self.config.device, hub=self.hub)

    def _evaluate(self, node: Node, folder: Path) -> dict[str, float]:
        """Accuracy of a node on every task, cached by (node key, evaluation key)."""
        path = self.cache / "eval" / f"{content_key('eval-result', node.key, self.eval_key)[:24]}.json"
        if path.is_file():
            return json.loads(path.read_text())
        tasks = [self.tasks[n].task for n in self.eval_order]
        ev = self.config.evaluation
        if (folder / "adapter_config.json").is_file():  # a low-rank deploy: scored as base + ΔW, read locally
            folder = densify(folder, self.store.folders[self.plan_base_key], self.store.path(node, "-dense"), None)
        acc = self.evaluator(folder, tasks, batch_size=ev.batch_size, max_length=ev.max_length, device=self.config.device)
        acc = {n: round(float(acc[n]), 6) for n in self.eval_order}
        if self.lm_eval is not None:
            from hf_time.lm_eval_backend import evaluate_lm_eval

            for task, metric, value, _, _ in evaluate_lm_eval(folder, self.lm_eval, device=self.config.device,
                                                              batch_size=min(ev.batch_size, 16), limit=ev.limit):
                acc[f"lm_eval/{task}/{metric}"] = round(value, 6)
        atomic_write_text(path, json.dumps(acc, indent=2, sort_keys=True) + "\n")  # shared caches never see half a file
        return acc

    # -- one step ----------------------------------------------------------------------------------
    def _step(self, plan: Plan, sp: StepPlan, state: TimelineState, timer: StepTimings) -> TimelineState:
        init_dir = self._materialize(plan, sp.init, timer)
        init_record = self.store.find(sp.init) if sp.init.kind != "base" else self.store.records[plan.base.key]
        if init_record is None:  # only reachable with a local product that was never published
            init_record = NodeRecord(sp.init.kind, sp.init.step, sp.init.key)
        expert_dir, expert_record, facts = self.experts.make(sp, init_dir, init_record, timer)
        deploy_dir = self._materialize(plan, sp.deploy, timer)
        if sp.step < len(plan.steps):
            nxt = plan.steps[sp.step].init
            if nxt.is_product and nxt.key != sp.deploy.key:  # the next step starts from a merge not served here
                folder = self._materialize(plan, nxt, timer)
                if self.store.find(nxt) is None:
                    with timer.phase("publish"):
                        self.store.publish(nxt, folder, self.repos.running, private=self.config.private,
                                           message=f"Running merge {nxt.label} (init of step {sp.step + 1})")
        # The deployed weights go up to the Hub while they are evaluated (an upload, not a commit: nothing
        # is visible before the publish, which then sends only the small files).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_time-preupload") as uploads:
            uploading = uploads.submit(self.hub.preupload, deploy_dir, self.repos.timeline,
                                       private=self.config.private or None)
            with timer.phase("evaluate"), progress.subject(f"the model deployed after step {sp.step}"):
                accuracy = self._evaluate(sp.deploy, deploy_dir)
            deployed = Lineage.load(deploy_dir)
            fold_state = state.fold_state
            if plan.sequential:
                chain_dir = self.store.local(plan.node("chain", sp.step))
                fold_state = Lineage.load(chain_dir).state if chain_dir else fold_state
            record = StepRecord(sp.step, sp.task, sp.key, init_record, expert_record,
                                NodeRecord(sp.deploy.kind, sp.deploy.step, sp.deploy.key, self.repos.timeline, None,
                                           f"step-{sp.step}"), accuracy, facts)
            new_state = state.with_step(record, fold_state)
            with timer.phase("card"):
                folder = self._snapshot(plan, sp, new_state, deploy_dir, deployed)
            with timer.phase("publish"):
                _wait_for_preupload(uploading)
                pub = self.hub.publish(folder, self.repos.timeline, tag=f"step-{sp.step}",
                                       private=self.config.private or None,
                                       commit_message=f"Step {sp.step}: {sp.task} ({self.config.strategy.label})")
        self.store.remember(sp.deploy, record=dataclasses.replace(record.deployed, sha=pub.commit))
        shutil.rmtree(folder, ignore_errors=True)
        with timer.phase("state"):
            new_state.save(self.work / STATE_FILE)
        return new_state

    def _snapshot(self, plan: Plan, sp: StepPlan, state: TimelineState, deploy_dir: Path, deployed: Lineage) -> Path:
        """The folder of the step's commit: the deployed node's weights, its lineage with the step's
        timeline section, the state, the card and the plot (written once, by the snapshot writer)."""
        folder = self.work / "publish" / f"step-{sp.step}"
        shutil.rmtree(folder, ignore_errors=True)
        copy_tree(deploy_dir, folder, skip=_NODE_ONLY)
        section = {
            **node_section(self.repos.timeline, sp.deploy), "step": sp.step, "step_key": sp.key,
            "strategy": dict(state.config["strategy"]),
            "steps": [{"step": s.step, "task": s.task, "init": dataclasses.asdict(s.init),
                       "expert": dataclasses.asdict(s.expert)} for s in state.steps],
            "base_accuracy": dict(state.base_accuracy), "accuracy": state.accuracy_matrix(), "metrics": state.metrics(),
        }
        lineage = deployed.with_timeline(section)
        recipe = None
        if sp.deploy.is_product and lineage.method is not None:
            nodes = plan.inputs(sp.deploy)
            if sp.deploy.kind == "soup":  # the soup averages the experts it kept
                kept = set((lineage.details.get("greedy_soup") or {}).get("members") or ())
                nodes = [n for n in nodes if n.label in kept]
            weights = [None] * len(nodes) if plan.sequential else [e.weight for e in lineage.experts]
            recipe = {"method": lineage.method.name,
                      "inputs": [{"label": describe_node(n), "weight": w} for n, w in zip(nodes, weights)]}
            if sp.deploy.kind == "soup":
                recipe["soup"] = (lineage.details.get("greedy_soup") or {}).get("decisions")
        datasets = {name: t.source.get("dataset") or name for name, t in self.tasks.items()}
        plot = plot_png(state)  # None without matplotlib (the `plot` extra): the card says so
        made_from = [r for r in hub_ids(lineage.base, lineage.previous, *lineage.experts) if r != self.repos.timeline]
        card = render_timeline_card(state, recipe=recipe, datasets=datasets, plot_file=PLOT_FILE if plot else None,
                                    base_models=made_from, adapter=(folder / "adapter_config.json").is_file())
        extra = {STATE_FILE: state.to_json(), **({PLOT_FILE: plot} if plot else {})}
        write_snapshot(folder, lineage, card=card, extra=extra)
        return folder

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, on_step: Callable[[StepRecord, StepTimings], None] | None = None,
            before_steps: BeforeSteps | None = None) -> TimelineRun:
        setup = StepTimings(0)
        start = time.perf_counter()
        with progress.unit("set-up"), progress.libraries_quiet(hub=not self.progress):
            plan, state = self._setup(setup, before_steps)
        setup.wall = time.perf_counter() - start
        skipped = tuple(range(1, state.done + 1))
        timings = []
        for sp in plan.steps[state.done:]:
            timer = StepTimings(sp.step)
            start = time.perf_counter()
            # Every bar of the step says which step it belongs to: "step 2/3 · training sms_spam expert · 40 steps".
            with progress.unit(f"step {sp.step}/{len(plan.steps)}"), progress.libraries_quiet(hub=not self.progress):
                state = self._step(plan, sp, state, timer)
            timer.wall = time.perf_counter() - start
            timings.append(timer)
            self._save_timings(setup, timings)
            logger.info("step %d/%d (%s) done in %.1f s, overhead %.1f%%", sp.step, len(plan.steps), sp.task,
                        timer.wall, 100 * timer.overhead_fraction)
            if on_step is not None:
                on_step(state.steps[-1], timer)
        if state.done:
            state.save(self.work / STATE_FILE)
        return TimelineRun(state, tuple(timings), skipped, setup)

    def _save_timings(self, setup: StepTimings, timings: Sequence[StepTimings]) -> None:
        data = {"setup": setup.to_dict(), "steps": [t.to_dict() for t in timings]}
        (self.work / TIMINGS_FILE).write_text(json.dumps(data, indent=2) + "\n")


def run_timeline(config: TimelineConfig, *, hub: Hub | None = None, work_dir: str | os.PathLike = "runs/timeline",
                 cache_dir: str | os.PathLike | None = None, trainer: Trainer | None = None,
                 evaluator: Evaluator | None = None, on_step: Callable[[StepRecord, StepTimings], None] | None = None,
                 before_steps: BeforeSteps | None = None, progress: bool = True) -> TimelineRun:
    """Run (or resume) a timeline end to end on the Hub.

    Args:
        config: the timeline.
        hub: the Hub client (default: ``HF_ENDPOINT`` and the ambient token).
        work_dir: local working folder; the state and timings go to ``work_dir/<name>/``.
        cache_dir: content-addressed cache of models and evaluations (default ``work_dir/cache``);
            timelines sharing it reuse identical experts and merges.
        trainer: ``trainer(init_dir, task, training_config, out_dir, *, replay, device) -> folder``;
            default :func:`hf_time.training.finetune`. Tests inject deterministic fakes here.
        evaluator: ``evaluator(model_dir, tasks, *, batch_size, max_length, device) -> {task: acc}``;
            default :func:`hf_time.evaluation.evaluate_tasks`.
        on_step: called after each completed step with its record and timings (main process only).
        before_steps: called once the base and the tasks are loaded and the published steps counted,
            before any evaluation or training, as ``before_steps(base_dir, adaptation, held_out, done)``
            (main process only); e.g. :func:`hf_time.estimate.estimate_timeline` from what is loaded.
        progress: show the merges' bars and huggingface_hub's transfer bars; training and evaluation
            always show one labelled bar each ("step 2/3 · training sms_spam expert · 40 steps"),
            except inside :func:`hf_time.progress.quiet` (``--quiet``), where nothing shows.

    Under ``torchrun`` / ``accelerate launch`` every process calls this; only the main process runs
    the timeline and talks to the Hub, the others train with it (:mod:`hf_time.timeline.collective`).

    Returns:
        A :class:`TimelineRun` (the main process's, on every process).

    Raises:
        ConfigError: tasks that cannot be loaded (each named by key path).
        TimelineConflictError: the timeline repo holds steps of another config.
        RepoNotFoundError, RevisionNotFoundError: the base or a dataset is missing.
    """
    w = distributed.init()  # a world of one without torchrun/accelerate launch: nothing changes
    if w.size == 1:
        runner = TimelineRunner(config, hub=hub, work_dir=work_dir, cache_dir=cache_dir, trainer=trainer,
                                evaluator=evaluator, progress=progress)
        return runner.run(on_step=on_step, before_steps=before_steps)
    from hf_time.timeline import collective, experts

    trainer = trainer or experts.default_trainer
    if not w.is_main:
        return collective.follow(trainer)
    leader = collective.CollectiveTrainer(trainer)
    runner = TimelineRunner(config, hub=hub, work_dir=work_dir, cache_dir=cache_dir, trainer=leader,
                            evaluator=evaluator, progress=progress)
    return collective.lead(lambda: runner.run(on_step=on_step, before_steps=before_steps), leader)
