"""The timeline config: typed, frozen, loaded from YAML with every problem reported at once.

A timeline is TIME's loop (shared/design/methods.md §1) over an ordered list of tasks: each step
picks an *init* checkpoint, finetunes an expert from it, and *deploys* a model built by a merging
technique. The YAML mirrors the dataclasses below::

    name: minilm-best-in-time            # timeline repo: {namespace}/{name}
    namespace: demo
    base: "{namespace}/all-MiniLM-L6-v2" # Hub ref (org/name[@rev]) or a local folder
    tasks:                               # in training order
      - movie_sentiment                  # a built-in offline task (hf_time.tasks.list_tasks())
      - {name: my_task, dataset: org/my-ds@main, text_column: sentence, label_column: label,
         label_descriptions: ["a sad text", "a happy text"]}
    held_out: [tweet_sentiment]          # never trained on: zero-shot retention (A_ZS)
    data: {n_train: 2000, n_test: 100, seed: 0}
    strategy: {init: ema, deploy: ema, method: linear, params: {}, ema_weight: 0.5}
    training: {steps: 60, learning_rate: 5.0e-5, batch_size: 16, max_length: 32, lora: null}
    replay: {past_fraction: 0.0, base_fraction: 0.0, base_tasks: [], examples_per_task: 500}
    evaluation: {batch_size: 64, max_length: 32}

Unknown keys are errors, and every problem names its key path (``tasks[2].text_column``,
``strategy.init``), so one run of the loader lists everything that needs fixing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from hf_time.config import read_yaml
from hf_time.errors import ConfigError
from hf_time.timeline.schema import Reader, read_simple
from hf_time.training_config import LoraSpec, TrainingConfig

INITS = ("base", "latest", "merge_all", "ema")
DEPLOYS = ("latest", "merge_all", "ema")
# Time-aware weights of the offline merge (TIME §offline merging): w_j ∝ f(j), j = 1..k.
TIME_WEIGHTS = ("uniform", "linear", "sqrt", "square", "exp", "log", "reversed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")
_TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class TaskConfig:
    """One task of the timeline.

    Attributes:
        name: the task's name; with no ``dataset``, a built-in offline task of this name.
        dataset: a Hub dataset id ``org/name[@rev]``, a local folder (``save_to_disk`` output or data
            files) or a .csv/.tsv/.json/.jsonl/.parquet file; None for a built-in task.
        text_column, label_column: the columns holding the text and the label.
        label_descriptions: one phrase per label (in label order), or a mapping label name -> phrase.
        label_names: label names in id order (default: inferred from the data).
        n_train, n_test: overrides of ``data.n_train`` / ``data.n_test`` for this task.
    """

    name: str
    dataset: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_descriptions: tuple[str, ...] | Mapping[str, str] | None = None
    label_names: tuple[str, ...] | None = None
    n_train: int | None = None
    n_test: int | None = None


@dataclass(frozen=True)
class DataConfig:
    """How every task is cut: training cap, balanced test size, split seed."""

    n_train: int | None = None
    n_test: int = 200
    seed: int = 0


@dataclass(frozen=True)
class StrategyConfig:
    """TIME's three axes: where each expert starts, what is deployed, and the merge operator.

    Attributes:
        init: ``base`` (θ_0), ``latest`` (the previous expert), ``merge_all`` (merge of all experts so
            far) or ``ema`` (the running chain r_{t−1}).
        deploy: ``latest``, ``merge_all`` or ``ema``.
        method: a registry method (``hf-time ls``): ``dense`` methods merge through
            :func:`hf_time.api.merge`; ``sequential`` ones fold one expert at a time through
            :func:`hf_time.sequential.fold`, and then ``merge_all`` and ``ema`` both name that fold.
        params: the method's parameters by public name.
        ema_weight: w of the dense EMA chain r_j = merge([θ^s_j, r_{j−1}], weights [w, 1−w]).
        time_weights: weights of ``merge_all`` over experts j = 1..k (``uniform`` by default).
    """

    init: str = "ema"
    deploy: str = "ema"
    method: str = "linear"
    params: Mapping[str, Any] = field(default_factory=dict)
    ema_weight: float = 0.5
    time_weights: str = "uniform"

    @property
    def label(self) -> str:
        """A short name such as ``init=ema deploy=ema method=linear``."""
        params = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"init={self.init} deploy={self.deploy} method={self.method}" + (f"({params})" if params else "")


@dataclass(frozen=True)
class ReplayConfig:
    """Replay mixed into every training batch (TIME: 33% pretraining data + 33% past tasks).

    Attributes:
        past_fraction: share of each batch drawn from the training data of the tasks already seen.
        base_fraction: share drawn from a base-domain pool standing in for the base model's
            pretraining data (none ships offline for MiniLM): the built-in ``base_tasks``, which must
            be neither adaptation nor held-out tasks. 0 by default.
        base_tasks: the tasks of the base-domain pool.
        examples_per_task: examples taken from each task into the replay pools.
    """

    past_fraction: float = 0.0
    base_fraction: float = 0.0
    base_tasks: tuple[str, ...] = ()
    examples_per_task: int = 500


@dataclass(frozen=True)
class EvalConfig:
    """Head-free evaluation of every deployed model on every task."""

    batch_size: int = 64
    max_length: int = 32


@dataclass(frozen=True)
class TimelineConfig:
    """A complete, reproducible timeline.

    Attributes:
        name: the timeline repo's name; snapshots go to ``{namespace}/{name}``.
        namespace: the Hub namespace (user or organisation) that receives every repo.
        base: θ_0 as ``org/name[@rev]`` or a folder; ``{namespace}`` is replaced by ``namespace``.
        tasks: the adaptation tasks, in order (one step each).
        held_out: tasks never trained on, for zero-shot retention.
        data, strategy, training, replay, evaluation: see their classes.
        device: ``cpu``, ``cuda[:i]`` or None (CUDA when present).
        private: create the repos private.
    """

    name: str
    base: str
    tasks: tuple[TaskConfig, ...]
    namespace: str = "hf_time"
    held_out: tuple[TaskConfig, ...] = ()
    data: DataConfig = DataConfig()
    strategy: StrategyConfig = StrategyConfig()
    training: TrainingConfig = TrainingConfig()
    replay: ReplayConfig = ReplayConfig()
    evaluation: EvalConfig = EvalConfig()
    device: str | None = None
    private: bool = False

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def base_ref(self) -> str:
        return self.base.replace("{namespace}", self.namespace)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what the YAML holds), the inverse of :func:`timeline_config_from_dict`."""
        data = json.loads(json.dumps(dataclasses.asdict(self), default=dict))
        # Tasks keep only what differs from the defaults, so built-in tasks stay one word.
        defaults = {f.name: f.default for f in dataclasses.fields(TaskConfig)}
        for key in ("tasks", "held_out"):
            data[key] = [t["name"] if all(t[k] == defaults[k] for k in t if k != "name")
                         else {k: v for k, v in t.items() if k == "name" or v != defaults[k]} for t in data[key]]
        data["training"].pop("replay_fraction")  # set by the runner from `replay`
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------------
# loading


