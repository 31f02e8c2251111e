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
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import yaml

from hf_time import schema
from hf_time.config import read_yaml
from hf_time.errors import ConfigError
from hf_time.training_config import TrainingConfig

INITS = ("base", "latest", "merge_all", "ema")
DEPLOYS = ("latest", "merge_all", "ema", "greedy_soup")
# Time-aware weights of the offline merge (TIME §offline merging): w_j ∝ f(j), j = 1..k.
TIME_WEIGHTS = ("uniform", "linear", "sqrt", "square", "exp", "log", "reversed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")
_TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*$")


TASK_KINDS = ("text", "classification", "sft")
_LM_FIELDS = ("template", "verbalizers", "separator", "source", "prompt_column", "completion_column",
              "messages_column", "short_answer", "max_new_tokens")


@dataclass(frozen=True)
class TaskConfig:
    """One task of the timeline.

    Three kinds: ``text`` — labelled texts scored head-free against label descriptions (encoders; a
    built-in ``*_prompt`` task is the causal-LM version of a built-in one); ``classification`` —
    classification as generation for causal LMs (a template with ``{text}`` and one verbalizer per
    label); ``sft`` — instruction tuning (prompt/completion columns, or chat ``messages``).

    Attributes:
        name: the task's name; with no ``dataset`` (and kind ``text``), a built-in offline task.
        kind: ``text``, ``classification`` or ``sft``.
        dataset: a Hub dataset id ``org/name[@rev]``, a local folder (``save_to_disk`` output or data
            files) or a .csv/.tsv/.json/.jsonl/.parquet file; None for a built-in task.
        text_column, label_column: the columns holding the text and the label.
        label_descriptions: one phrase per label (in label order), or a mapping label name -> phrase.
        label_names: label names in id order (default: inferred from the data).
        n_train, n_test: overrides of ``data.n_train`` / ``data.n_test`` for this task.
        template, verbalizers, separator, source: a ``classification`` task's prompt (with ``{text}``),
            one completion per label (list, or mapping label name -> completion), what joins them, and
            the built-in text task whose data it uses when there is no ``dataset``.
        prompt_column, completion_column, messages_column, short_answer, max_new_tokens: an ``sft``
            task's columns, and whether greedy answers are also scored by exact match.
    """

    name: str = schema.field(help="a built-in task, or a name for `dataset`")
    kind: str = schema.field("text", "text (head-free), classification (prompt + verbalizers) or sft", choices=TASK_KINDS)
    dataset: str | None = schema.field(None, "Hub dataset org/name[@rev], a local folder or a data file")
    text_column: str = schema.field("text", "the column holding the text")
    label_column: str = schema.field("label", "the column holding the label")
    label_descriptions: tuple[str, ...] | Mapping[str, str] | None = schema.field(
        None, "one phrase per label, or a mapping label name -> phrase")
    label_names: tuple[str, ...] | None = schema.field(None, "label names in id order")
    n_train: int | None = schema.field(None, "override of data.n_train", ge=0)
    n_test: int | None = schema.field(None, "override of data.n_test", ge=2)
    template: str | None = schema.field(None, "classification: the prompt, with {text} where the text goes")
    verbalizers: tuple[str, ...] | Mapping[str, str] | None = schema.field(
        None, "classification: one completion per label (or label name -> completion)")
    separator: str = schema.field(" ", "classification: put between prompt and verbalizer")
    source: str | None = schema.field(None, "classification: a built-in text task whose data is used")
    prompt_column: str = schema.field("prompt", "sft: the prompt column")
    completion_column: str = schema.field("completion", "sft: the completion column")
    messages_column: str = schema.field("messages", "sft: the chat column (lists of {role, content})")
    short_answer: bool = schema.field(False, "sft: also score exact match of greedy answers")
    max_new_tokens: int = schema.field(32, "sft: generation cap for exact match", ge=1)

    @property
    def is_lm(self) -> bool:
        """A causal-LM task spec (classification as generation, or instruction tuning)."""
        return self.kind != "text"

    def lm_spec(self):
        """The :mod:`hf_time.lm_tasks` spec of a ``classification`` or ``sft`` task.

        Raises:
            ConfigError: what the spec itself refuses (no ``{text}``, no verbalizers...).
        """
        from hf_time.lm_tasks import lm_task_spec_from_dict

        keys = {"classification": ("template", "verbalizers", "separator", "source", "dataset", "text_column",
                                   "label_column", "label_names"),
                "sft": ("dataset", "prompt_column", "completion_column", "messages_column", "short_answer",
                        "max_new_tokens")}[self.kind]
        values = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        spec = {"name": self.name, **values}
        spec["kind"] = self.kind  # a task kind: set apart so no dict literal reads as a lineage kind (test_code_shape)
        return lm_task_spec_from_dict(spec)


