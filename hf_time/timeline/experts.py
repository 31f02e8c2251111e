"""Making the expert of a step: reuse it by key, or finetune it with replay and push it with a card.

The trainer is pluggable (:data:`Trainer`): the default wraps :func:`hf_time.training.finetune`
(head-free, full weights or LoRA); tests pass a deterministic fake that writes known experts.

Replay (TIME mixes pretraining data and a buffer of past tasks into every batch):

* past tasks: ``replay.past_fraction`` of each batch comes from the training data of tasks 1..t−1
  (``replay.examples_per_task`` each, with their own label descriptions);
* base domain: ``replay.base_fraction`` comes from ``replay.base_tasks``, built-in tasks standing in
  for the base's pretraining data, which does not ship offline for MiniLM. Default 0.

Both pools are merged into one and sized in the ratio of the two fractions, because
:func:`hf_time.training.plan_batches` draws replay examples uniformly from a single pool.

LoRA experts (``training.lora``): the adapter is what is pushed (small, ``base_model_name_or_path``
= the init repo at its pinned sha); a dense copy (init + scale·B·A, merged by PEFT) is cached
locally for merging and evaluation, and rebuilt from the adapter when a run resumes elsewhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import datasets

from hf_time.atomic import atomic_output_dir
from hf_time.io import copy_files
from hf_time.lineage import Lineage, RefRecord
from hf_time.pipeline import record_training
from hf_time.pipeline.artifact import CARRIED_FILES, training_lineage
from hf_time.pipeline.snapshot import write_snapshot
from hf_time.timeline.config import TimelineConfig
from hf_time.timeline.data import LoadedTask
from hf_time.timeline.state import NodeRecord
from hf_time.timeline.store import NodeStore, node_section
from hf_time.timeline.strategies import StepPlan
from hf_time.training import STATS_FILE, replay_pool

logger = logging.getLogger(__name__)

Trainer = Callable[..., Path]
# Deterministic facts of a training run kept in the timeline state (seconds are not: they stay local).
_FACTS = ("steps", "examples", "replay_examples", "tokens", "first_loss", "final_loss", "trainable_parameters",
          "target_tokens", "truncated")


def default_trainer(init_dir: Path, task, config, out_dir: Path, *, replay=None, device=None) -> Path:
    from hf_time.training import finetune

    return finetune(init_dir, task, config, out_dir, replay=replay, device=device, overwrite=True)


def densify(adapter_dir: Path, init_dir: Path, out: Path, lineage: Lineage | None) -> Path:
    """Merge a PEFT adapter into its init model and save the full weights (atomically), a local cache copy
    for merging and evaluation; it keeps the adapter's lineage (what was trained) with its own files."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from hf_time.evaluation import is_causal_config, merge_adapter

    # A causal LM keeps its head: AutoModel would drop lm_head and the dense copy would be another model.
    auto = AutoModelForCausalLM if is_causal_config(AutoConfig.from_pretrained(str(init_dir))) else AutoModel
    model = auto.from_pretrained(str(init_dir), dtype=torch.float32)
    model = merge_adapter(model, adapter_dir)
    with atomic_output_dir(out, overwrite=True) as tmp:
        model.save_pretrained(str(tmp))
        copy_files(init_dir, tmp, [f for f in CARRIED_FILES if f != "config.json"])
        if lineage is not None:
            files = sorted(p.name for p in tmp.glob("*.safetensors"))
            dense = training_lineage(lineage.base, tmp, files, fmt="model", details=lineage.details,
                                     timeline=lineage.timeline)
            write_snapshot(tmp, dense, card=None)
    return out