def _task(r: Reader, entry: Any, path: str) -> TaskConfig | None:
    if isinstance(entry, str):
        entry = {"name": entry}
    values = r.section(entry, path, TaskConfig)
    if not isinstance(entry, Mapping):
        return None
    if "name" not in values:
        r.problems.append(f"{path}.name: required (a built-in task name, or a name for `dataset`)")
        return None
    for key in ("name", "text_column", "label_column"):
        r.typed(values, path, key, (str,))
    r.typed(values, path, "dataset", (str,), optional=True)
    for key in ("n_train", "n_test"):
        r.typed(values, path, key, (int,), optional=True)
        if values.get(key) is not None:
            r.check(values[key] >= (0 if key == "n_train" else 2), f"{path}.{key}: must be >= {0 if key == 'n_train' else 2}, got {values[key]}")
    descs = values.get("label_descriptions")
    if descs is not None:
        if isinstance(descs, list) and all(isinstance(d, str) for d in descs):
            values["label_descriptions"] = tuple(descs)
        elif not (isinstance(descs, Mapping) and all(isinstance(v, str) for v in descs.values())):
            r.problems.append(f"{path}.label_descriptions: expected a list of strings or a mapping name -> string")
            values.pop("label_descriptions")
    names = values.get("label_names")
    if names is not None:
        if isinstance(names, list):
            values["label_names"] = tuple(str(n) for n in names)
        else:
            r.problems.append(f"{path}.label_names: expected a list")
            values.pop("label_names")
    if "name" not in values:
        return None
    r.check(bool(_TASK_NAME_RE.match(values["name"])), f"{path}.name: {values['name']!r} must be letters, digits, '_', '-' or '.'")
    if values.get("dataset") is None:
        from hf_time.tasks import list_tasks

        if values["name"] not in list_tasks():
            r.problems.append(f"{path}.name: unknown built-in task {values['name']!r} (valid: {', '.join(list_tasks())}); "
                              "or give a `dataset`")
        for key in ("text_column", "label_column", "label_descriptions", "label_names"):
            r.check(key not in values, f"{path}.{key}: only for tasks with a `dataset` (built-in tasks define their own)")
    return TaskConfig(**values)


