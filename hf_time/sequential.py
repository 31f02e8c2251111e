"""Sequential merging: fold one new expert at a time into a running merge, in constant memory.

A timeline of T experts is T calls of :func:`fold`. Each call reads three local model folders — the
running merge θ^(t−1) (``previous``), the base θ_0 and the new expert θ_t — and writes θ^(t) as a full
transformers folder. What a method must carry between steps besides the weights (OPCM's λ_t and norm
list) is its JSON *state*, returned by one fold and passed to the next. Memory is that of the dense
engine, whose loop :func:`fold` reuses: a few buffers the size of the largest tensor, whatever t.

The contract of a ``kind="sequential"`` method (the methods live in :mod:`hf_time.merges`):

``fn(previous, base, expert, config, ctx, state) -> Tensor``, pure, for one tensor name:
    ``previous`` is θ^(t−1) of this tensor, or None at t = 1 (the method applies its own θ^(0) rule);
    ``base`` θ_0, ``expert`` θ_t (compute dtype, read-only); ``ctx`` a
    :class:`~hf_time.merges.TensorContext` (name, layer); ``state`` the incoming state with ``"t"``
    set to this fold's step. Returns θ^(t) — or, in a two-pass fold, the update S of
    θ^(t) = θ_0 + S/λ_t.

Optional hooks on the method's frozen config (duck-typed, as the registry's ``validate()``):
    ``state_keys`` (class variable): keys a state from a previous fold must carry.
    ``check_state(state) -> list[str]``: further problems with an incoming state.
    ``two_pass(t) -> bool``: whether fold t needs a global rescale. Pass 1 writes each S to a
        temporary float32 safetensors file while ‖S‖ is accumulated; pass 2 writes θ_0 + S/λ_t.
    ``next_state(state, stats) -> (dict, divisor | None)``: the method's keys of the next state, and
        λ_t for a two-pass fold. ``stats`` is a :class:`FoldStats`.

Every state also carries ``method``, ``t`` (experts folded so far) and ``params`` (the resolved
parameters): a fold refuses a state from another method or with other parameters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from hf_time import __version__, engine
from hf_time.api import CARRIED_FILES
from hf_time.cards import LINEAGE_FILE, sha256_file, write_json
from hf_time.compat import check_compatible
from hf_time.errors import ConfigError, OutputExistsError
from hf_time.io import Checkpoint, atomic_output_dir, copy_files, parse_dtype, parse_size
from hf_time.merges import MethodSpec, get

logger = logging.getLogger(__name__)

MAX_SHARD_SIZE = "5GB"  # as hf_time.api.merge's default
_SCRATCH = ".pass1"  # inside the atomic temp dir, so a failed fold cleans it up with the rest
_BASE_KEYS = ("method", "t", "params")


@dataclass(frozen=True)
class FoldResult:
    """What :func:`fold` produced.

    Attributes:
        out_dir: a full transformers model folder: sharded safetensors weights, the carried base
            files (config, tokenizer) and ``hf_time.json``.
        state: the JSON-serializable state to pass to the next fold.
    """

    out_dir: Path
    state: dict


@dataclass(frozen=True)
class FoldStats:
    """Whole-model statistics of one fold, given to a method's ``next_state`` hook.

    Attributes:
        task_vector_norm: ‖θ_t − θ_0‖ over all floating tensors (one flattened vector).
        update_norm: ‖S‖ of the pass-1 outputs (two-pass folds only, else None).
    """

    task_vector_norm: float
    update_norm: float | None


class _NormAccumulator:
    """Sums of squares accumulated tensor by tensor, in float64 so the order of tensors barely matters."""

    def __init__(self) -> None:
        self.tau_sq = 0.0
        self.update_sq = 0.0

    def stats(self, two_pass: bool) -> FoldStats:
        return FoldStats(math.sqrt(self.tau_sq), math.sqrt(self.update_sq) if two_pass else None)


def fold(
    previous: str | os.PathLike | None,
    base: str | os.PathLike,
    expert: str | os.PathLike,
    method: str,
    out: str | os.PathLike,
    *,
    params: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> FoldResult:
    """Fold one new expert into the running merge.

    ``previous`` is the folder of the running merge θ^(t−1) (None at the first step, meaning θ^(0)
    per the method's rule), ``base`` θ_0, ``expert`` θ_t (all local folders). ``state`` is what the
    previous fold returned (None at t=1). Memory: a small multiple of the largest tensor, independent
    of t; a two-pass method (OPCM) also writes a float32 scratch copy of the update to disk.

    Args:
        previous: folder of the running merge θ^(t−1); None at the first step (θ^(0) is then the
            method's rule: θ_0 for EMA and continual task arithmetic, nothing for averaging and OPCM).
        base: folder of θ_0.
        expert: folder of θ_t.
        method: a sequential registry method (``hf-time ls --kind sequential``).
        out: output folder, written atomically (temp dir + rename).
        params: method parameters by public name; must equal those of the earlier folds.
        state: the ``state`` of the previous :class:`FoldResult`; None exactly when ``previous`` is None.
        dtype: output dtype of floating tensors (default: the base's); compute is float32.
        device: ``cpu`` or ``cuda[:i]``.
        overwrite: replace an existing ``out`` (only once the new one is complete).
        progress: show progress bars.

    Returns:
        A :class:`FoldResult` with the folder and the state for the next fold.

    Raises:
        UnknownMethodError: unknown method name.
        ConfigError: a method of another kind, bad parameters, or a state that is missing, from
            another method or parameters, or lacks a key (each named).
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
        IncompatibleExpertsError: expert or previous do not match the base (architecture, names, shapes).
    """
    spec = get(method)
    if spec.kind != "sequential":
        raise ConfigError(f"method {spec.name!r} is of kind {spec.kind!r}; fold runs sequential methods "
                          "(see `hf-time ls --kind sequential`)")
    config = spec.make_config(params)
    resolved = {p.name: getattr(config, p.field) for p in spec.parameters()}
    incoming = _incoming_state(spec, config, resolved, previous, state)
    t = incoming["t"]
    out_dtype = parse_dtype(dtype)
    if Path(out).exists() and not overwrite:
        raise OutputExistsError(f"output directory {Path(out).absolute()} already exists; choose another out or pass overwrite")

    folders = {"base": Path(base), "expert": Path(expert), **({"previous": Path(previous)} if previous is not None else {})}
    cks = {role: Checkpoint(folder) for role, folder in folders.items()}
    try:
        check_compatible(str(folders["base"]), _read_config(folders["base"]), cks["base"].infos,
                         [(str(folders[r]), _read_config(folders[r]), cks[r].infos) for r in ("expert", "previous") if r in cks])
        two_pass = bool(getattr(config, "two_pass", lambda t: False)(t))
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            writer = engine.make_writer(tmp, cks["base"].infos, out_dtype, parse_size(MAX_SHARD_SIZE), {"hf_time": __version__})
            extra = _run_passes(spec, config, incoming, cks, writer, tmp, two_pass, device, progress)
            weight_files = writer.close()
            new_state = {"method": spec.name, "t": t, "params": resolved, **extra}
            _write_folder_files(tmp, folders, spec, resolved, new_state, dtype, device, weight_files)
    finally:
        for ck in cks.values():
            ck.close()
    out_dir = Path(out).absolute()
    logger.info("folded expert %d into %s with %s", t, out_dir, spec.name)
    return FoldResult(out_dir=out_dir, state=new_state)


def _run_passes(spec: MethodSpec, config: Any, incoming: dict, cks: dict[str, Checkpoint], writer, tmp: Path,
                two_pass: bool, device: str, progress: bool) -> dict[str, Any]:
    """Run the method through the engine's streaming loop (once, or twice with a global rescale)."""
    next_state = getattr(config, "next_state", None)
    norms = _NormAccumulator()
    track = next_state is not None  # norms cost a subtraction per tensor: only for methods that use them
    sources = [cks["previous"], cks["expert"]] if "previous" in cks else [cks["expert"]]
    step = _tensor_step(spec.fn, config, incoming, has_previous="previous" in cks, norms=norms if track else None,
                        two_pass=two_pass)
    plan = engine.MergePlan(spec=dataclasses.replace(spec, fn=step, uses_base=True), config=config,
                            weights=(1.0,) * len(sources), device=device)
    if two_pass and next_state is None:
        raise ValueError(f"{spec.name}: a two-pass method must define next_state() to give the divisor")
    if not two_pass:
        engine.run(cks["base"], sources, plan, writer, progress=progress)
        return next_state(incoming, norms.stats(False))[0] if track else {}

    # Pass 1: S per tensor into a float32 scratch file (one shard); ‖S‖² accumulates meanwhile.
    scratch = tmp / _SCRATCH
    scratch.mkdir()
    s_writer = engine.make_writer(scratch, cks["base"].infos, plan.compute_dtype, 2**62)
    engine.run(cks["base"], sources, plan, s_writer, progress=progress)
    s_writer.close()
    extra, divisor = next_state(incoming, norms.stats(True))
    if divisor is None or not (math.isfinite(divisor) and divisor > 0):
        raise ValueError(f"{spec.name}: a two-pass fold needs a positive finite divisor, got {divisor!r}")
    # Pass 2: θ^(t) = θ_0 + S/λ_t, S read back from the scratch file into reusable buffers again.
    with Checkpoint(scratch) as s_ck:
        rescale = dataclasses.replace(spec, fn=lambda b, ups, _c, _ctx: ups[0].div(divisor).add_(b), uses_base=True)
        engine.run(cks["base"], [s_ck], dataclasses.replace(plan, spec=rescale, weights=(1.0,)), writer, progress=progress)
    shutil.rmtree(scratch)
    return extra


def _tensor_step(fn: Callable[..., torch.Tensor], config: Any, state: dict, *, has_previous: bool,
                 norms: _NormAccumulator | None, two_pass: bool) -> Callable[..., torch.Tensor]:
    """Adapt a sequential method to the engine's dense call ``(base, experts, config, ctx)``."""

    def step(base: torch.Tensor, experts: list[torch.Tensor], _config: Any, ctx) -> torch.Tensor:
        previous, expert = experts if has_previous else (None, experts[0])
        out = fn(previous, base, expert, config, dataclasses.replace(ctx, weights=(1.0,)), state)
        if norms is not None:
            norms.tau_sq += float(torch.linalg.vector_norm(expert - base, dtype=torch.float64)) ** 2
            if two_pass:
                norms.update_sq += float(torch.linalg.vector_norm(out, dtype=torch.float64)) ** 2
        return out

    return step


def _incoming_state(spec: MethodSpec, config: Any, resolved: dict, previous, state) -> dict:
    """The state this fold starts from, with ``t`` set to this fold's step; every problem at once.

    Raises:
        ConfigError: previous/state given without the other, or a state that does not fit.
    """
    if previous is None and state is None:
        return {"method": spec.name, "t": 1, "params": resolved}
    if previous is None:
        raise ConfigError("a state was given without `previous`; pass the folder of the fold that returned it")
    if state is None:
        raise ConfigError(f"`previous` was given without its state; pass the `state` returned by the {spec.name} fold "
                          "that wrote it (also in its hf_time.json)")
    if not isinstance(state, Mapping):
        raise ConfigError(f"state must be a mapping (the `state` of a FoldResult), got {type(state).__name__}")
    problems = [f"state is missing key {key!r}" for key in (*_BASE_KEYS, *getattr(config, "state_keys", ())) if key not in state]
    if "method" in state and state["method"] != spec.name:
        problems.append(f"state key 'method' is {state['method']!r} but this fold runs {spec.name!r}; "
                        f"a state only continues the method that produced it")
    t_prev = state.get("t")
    if "t" in state and not (isinstance(t_prev, int) and not isinstance(t_prev, bool) and t_prev >= 1):
        problems.append(f"state key 't' must be the number of experts folded so far (>= 1), got {t_prev!r}")
    old = state.get("params")
    if "params" in state:
        if not isinstance(old, Mapping):
            problems.append(f"state key 'params' must be a mapping, got {old!r}")
        else:
            problems += [f"state key 'params': {k!r} was {old.get(k)!r} in earlier folds but is {v!r} now; "
                         "keep the parameters of a sequential merge fixed" for k, v in resolved.items() if old.get(k) != v]
    if problems:
        raise ConfigError.from_problems(f"invalid state for {spec.name!r}", problems)
    incoming = {**state, "t": t_prev + 1}
    problems = list(getattr(config, "check_state", lambda s: [])({**state}))
    if problems:
        raise ConfigError.from_problems(f"invalid state for {spec.name!r}", problems)
    return incoming


def _read_config(folder: Path) -> dict | None:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _ref(folder: Path) -> dict[str, Any]:
    # Same shape as hf_time.api's records; the timeline fills repo_id/sha when it resolved a Hub ref.
    return {"ref": str(folder.absolute()), "repo_id": None, "revision": None, "sha": None}


def _write_folder_files(tmp: Path, folders: dict[str, Path], spec: MethodSpec, resolved: dict, state: dict,
                        dtype: str | None, device: str, weight_files: list[str]) -> None:
    """Carried base files (config with the output dtype, tokenizer) and the lineage ``hf_time.json``."""
    copy_files(folders["base"], tmp, CARRIED_FILES)
    out_dtype = parse_dtype(dtype)
    if out_dtype is not None and (tmp / "config.json").is_file():
        cfg = json.loads((tmp / "config.json").read_text())
        cfg["dtype"] = str(out_dtype).removeprefix("torch.")
        cfg.pop("torch_dtype", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    lineage = {
        "hf_time_version": __version__,
        "kind": "fold",
        "method": spec.name,
        "summary": spec.summary,
        "paper": spec.paper,
        "parameters": resolved,
        "t": state["t"],
        "state": state,
        "dtype": dtype,
        "device": device,
        "base": _ref(folders["base"]),
        "expert": _ref(folders["expert"]),
        "previous": _ref(folders["previous"]) if "previous" in folders else None,
        "files": {f: sha256_file(tmp / f) for f in weight_files},
    }
    write_json(tmp / LINEAGE_FILE, lineage)
