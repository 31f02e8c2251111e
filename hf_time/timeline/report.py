"""Reading a timeline back: its state from a Hub ref (``org/name``, ``org/name@step-3``, a sha) or a
folder, and plain-text tables of the accuracy matrix, the TIME metrics and the step timings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from hf_time.errors import RepoNotFoundError
from hf_time.hub import Hub
from hf_time.timeline.state import STATE_FILE, TimelineState


def load_state(ref: str | os.PathLike, hub: Hub | None = None) -> tuple[TimelineState, str]:
    """The timeline state at ``ref`` and the pinned reference it was read at.

    Args:
        ref: a timeline repo (``org/name`` = its latest step), a tag or sha (``org/name@step-2``), a
            snapshot folder, or a ``timeline_state.json`` file.
        hub: the Hub client (default: ``HF_ENDPOINT``).

    Raises:
        RepoNotFoundError, RevisionNotFoundError: no such repo or revision.
        RepoNotFoundError: the ref is not a timeline snapshot (no ``timeline_state.json``).
    """
    path = Path(os.fspath(ref))
    if path.is_file():
        return TimelineState.load(path), str(path.absolute())
    hub = hub or Hub()
    res = hub.resolve(ref)
    data = hub.read_json(res, STATE_FILE)
    if data is None:
        raise RepoNotFoundError(f"{res.pinned} holds no {STATE_FILE}; is it a timeline repo made by `hf-time timeline run`?")
    return TimelineState.from_dict(data), res.pinned


def _fmt(x: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.3f}"


def format_matrix(state: TimelineState) -> str:
    """The accuracy matrix as aligned text: base row, one row per step, then A_KA / A_ZS / GM."""
    tasks = list(state.adaptation_tasks) + list(state.held_out_tasks)
    # Full task names, each column as wide as its own name: a cut header ("movie_sentim") is a riddle.
    cols = [t + ("*" if t in state.held_out_tasks else "") for t in tasks]
    widths = [max(8, len(c) + 2) for c in cols]
    rows = ["base"] + [f"step {s.step} ({s.task})" for s in state.steps]
    first = max(len("deployed after"), *(len(r) for r in rows)) + 2
    lines = [f"{'deployed after':<{first}}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths))
             + f"{'A_KA':>8}{'A_ZS':>8}{'GM':>8}"]

    def tail(row) -> str:
        ka = sum(row[t] for t in state.adaptation_tasks) / len(state.adaptation_tasks)
        zs = sum(row[t] for t in state.held_out_tasks) / len(state.held_out_tasks) if state.held_out_tasks else None
        return _fmt(ka) + _fmt(zs) + _fmt((ka * zs) ** 0.5 if zs is not None else None)

    for label, acc in zip(rows, [state.base_accuracy] + [s.accuracy for s in state.steps]):
        lines.append(f"{label:<{first}}" + "".join(_fmt(acc[t], w) for t, w in zip(tasks, widths)) + tail(acc))
    return "\n".join(lines) + "\n(* held out: never trained on)"


def format_metrics(state: TimelineState) -> str:
    """A_KA, A_ZS, GM, BWT and forgetting after every step."""
    lines = [f"{'step':>4}{'A_KA':>8}{'A_ZS':>8}{'GM':>8}{'BWT':>8}{'forget':>8}"]
    for m in state.metrics():
        lines.append(f"{m['step']:>4}" + "".join(_fmt(m[k]) for k in ("a_ka", "a_zs", "geometric_mean", "bwt", "forgetting")))
    return "\n".join(lines)


def format_status(state: TimelineState, pinned: str) -> str:
    """A few lines: where, which strategy, how far, the last metrics, and the step refs."""
    s = state.config["strategy"]
    total = len(state.adaptation_tasks)
    lines = [f"timeline {state.repo_id} (read at {pinned})",
             f"  strategy: init={s['init']} deploy={s['deploy']} method={s['method']} params={s.get('params') or {}}",
             f"  base: {state.base.pinned or state.base.label}",
             f"  steps done: {state.done}/{total}" + (f" (next: {state.adaptation_tasks[state.done]})" if state.done < total else " (complete)")]
    final = state.final_metrics()
    if final:
        gm = final["geometric_mean"]
        lines.append(f"  after step {final['step']}: A_KA {final['a_ka']:.3f}  A_ZS "
                     + (f"{final['a_zs']:.3f}  GM {gm:.3f}" if gm is not None else "-"))
    for rec in state.steps:
        lines.append(f"  {state.repo_id}@step-{rec.step}: {rec.task}, expert {rec.expert.pinned or rec.expert.label}")
    return "\n".join(lines)


def format_timings(timings: Sequence, setup=None) -> str:
    """Per-step wall time, phases and the overhead share (resolve + merge + publish + card + state)."""
    phases = ("resolve", "train", "push_expert", "merge", "evaluate", "card", "publish", "state")
    widths = [max(9, len(p) + 2) for p in phases]  # full phase names ("push_expert", not "push_exp")
    lines = [f"{'step':>5}{'wall s':>8}" + "".join(f"{p:>{w}}" for p, w in zip(phases, widths)) + f"{'tok/s':>8}{'overhead':>10}"]
    rows = ([setup] if setup is not None else []) + list(timings)
    for t in rows:
        train = getattr(t, "train_loop", 0.0) or t.phases.get("train", 0.0)
        tps = f"{t.tokens / train:>8.0f}" if t.tokens and train else f"{'-':>8}"
        lines.append(f"{t.step if t.step else 'setup':>5}{t.wall:>8.1f}"
                     + "".join(f"{t.phases.get(p, 0.0):>{w}.2f}" for p, w in zip(phases, widths))
                     + tps + f"{100 * t.overhead_fraction:>9.1f}%")
    return "\n".join(lines)