def _tasks(r: Reader, data: Any, path: str, *, required: bool) -> tuple[TaskConfig, ...]:
    if data is None:
        r.check(not required, f"{path}: required (a non-empty list of tasks)")
        return ()
    if not isinstance(data, list):
        r.problems.append(f"{path}: expected a list of tasks, got {type(data).__name__}")
        return ()
    r.check(bool(data) or not required, f"{path}: must list at least one task")
    return tuple(t for i, entry in enumerate(data) if (t := _task(r, entry, f"{path}[{i}]")) is not None)


def _strategy(r: Reader, data: Any) -> StrategyConfig:
    values = r.section(data, "strategy", StrategyConfig)
    for key in ("init", "deploy", "method", "time_weights"):
        r.typed(values, "strategy", key, (str,))
    r.typed(values, "strategy", "ema_weight", (float,))
    r.typed(values, "strategy", "params", (dict,))
    for key, allowed in (("init", INITS), ("deploy", DEPLOYS), ("time_weights", TIME_WEIGHTS)):
        if key in values and values[key] not in allowed:
            r.problems.append(f"strategy.{key}: must be one of {', '.join(allowed)}, got {values[key]!r}")
            values.pop(key)
    if "ema_weight" in values and not 0 < values["ema_weight"] <= 1:
        r.problems.append(f"strategy.ema_weight: must be in (0, 1], got {values['ema_weight']}")
        values.pop("ema_weight")
    method = values.get("method", StrategyConfig.method)
    from hf_time.errors import UnknownMethodError
    from hf_time.merges import get

    try:
        spec = get(method)
    except UnknownMethodError as e:
        r.problems.append(f"strategy.method: {e}")
        values.pop("method", None)
        return StrategyConfig(**values)
    if spec.kind not in ("dense", "sequential"):
        r.problems.append(f"strategy.method: {method!r} is a {spec.kind} method; a timeline uses dense or sequential methods")
    try:
        spec.make_config(values.get("params"))
    except ConfigError as e:
        r.problems += [f"strategy.params: {p}" for p in e.problems]
    return StrategyConfig(**values)


def _training(r: Reader, data: Any) -> TrainingConfig:
    if isinstance(data, Mapping) and "replay_fraction" in data:
        r.problems.append("training.replay_fraction: set replay.past_fraction / replay.base_fraction instead")
        data = {k: v for k, v in data.items() if k != "replay_fraction"}
    values = r.section(data, "training", TrainingConfig, exclude=frozenset({"replay_fraction"}))
    lora = values.get("lora")
    if lora is not None:
        lora_values = r.section(lora, "training.lora", LoraSpec)
        if "target_modules" in lora_values:
            lora_values["target_modules"] = tuple(lora_values["target_modules"])
        try:
            values["lora"] = LoraSpec(**lora_values)
        except TypeError as e:
            r.problems.append(f"training.lora: {e}")
            values.pop("lora")
    try:
        return TrainingConfig(**values)
    except ConfigError as e:
        # TrainingConfig says "steps must be >= 1"; name the key path as every other problem does.
        r.problems += [re.sub(r"^([\w.]+) must", r"training.\1: must", p) for p in e.problems]
    except TypeError as e:
        r.problems.append(f"training: {e}")
    return TrainingConfig()


