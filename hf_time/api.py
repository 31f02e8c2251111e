"""The Python API: merge, fold and revert models given by Hub id or folder, optionally publishing them.

:func:`tensor_values` answers, for a merged snapshot, which parameter values one of its tensors got
(gradients, filters, slices); :func:`moe` upcycles dense experts of one base into a mixture of experts;
:func:`align`, :func:`zipit` and :func:`pleas` (from :mod:`hf_time.align`) handle models of different inits;
:func:`fisher`, :func:`greedy_soup` and :func:`evaluate` are the data-aware commands (they read task data).

Every function here builds a request and hands it to :mod:`hf_time.pipeline`, the one chain of
resolve -> plan -> execute -> artifact -> snapshot -> publish that every kind of method runs
through; ``hf-time merge`` and ``hf-time revert`` call the same functions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from hf_time.align.config import MatchingConfig, PLeaSConfig, ZipItConfig
from hf_time.config import ExpertSpec, MergeConfig, slice_inputs
from hf_time.errors import ConfigError
from hf_time.hub import Hub
from hf_time.merges import get
from hf_time.moe.build import MoeResult, build_moe
from hf_time.moe.config import MoeConfig, moe_config_from_dict
from hf_time.pipeline import MergeResult, RunOptions, run, run_revert
from hf_time.pipeline.tensor_values import TensorValues, tensor_values
from hf_time.slices import from_data as slices_from_data

__all__ = ["MergeResult", "MoeResult", "TensorValues", "align", "evaluate", "fisher", "fold", "greedy_soup", "merge",
           "moe", "pleas", "revert", "tensor_values", "zipit"]


def merge(
    base: str | os.PathLike | None = None,
    experts: Sequence[str | os.PathLike | ExpertSpec] = (),
    method: str = "linear",
    *,
    params: Mapping[str, Any] | None = None,
    weights: Sequence[float] | None = None,
    out: str | os.PathLike | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    lines: tuple[float, float] | None = None,
    previous: str | os.PathLike | None = None,
    config: MergeConfig | None = None,
    slices: Sequence[Any] | None = None,
    tokenizer_source: str | None = None,
    chat_template: str | None = None,
    align: str | MatchingConfig | None = None,
    push_to: str | None = None,
    tag: str | None = None,
    private: bool | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
    allow_nonfinite: bool = False,
    max_shard_size: int | str | None = None,
    hub: Hub | None = None,
    progress: bool = True,
    title: str | None = None,
) -> MergeResult:
    """Merge ``experts`` onto ``base`` with any registry method, write the snapshot, optionally publish it.

    Dense methods merge full experts and LoRA adapters (as base + ΔW) into a full model; low-rank
    methods merge adapters into an adapter or an RMM snapshot; sequential methods fold one expert
    into ``previous`` (a snapshot an earlier fold wrote, whose lineage carries the method's state),
    or into the base at the first step. Either pass the pieces or a ready :class:`MergeConfig`.

    Args:
        base: θ_0 as ``org/name[@rev]`` or a folder.
        experts: expert references (or :class:`ExpertSpec` with weight and per-expert params).
        method: registry name (``hf-time ls``).
        params: method parameters by public name, e.g. ``{"density": 0.5, "lambda": 1.0}``; any value may
            be a gradient over the layers (``{"t": [0, 0.5, 1]}``) or a filter list
            (``{"t": [{"filter": "mlp", "value": 0.3}, {"value": 0.5}]}``), as in mergekit.
        weights: one weight per expert (default 1.0 each); a weight may be a gradient or filter list too.
        slices: assemble the output from layer ranges, mergekit's ``slices``: a list of
            ``{"sources": [{"model": REF, "layer_range": [a, b], "parameters": {...}}], "parameters": {...}}``
            (or :class:`~hf_time.slices.OutputSlice`); ``experts`` may then be empty (they are the
            slices' models). With ``passthrough`` this stacks layers.
        tokenizer_source: ``base``, ``union`` or one input's reference: the output vocabulary, every
            input's embeddings aligned to it.
        chat_template: a Jinja chat template for the output tokenizer, or ``auto`` (the inputs' most common).
        align: experts of other inits: ``"weight"``/``"activation"`` (or a :class:`~hf_time.align.config.MatchingConfig`)
            permutes each full expert onto the base before merging (``hf-time merge --align``).
        out: output folder (must not exist unless ``overwrite``).
        dtype: output dtype of floating tensors (default: the base's).
        device: ``cpu`` or ``cuda[:i]``.
        lines: LiNeS (alpha, beta) for methods that read θ_0.
        previous: the previous snapshot of a sequential merge.
        push_to: Hub repo id to publish the result to as one commit.
        tag: tag to put on that commit.
        allow_pickle: accept ``pytorch_model.bin`` checkpoints (loaded with ``weights_only=True``).
        allow_nonfinite: write a merge holding NaN/Inf (refused by default, naming tensor and input).
        max_shard_size: output shard size of a full model ("5GB", "500MB" or bytes).
        hub: the :class:`Hub` client to use (default: ``HF_ENDPOINT`` and ambient token).

    Returns:
        A :class:`MergeResult` (folder, :class:`~hf_time.lineage.Lineage`, published commit).

    Raises:
        ConfigError, UnknownMethodError: bad method, parameters or options (before any network call).
        OutputExistsError: ``out`` exists and ``overwrite`` is False (before any network call).
        RepoNotFoundError, RevisionNotFoundError, IncompatibleExpertsError, UnsafeCheckpointError:
            found from metadata, before any weight is downloaded.
    """
    if config is None and slices is not None:
        problems: list[str] = []
        typed = slices_from_data(slices, problems)
        if problems:
            raise ConfigError.from_problems("invalid slices", problems)
        ref, specs = slice_inputs(get(method), None if base is None else os.fspath(base), typed)
        config = MergeConfig(base=ref, experts=tuple(specs), method=method, params=dict(params or {}), dtype=dtype,
                             device=device, lines=lines, slices=typed, tokenizer_source=tokenizer_source,
                             chat_template=chat_template)
    if config is None:
        specs = [e if isinstance(e, ExpertSpec) else ExpertSpec(ref=os.fspath(e)) for e in experts]
        if weights is not None:
            if len(weights) != len(specs):
                raise ConfigError(f"got {len(weights)} weights for {len(specs)} experts; give one --weight per expert")
            specs = [ExpertSpec(s.ref, w, s.params) for s, w in zip(specs, weights)]
        if not specs:
            raise ConfigError("no experts given; pass at least one --expert")
        if base is None:  # a soup of full experts needs no θ_0; the first expert gives the file layout
            if get(method).requires_base:
                raise ConfigError(f"a base model is required for {method!r}; pass --base")
            base = specs[0].ref
        config = MergeConfig(base=os.fspath(base), experts=tuple(specs), method=method, params=dict(params or {}),
                             dtype=dtype, device=device, lines=lines,
                             previous=None if previous is None else os.fspath(previous),
                             tokenizer_source=tokenizer_source, chat_template=chat_template)
    if align is not None:
        config = dataclasses.replace(config, align=align if isinstance(align, MatchingConfig) else MatchingConfig(method=align))
    options = RunOptions(out=os.fspath(out) if out is not None else config.out, overwrite=overwrite,
                         allow_pickle=allow_pickle, allow_nonfinite=allow_nonfinite, max_shard_size=max_shard_size, push_to=push_to or config.push_to,
                         tag=tag or config.tag, private=private, title=title, progress=progress)
    return run(config, options, hub=hub)


def fold(previous: str | os.PathLike | None, base: str | os.PathLike, expert: str | os.PathLike | ExpertSpec,
         method: str, out: str | os.PathLike, *, params: Mapping[str, Any] | None = None,
         state: Mapping[str, Any] | None = None, dtype: str | None = None, device: str = "cpu",
         overwrite: bool = False, push_to: str | None = None, tag: str | None = None, hub: Hub | None = None,
         progress: bool = True) -> MergeResult:
    """Fold one new expert into the running merge of a sequential method (one step of a chain).

    ``previous`` is the snapshot θ^(t−1) an earlier fold wrote (a folder or ``org/name@rev``), None
    at the first step; its ``hf_time.json`` holds the state the fold continues from. This is
    :func:`merge` with a sequential method and ``previous``, so ``hf-time merge --method opcm
    --previous REF`` does the same, and so does a timeline.

    Args:
        params: method parameters by public name; must equal those of the earlier folds.
        state: the incoming state, when the previous snapshot does not carry it (or to override it).

    Raises:
        ConfigError: a method that is not sequential, bad parameters, or a state that is missing, from
            another method or parameters, or lacks a key (each named).
    """
    spec = get(method)
    if spec.kind != "sequential":
        raise ConfigError(f"method {spec.name!r} is of kind {spec.kind!r}; fold runs sequential methods "
                          "(see `hf-time ls --kind sequential`)")
    one = expert if isinstance(expert, ExpertSpec) else ExpertSpec(os.fspath(expert))
    config = MergeConfig(base=os.fspath(base), experts=(one,), method=method, params=dict(params or {}), dtype=dtype,
                         device=device, previous=None if previous is None else os.fspath(previous))
    options = RunOptions(out=os.fspath(out), overwrite=overwrite, push_to=push_to, tag=tag, progress=progress)
    return run(config, options, hub=hub, state=state)


def revert(ref: str | os.PathLike, expert: int | str, *, out: str | os.PathLike, dense: bool = False,
           dtype: str | None = None, push_to: str | None = None, tag: str | None = None, private: bool | None = None,
           overwrite: bool = False, allow_pickle: bool = False, max_shard_size: int | str | None = None,
           hub: Hub | None = None, progress: bool = True, title: str | None = None) -> MergeResult:
    """Rebuild expert ``expert`` of an RMM snapshot as a PEFT adapter (or, ``dense``, merged into the base).

    Args:
        ref: the snapshot, ``org/name[@rev]`` or a folder.
        expert: 0-based index, or the expert's name / reference as listed in the snapshot's card.
        out: output folder (must not exist unless ``overwrite``).
        dense: write base + ΔW_i as a transformers folder instead of an adapter.
        dtype: output dtype (default: the adapter's float32, or the base's for ``dense``).
        push_to, tag, private: publish the result as one commit.

    Returns:
        A :class:`MergeResult` whose lineage has kind ``revert``.

    Raises:
        ConfigError: ``ref`` is not an RMM snapshot.
        UnknownExpertError: no such expert (index out of range or unknown name).
        OutputExistsError: ``out`` exists and ``overwrite`` is False (before any network call).
    """
    options = RunOptions(out=os.fspath(out), overwrite=overwrite, allow_pickle=allow_pickle,
                         max_shard_size=max_shard_size, push_to=push_to, tag=tag, private=private, title=title,
                         progress=progress)
    return run_revert(ref, expert, options, dense=dense, dtype=dtype, hub=hub)


def moe(config: MoeConfig | Mapping[str, Any], *, out: str | os.PathLike | None = None, overwrite: bool = False,
        push_to: str | None = None, tag: str | None = None, private: bool | None = None, hub: Hub | None = None,
        progress: bool = True, title: str | None = None) -> MoeResult:
    """Upcycle dense experts of one base into a Mixtral or Qwen2-MoE model (what ``hf-time moe`` runs).

    Args:
        config: a :class:`~hf_time.moe.config.MoeConfig`, or the same as plain data (mergekit-moe's keys:
            ``base_model``, ``experts: [{source_model, positive_prompts, negative_prompts}]``,
            ``gate_mode``, ``experts_per_token``, ``architecture``, ``shared_experts``, ``dtype``).
        out: output folder (default: the config's ``out``).
        push_to, tag, private: publish the result as one commit.

    Returns:
        A :class:`~hf_time.moe.build.MoeResult` whose lineage has kind ``moe``.

    Raises:
        ConfigError: a bad config (every problem at once, before any network call).
        IncompatibleExpertsError: an expert that is not a finetune of the base.
    """
    if not isinstance(config, MoeConfig):
        config = moe_config_from_dict(dict(config))
    return build_moe(config, out=None if out is None else os.fspath(out), overwrite=overwrite, push_to=push_to,
                     tag=tag, private=private, hub=hub, progress=progress, title=title)


# Models of different inits (hf_time.align). Imported on call: linear assignment (scipy) is not on the merge path.
def align(reference: str | os.PathLike, expert: str | os.PathLike, config: MatchingConfig | None = None, *,
          out: str | os.PathLike, **options):
    """Permute ``expert`` into ``reference``'s basis (what ``hf-time align`` runs): the same function, ready to merge.

    ``config`` is a :class:`~hf_time.align.config.MatchingConfig` (default: weight matching); ``options`` are
    :func:`hf_time.align.build.align`'s (``overwrite``, ``push_to``, ``tag``, ``private``, ``hub``, ``progress``,
    ``title``). Returns an :class:`~hf_time.align.build.AlignResult` whose lineage has kind ``align``.
    """
    from hf_time.align.build import align as run

    return run(os.fspath(reference), os.fspath(expert), config or MatchingConfig(), out=out, **options)


def zipit(experts: Sequence[str | os.PathLike], config: ZipItConfig, *, out: str | os.PathLike, **options):
    """Merge two models of different inits by ZipIt! into a trunk plus one head per model (``hf-time zipit``).

    See :func:`hf_time.align.merge_build.zipit`; returns a :class:`~hf_time.align.merge_build.MultiHeadResult`.
    """
    from hf_time.align.merge_build import zipit as run

    return run([os.fspath(e) for e in experts], config, out=out, **options)


def pleas(experts: Sequence[str | os.PathLike], config: PLeaSConfig, *, out: str | os.PathLike, **options):
    """Merge two models of different inits by PLeaS to a target MLP width (``hf-time pleas``).

    See :func:`hf_time.align.merge_build.pleas`; returns a :class:`~hf_time.align.merge_build.MultiHeadResult`.
    """
    from hf_time.align.merge_build import pleas as run

    return run([os.fspath(e) for e in experts], config, out=out, **options)


def _task(task) -> Any:
    from hf_time.timeline.config import TaskConfig

    return TaskConfig(name=task) if isinstance(task, str) else task


def fisher(ref: str | os.PathLike, task, **options):
    """The diagonal Fisher of ``ref`` on ``task`` (a built-in name or a timeline ``TaskConfig``), as ``hf-time fisher``.

    ``options`` are :func:`hf_time.fisher_run.run_fisher`'s (``config``, ``data``, ``base``, ``out``, ``push_to``,
    ``hub``, ``device``, ``progress``). Returns a :class:`~hf_time.fisher_run.FisherResult`.
    """
    from hf_time.fisher_run import run_fisher

    return run_fisher(os.fspath(ref), _task(task), **options)


def greedy_soup(experts: Sequence[str | os.PathLike], tasks: Sequence[Any], *, out: str | os.PathLike, **options):
    """The greedy soup of ``experts`` chosen on ``tasks``' held-out data (loaded tasks), as ``hf-time soup``.

    See :func:`hf_time.soup.run_greedy_soup`; returns (its :class:`MergeResult`, the :class:`~hf_time.soup.SoupResult`).
    """
    from hf_time.soup import run_greedy_soup

    return run_greedy_soup([os.fspath(e) for e in experts], tasks, out=out, **options)


def evaluate(ref: str | os.PathLike, tasks: Sequence[Any] = (), **options):
    """Score ``ref`` on ``tasks`` (built-in names or ``TaskConfig``), as ``hf-time eval``.

    See :func:`hf_time.eval_run.run_eval` (``split``, ``push_to_card``, ``backend``, ``lm_eval_tasks``...);
    returns an :class:`~hf_time.eval_run.EvalReport`.
    """
    from hf_time.eval_run import run_eval

    return run_eval(os.fspath(ref), [_task(t) for t in tasks], **options)