@dataclass(frozen=True)
class DataConfig:
    """How every task is cut: training cap, balanced test size, split seed."""

    n_train: int | None = schema.field(None, "cap on training examples per task (None: all)", ge=0)
    n_test: int = schema.field(200, "balanced test examples per task", ge=2)
    seed: int = schema.field(0, "seed of the train/test split")


@dataclass(frozen=True)
class StrategyConfig:
    """TIME's three axes: where each expert starts, what is deployed, and the merge operator.

    Attributes:
        init: ``base`` (θ_0), ``latest`` (the previous expert), ``merge_all`` (merge of all experts so
            far) or ``ema`` (the running chain r_{t−1}).
        deploy: ``latest``, ``merge_all`` or ``ema``.
        method: a registry method (``hf-time ls``): ``dense`` methods merge through
            :func:`hf_time.api.merge`; ``sequential`` ones fold one expert at a time through
            :func:`hf_time.api.fold`, and then ``merge_all`` and ``ema`` both name that fold;
            ``lowrank`` ones (``lora_cat``, ``lora_svd``) merge LoRA experts of the base into an
            adapter (needs ``training.lora`` and ``init: base``).
        params: the method's parameters by public name.
        ema_weight: w of the dense EMA chain r_j = merge([θ^s_j, r_{j−1}], weights [w, 1−w]).
        time_weights: weights of ``merge_all`` over experts j = 1..k (``uniform`` by default).
        soup_n_val: ``deploy: greedy_soup`` (Wortsman et al., 2022): after step t the uniform average of
            the experts 1..t a greedy soup keeps, chosen on the last ``soup_n_val`` examples of each seen
            task's train split, which are then held out of training (text tasks).
    """

    init: str = schema.field("ema", "which weights the next expert trains from", choices=INITS)
    deploy: str = schema.field("ema", "which weights are served after each step", choices=DEPLOYS)
    method: str = schema.field("linear", "the merging technique (`hf-time ls --kind dense|sequential`)")
    params: Mapping[str, Any] = schema.field(default_factory=dict, help="the technique's parameters")
    ema_weight: float = schema.field(0.5, "w of the dense EMA chain", gt=0.0, le=1.0)
    time_weights: str = schema.field("uniform", "weights of merge_all over experts 1..k", choices=TIME_WEIGHTS)
    soup_n_val: int = schema.field(50, "deploy greedy_soup: examples of each task's train split held out of training "
                                   "to choose the soup on", ge=2)

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

    past_fraction: float = schema.field(0.0, "share of each batch from past tasks", ge=0.0, lt=1.0)
    base_fraction: float = schema.field(0.0, "share of each batch from the base-domain pool", ge=0.0, lt=1.0)
    base_tasks: tuple[str, ...] = schema.field((), "built-in tasks forming the base-domain pool")
    examples_per_task: int = schema.field(500, "examples taken from each task into the replay pools", ge=1)