def timeline_config_from_dict(data: Any, source: str = "config") -> TimelineConfig:
    """Build a :class:`TimelineConfig` from parsed YAML, reporting every problem at once.

    Raises:
        ConfigError: one entry in ``problems`` per bad key, each naming its key path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    r = Reader()
    top = r.section(data, "", TimelineConfig)
    for key in ("name", "base"):
        r.check(isinstance(top.get(key), str) and bool(top.get(key)), f"{key}: required (a string)")
    r.typed(top, "", "namespace", (str,))
    r.typed(top, "", "device", (str,), optional=True)
    r.typed(top, "", "private", (bool,))
    for key in ("name", "namespace"):
        if isinstance(top.get(key), str):
            r.check(bool(_NAME_RE.match(top[key])), f"{key}: {top[key]!r} is not a valid Hub name (letters, digits, '-', '_', '.')")
    tasks = _tasks(r, top.get("tasks"), "tasks", required=True)
    held_out = _tasks(r, top.get("held_out"), "held_out", required=False)
    names = [t.name for t in tasks + held_out]
    for i, name in enumerate(names):
        if name in names[:i]:
            where = f"tasks[{i}]" if i < len(tasks) else f"held_out[{i - len(tasks)}]"
            r.problems.append(f"{where}.name: task {name!r} is listed twice (adaptation and held-out tasks must be distinct)")
    data_values = read_simple(r, top.get("data"), "data", DataConfig, {
        "n_train": ((int, type(None)), lambda v: v >= 0, ">= 0"), "n_test": ((int,), lambda v: v >= 2, ">= 2"),
        "seed": ((int,), None, "")})
    eval_values = read_simple(r, top.get("evaluation"), "evaluation", EvalConfig, {
        "batch_size": ((int,), lambda v: v >= 1, ">= 1"), "max_length": ((int,), lambda v: v >= 2, ">= 2")})
    replay_values = read_simple(r, top.get("replay"), "replay", ReplayConfig, {
        "past_fraction": ((float,), lambda v: 0 <= v < 1, "in [0, 1)"),
        "base_fraction": ((float,), lambda v: 0 <= v < 1, "in [0, 1)"),
        "examples_per_task": ((int,), lambda v: v >= 1, ">= 1"), "base_tasks": ((list,), None, "")})
    if "base_tasks" in replay_values:
        replay_values["base_tasks"] = tuple(str(t) for t in replay_values["base_tasks"])
        for i, name in enumerate(replay_values["base_tasks"]):
            r.check(name not in names, f"replay.base_tasks[{i}]: {name!r} is an adaptation or held-out task; "
                    "the base-domain pool must be other data")
    total = replay_values.get("past_fraction", 0.0) + replay_values.get("base_fraction", 0.0)
    r.check(total < 1, f"replay: past_fraction + base_fraction must be < 1, got {total}")
    r.check(not (replay_values.get("base_fraction") and not replay_values.get("base_tasks")),
            "replay.base_tasks: required when replay.base_fraction > 0")
    strategy = _strategy(r, top.get("strategy"))
    training = _training(r, top.get("training"))
    if r.problems:
        raise ConfigError.from_problems(f"invalid timeline config {source}", r.problems)
    return TimelineConfig(
        name=top["name"], base=top["base"], tasks=tasks, held_out=held_out,
        **{k: top[k] for k in ("namespace", "device", "private") if k in top},
        data=DataConfig(**data_values), strategy=strategy, training=training,
        replay=ReplayConfig(**replay_values), evaluation=EvalConfig(**eval_values),
    )


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``KEY.PATH=VALUE`` overrides (VALUE parsed as YAML) to a config mapping, returning a copy.

    Example: ``["training.steps=40", "strategy.init=base", "held_out=[tweet_sentiment]"]``.

    Raises:
        ConfigError: an override without ``=``, or a path through a non-mapping.
    """
    out = json.loads(json.dumps(dict(data), default=str))
    problems = []
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            problems.append(f"override {item!r}: expected KEY.PATH=VALUE")
            continue
        keys = path.strip().split(".")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict):
            problems.append(f"override {item!r}: {path} does not lead through mappings")
            continue
        node[keys[-1]] = yaml.safe_load(raw)
    if problems:
        raise ConfigError.from_problems("invalid overrides", problems)
    return out


def load_timeline_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TimelineConfig:
    """Read a timeline YAML, apply ``KEY.PATH=VALUE`` overrides, then validate.

    Raises:
        ConfigError: unreadable YAML or invalid content (all problems listed, each with its key path).
    """
    data = read_yaml(path, "timeline config")
    if isinstance(data, Mapping) and overrides:
        data = apply_overrides(data, overrides)
    return timeline_config_from_dict(data, source=os.fspath(path))