class ExpertMaker:
    """Finds or trains, then publishes, the expert of each step."""

    def __init__(self, config: TimelineConfig, store: NodeStore, trainer: Trainer):
        self.config = config
        self.store = store
        self.trainer = trainer
        self.tasks: list[LoadedTask] = []
        self.base_pool: list[LoadedTask] = []

    def set_tasks(self, adaptation: Sequence[LoadedTask], base_pool: Sequence[LoadedTask]) -> None:
        self.tasks = list(adaptation)
        self.base_pool = list(base_pool)

    def replay(self, step: int) -> datasets.Dataset | None:
        """The replay pool of step ``step`` (None when the step's replay fraction is 0)."""
        r = self.config.replay
        past = [t.task for t in self.tasks[: step - 1]] if r.past_fraction else []
        base = [t.task for t in self.base_pool] if r.base_fraction else []
        if not past and not base:
            return None
        seed = self.config.training.seed + step
        pools = []
        if past:
            pools.append((replay_pool(past, n_per_task=r.examples_per_task, seed=seed), r.past_fraction))
        if base:
            pools.append((replay_pool(base, n_per_task=r.examples_per_task, seed=seed), r.base_fraction))
        if len(pools) == 2:
            # Size the pools in the ratio of their fractions: the trainer samples the union uniformly.
            (p, fp), (b, fb) = pools
            scale = min(len(p) / fp, len(b) / fb)
            pools = [(p.select(range(max(1, int(scale * fp)))), fp), (b.select(range(max(1, int(scale * fb)))), fb)]
        return datasets.concatenate_datasets([p for p, _ in pools])

    def make(self, sp: StepPlan, init_dir: Path, init_record: NodeRecord | None, timer) -> tuple[Path, NodeRecord, dict]:
        """The expert of step ``sp``: (local dense folder, pinned Hub record, training facts)."""
        node = sp.expert
        lora = self.config.training.lora is not None
        folder = self.store.local(node)
        with timer.phase("resolve"):
            record = self.store.find(node)
        if folder is None and record is not None:
            with timer.phase("resolve"):
                downloaded = self.store.download(record)
                if lora:
                    folder = densify(downloaded, init_dir, self.store.path(node), Lineage.load(downloaded))
                else:
                    folder = downloaded
            self.store.remember(node, folder)
        publish_dir = self.store.path(node, "-adapter") if lora else folder
        if folder is None:
            folder, publish_dir = self._train(sp, init_dir, init_record, timer)
        if record is None:
            if lora and not (publish_dir / "adapter_config.json").exists():
                raise RuntimeError(f"{node.label}: the adapter folder {publish_dir} is missing; delete {folder} to retrain")
            with timer.phase("push_expert"):
                record = self.store.publish(node, publish_dir, self.store.repos.experts, private=self.config.private,
                                            message=f"Expert {sp.step}: {sp.task}")
        lineage = Lineage.load(folder)
        return folder, record, dict(lineage.details.get("stats") or {}) if lineage else {}

    def _train(self, sp: StepPlan, init_dir: Path, init_record: NodeRecord | None, timer) -> tuple[Path, Path]:
        node = sp.expert
        task = next(t for t in self.tasks if t.name == sp.task)
        lora = self.config.training.lora is not None
        out = self.store.path(node, "-adapter" if lora else "")
        with timer.phase("train"):
            replay = self.replay(sp.step)
            trained = Path(self.trainer(init_dir, task.task, sp.training, out, replay=replay, device=self.config.device))
        with timer.phase("push_expert"):
            stats_path = trained / STATS_FILE
            stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
            timer.tokens += int(stats.get("tokens", 0))
            timer.train_loop += float(stats.get("seconds", 0.0))
            facts = {k: stats[k] for k in _FACTS if k in stats}
            if lora:
                self._point_adapter_at(trained, init_record)
            init = RefRecord(init_record.pinned if init_record and init_record.pinned else sp.init.label,
                             init_record.repo_id if init_record else None, init_record.tag if init_record else None,
                             init_record.sha if init_record else None)
            title = f"{self.store.repos.timeline.split('/')[-1]} expert {sp.step}: {sp.task}"
            lineage = record_training(trained, init, task=sp.task, training=sp.training.to_dict(), stats=facts,
                                      adapter=lora, title=title, extra={"task_key": task.key, "init_node": sp.init.label},
                                      timeline=node_section(self.store.repos.timeline, node))
        if self.config.fisher is not None and not lora:
            with timer.phase("fisher"):
                self._fisher(trained, task, sp)
        if not lora:
            return trained, trained
        with timer.phase("train"):
            dense = densify(trained, init_dir, self.store.path(node), lineage)
        return dense, trained

    def _fisher(self, folder: Path, task: LoadedTask, sp: StepPlan) -> None:
        """The expert's diagonal Fisher on its own task, written beside its weights (published with them)."""
        from hf_time.fisher import FisherConfig, compute_fisher, save_fisher, weights_fingerprint

        f = self.config.fisher
        config = FisherConfig(n_examples=f.n_examples, empirical=f.empirical, max_length=sp.training.max_length,
                              logit_scale=sp.training.logit_scale, word_embeddings=f.word_embeddings)
        tensors, stats = compute_fisher(folder, task.task, config, device=self.config.device, progress=False)
        save_fisher(folder, tensors, {"model": f"{self.store.repos.timeline} expert {sp.step}",
                                      "weights": weights_fingerprint(folder), "base": None, "task": sp.task,
                                      "data": task.source, "data_key": task.key, "n_examples": stats["n_examples"],
                                      "estimator": "empirical" if f.empirical else "sampled",
                                      "config": {"n_examples": f.n_examples, "empirical": f.empirical}})
        logger.info("step %d: Fisher of the expert on %s (%d examples, %.1f s)", sp.step, sp.task,
                    stats["n_examples"], stats["seconds"])

    @staticmethod
    def _point_adapter_at(adapter_dir: Path, init_record: NodeRecord | None) -> None:
        """Make the published adapter name its init model on the Hub (pinned), not a local path."""
        path = adapter_dir / "adapter_config.json"
        if init_record is None or not init_record.repo_id or not path.is_file():
            return
        cfg = json.loads(path.read_text())
        cfg["base_model_name_or_path"] = init_record.repo_id
        cfg["revision"] = init_record.sha
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