EVAL_BACKENDS = ("hf_time", "lm_eval")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of every deployed model on every task (hf_time's scorers), and optionally on
    lm-evaluation-harness tasks (``backend: lm_eval``, causal LMs; scores kept as
    ``lm_eval/<task>/<metric>`` beside the accuracies and listed in the card's model-index)."""

    batch_size: int = schema.field(64, "texts per forward pass", ge=1)
    max_length: int = schema.field(32, "token cap per text", ge=2)
    backend: str = schema.field("hf_time", "hf_time, or lm_eval: also score lm-evaluation-harness `tasks`",
                                choices=EVAL_BACKENDS)
    tasks: tuple[str, ...] = schema.field((), "backend lm_eval: lm-evaluation-harness task names")
    include: str | None = schema.field(None, "backend lm_eval: a folder of task YAMLs (offline tasks)")
    limit: int | None = schema.field(None, "backend lm_eval: at most this many documents per task", ge=1)


@dataclass(frozen=True)
class FisherSettings:
    """``fisher:`` compute each expert's diagonal Fisher on its task right after training, and publish it
    (``fisher.safetensors``) in the expert's commit, so ``hf-time merge --method fisher`` runs on the
    timeline's experts. Full-weight experts only; not part of an expert's key (a cached expert is reused
    as it is)."""

    n_examples: int = schema.field(256, "training examples the Fisher is estimated on", ge=1)
    empirical: bool = schema.field(False, "gold labels instead of labels sampled from the model")
    word_embeddings: bool = schema.field(False, "also estimate the word embeddings (frozen in training by default)")


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

    name: str = schema.field(help="the timeline repo's name")
    base: str = schema.field(help="θ_0: org/name[@rev] or a folder ({namespace} is replaced)")
    tasks: tuple[TaskConfig, ...] = schema.field(help="the adaptation tasks, in order")
    namespace: str = schema.field("hf_time", "the Hub namespace of every repo")
    held_out: tuple[TaskConfig, ...] = schema.field((), "tasks never trained on (zero-shot retention)")
    data: DataConfig = schema.field(DataConfig(), "how every task is cut")
    strategy: StrategyConfig = schema.field(StrategyConfig(), "TIME's three axes")
    training: TrainingConfig = schema.field(TrainingConfig(), "how each expert is finetuned")
    replay: ReplayConfig = schema.field(ReplayConfig(), "replay mixed into training batches")
    evaluation: EvalConfig = schema.field(EvalConfig(), "evaluation settings")
    fisher: FisherSettings | None = schema.field(None, "compute each expert's Fisher after training (method fisher)")
    device: str | None = schema.field(None, "cpu, cuda[:i] or None (CUDA when present)")
    private: bool = schema.field(False, "create the repos private")

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
        if data["strategy"]["deploy"] != "greedy_soup":  # added later: only where it applies
            data["strategy"].pop("soup_n_val")
        if data.get("fisher") is None:  # added later: absent when unset, so earlier configs keep their keys
            data.pop("fisher", None)
        for key, default in (("backend", "hf_time"), ("tasks", []), ("include", None), ("limit", None)):
            if data["evaluation"].get(key) == default:
                data["evaluation"].pop(key)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------------
# loading


def _task_name_and_source(problems: list[str], task: TaskConfig, where: str) -> None:
    from hf_time.tasks import list_tasks

    if not _TASK_NAME_RE.match(task.name):
        problems.append(f"{where}.name: {task.name!r} must be letters, digits, '_', '-' or '.'")
    defaults = {f.attr: f.default for f in schema.fields(TaskConfig)}
    if task.is_lm:
        for key in ("label_descriptions",):
            if getattr(task, key) != defaults[key]:
                problems.append(f"{where}.{key}: only for text tasks; a {task.kind} task scores its completions")
        try:
            task.lm_spec()
        except ConfigError as e:  # "template: ..." names a field of this task
            fields = {f.attr for f in schema.fields(TaskConfig)}
            problems += [f"{where}.{p}" if p.split(":", 1)[0] in fields else f"{where}: {p}" for p in e.problems]
        if task.source is not None and task.source not in list_tasks():
            problems.append(f"{where}.source: unknown built-in task {task.source!r} (valid: {', '.join(list_tasks())})")
        return
    for key in _LM_FIELDS:
        if getattr(task, key) != defaults[key]:
            problems.append(f"{where}.{key}: only for kind classification or sft (this task is kind text)")
    if task.dataset is not None:
        return
    if task.name not in list_tasks():
        problems.append(f"{where}.name: unknown built-in task {task.name!r} (valid: {', '.join(list_tasks())}); "
                        "or give a `dataset`")
    for key in ("text_column", "label_column", "label_descriptions", "label_names"):
        if getattr(task, key) != defaults[key]:
            problems.append(f"{where}.{key}: only for tasks with a `dataset` (built-in tasks define their own)")


def _strategy_method(problems: list[str], strategy: StrategyConfig, training: TrainingConfig | None = None) -> None:
    from hf_time.errors import UnknownMethodError
    from hf_time.merges import LowRankMethod, get

    try:
        spec = get(strategy.method)
    except UnknownMethodError as e:
        problems.append(f"strategy.method: {e}")
        return
    if isinstance(spec, LowRankMethod):
        # A low-rank technique merges the experts' adapters in ΔW space: they must all be adapters of
        # θ_0 (LoRA experts trained from the base), and its output must be an adapter to deploy.
        why = []
        if training is not None and training.lora is None:
            why.append("the experts are LoRA adapters (set training.lora)")
        if strategy.init != "base":
            why.append("every expert trains from the base (strategy.init: base), so their adapters share θ_0")
        if spec.output != "adapter":
            why.append(f"its output is a deployable adapter ({strategy.method} writes a {spec.output} snapshot)")
        if why:
            problems.append(f"strategy.method: {strategy.method!r} merges LoRA adapters; a timeline can use it only if "
                            + " and ".join(why))
    elif spec.kind not in ("dense", "sequential"):
        problems.append(f"strategy.method: {strategy.method!r} is a {spec.kind} method; a timeline uses dense, "
                        "sequential or (with LoRA experts of the base) low-rank methods")
        return
    spec.collect_config(strategy.params, problems, path="strategy.params")


def timeline_config_from_dict(data: Any, source: str = "config") -> TimelineConfig:
    """Build a :class:`TimelineConfig` from parsed YAML, reporting every problem at once.

    Raises:
        ConfigError: one entry in ``problems`` per bad key, each naming its key path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    problems: list[str] = []
    data = dict(data)
    training = data.get("training")
    if isinstance(training, Mapping) and "replay_fraction" in training:
        problems.append("training.replay_fraction: set replay.past_fraction / replay.base_fraction instead")
        data["training"] = {k: v for k, v in training.items() if k != "replay_fraction"}
    lists: dict[str, list[TaskConfig | None]] = {}
    for key in ("tasks", "held_out"):  # read entry by entry, so every problem keeps its entry's index
        raw = data.pop(key, None)
        if raw is None:
            continue
        if not isinstance(raw, list):
            problems.append(f"{key}: expected a list of tasks, got {type(raw).__name__}")
            continue
        lists[key] = [schema.build(TaskConfig, {"name": e} if isinstance(e, str) else e, path=f"{key}[{i}]",
                                   problems=problems) for i, e in enumerate(raw)]
    if lists.get("tasks") == []:
        problems.append("tasks: must list at least one task")
    values = schema.read(TimelineConfig, data, problems=problems)
    for key in ("name", "base"):
        if key not in data:
            problems.append(f"{key}: required (a string)")
    if "tasks" not in lists and not any(p.startswith("tasks:") for p in problems):
        problems.append("tasks: required (a non-empty list of tasks)")
    _check(values, lists, problems)
    ev = values.get("evaluation")
    if ev is not None and (ev.backend == "lm_eval") != bool(ev.tasks):
        problems.append("evaluation.tasks: lm-evaluation-harness tasks go with backend: lm_eval (set both, or neither)")
    if values.get("fisher") is not None and getattr(values.get("training"), "lora", None) is not None:
        problems.append("fisher: a Fisher is computed for full-weight experts; remove it or training.lora")
    strategy = data.get("strategy")
    if "strategy" not in values and isinstance(strategy, Mapping):  # the section failed: still check its method
        method, params = strategy.get("method", StrategyConfig.method), strategy.get("params") or {}
        if isinstance(method, str) and isinstance(params, Mapping):
            _strategy_method(problems, StrategyConfig(method=method, params=params))
    if problems:
        raise ConfigError.from_problems(f"invalid timeline config {source}", list(dict.fromkeys(problems)))
    return TimelineConfig(**values, tasks=tuple(lists["tasks"]), held_out=tuple(lists.get("held_out", ())))


def _check(values: Mapping[str, Any], lists: Mapping[str, list[TaskConfig | None]], problems: list[str]) -> None:
    """The rules that relate fields to each other and to the registries of tasks and methods, on
    whatever was readable (so they are reported together with type and range problems)."""
    for key in ("name", "namespace"):
        value = values.get(key)
        if value is not None and not _NAME_RE.match(value):
            problems.append(f"{key}: {value!r} is not a valid Hub name (letters, digits, '-', '_', '.')")
    entries = [(f"{key}[{i}]", t) for key in ("tasks", "held_out") for i, t in enumerate(lists.get(key, ())) if t is not None]
    for where, task in entries:
        _task_name_and_source(problems, task, where)
    seen: set[str] = set()
    for where, task in entries:
        if task.name in seen:
            problems.append(f"{where}.name: task {task.name!r} is listed twice (adaptation and held-out tasks must be distinct)")
        seen.add(task.name)
    names = [t.name for _, t in entries]
    replay = values.get("replay")
    if replay is not None:
        for i, name in enumerate(replay.base_tasks):
            if name in names:
                problems.append(f"replay.base_tasks[{i}]: {name!r} is an adaptation or held-out task; "
                                "the base-domain pool must be other data")
        total = replay.past_fraction + replay.base_fraction
        if total >= 1:
            problems.append(f"replay: past_fraction + base_fraction must be < 1, got {total}")
        if replay.base_fraction and not replay.base_tasks:
            problems.append("replay.base_tasks: required when replay.base_fraction > 0")
    if values.get("strategy") is not None:
        _strategy_method(problems, values["strategy"], values.get("training", TrainingConfig()))


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
