"""``/{repo}/timeline``: walk the ``step-1 … step-t`` tags of a timeline repo.

Each tag is one deployed snapshot. Its row of the accuracy matrix comes from *that* snapshot's
``hf_time.json`` (the ``timeline`` section: ``step``, ``accuracy`` rows, ``metrics``), so the table
shows what each published commit says about itself; the base row, the column order and the held-out
marks come from the newest step (its ``timeline_state.json``). Each step links to its tree view,
its expert and a comparison with the step before; the newest ``plot.png`` is shown inline.
"""

from __future__ import annotations

import re
from typing import Any

from ..context import HubContext
from ..errors import RevisionNotFound
from ..messages import Request, Response
from ..storage import Repo
from . import nav, urls
from .html import Html, cell, h, html_errors, join, link, page, short, table
from .snapshots import PLOT_FILE, Snapshot, open_snapshot

_SUMMARY = (("a_ka", "A_KA"), ("a_zs", "A_ZS"), ("geometric_mean", "GM"))


def _num(x: Any, step: int | str, task: str) -> Html:
    shown = f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "–"
    return cell(shown, attrs=h('class="num" data-step="$s" data-task="$t"', s=step, t=task))


def _columns(snapshots: list[Snapshot]) -> tuple[list[str], set[str]]:
    """Task columns (the newest state's order, then any other task seen) and the held-out ones."""
    order, held = snapshots[-1].task_order()
    seen = [task for s in snapshots for task in s.accuracy()]
    return list(dict.fromkeys([*order, *seen])), held


def _step_info(snapshot: Snapshot, step: int) -> dict:
    """The step's entry (task, init, expert) in the snapshot's timeline section or state."""
    for source in (snapshot.section.get("steps"), (snapshot.state or {}).get("steps")):
        for entry in source or []:
            if isinstance(entry, dict) and entry.get("step") == step:
                return entry
    return {}


def _expert(info: dict) -> Html:
    expert = info.get("expert") if isinstance(info.get("expert"), dict) else {}
    repo_id, sha = expert.get("repo_id"), expert.get("sha")
    if not isinstance(repo_id, str):
        return Html("–")
    return link(urls.hub_ref(repo_id, sha if isinstance(sha, str) else None),
                f"{repo_id}@{expert.get('tag') or short(sha or '')}")


def _matrix(repo: Repo, steps: list[tuple[int, str, str]], snapshots: list[Snapshot]) -> Html:
    t, rid = repo.repo_type, repo.repo_id
    tasks, held = _columns(snapshots)
    latest = snapshots[-1]
    head = [cell("deployed after", tag="th"), cell("task", tag="th")]
    head += [cell(f"{task}*" if task in held else task, tag="th", attrs=h('class="num" data-task="$t"', t=task))
             for task in tasks]
    head += [cell(label, tag="th", attrs=Html('class="num"')) for _, label in _SUMMARY]
    head += [cell("links", tag="th")]
    base = latest.section.get("base_accuracy") or (latest.state or {}).get("base_accuracy") or {}
    rows = [[cell("base", tag="th"), "", *(_num(base.get(task), 0, task) for task in tasks),
             *(cell("", attrs=Html('class="num"')) for _ in _SUMMARY), ""]]
    previous = None
    for (step, tag, oid), snap in zip(steps, snapshots):
        acc, metrics = snap.accuracy(), snap.metrics()
        info = _step_info(snap, step) or _step_info(latest, step)
        links = [link(urls.tree(t, rid, tag), "tree"), h("expert $e", e=_expert(info))]
        if previous is not None:
            links.append(link(urls.compare(t, rid, previous, tag), f"compare with {previous}"))
        problems = join(h(' <span class="error">$p</span>', p=p) for p in snap.problems)
        rows.append([cell(h("$l $p", l=link(urls.tree(t, rid, tag), f"step {step}"), p=problems), tag="th",
                          attrs=h('data-step="$s" data-commit="$c"', s=step, c=oid)),
                     str(info.get("task", "–")),
                     *(_num(acc.get(task), step, task) for task in tasks),
                     *(_num(metrics.get(key), step, key) for key, _ in _SUMMARY),
                     join(links, " · ")])
        previous = tag
    note = h('<p class="muted">* held out: never trained on. Rows are read from each step\'s own hf_time.json.</p>')
    return h("$t$n", t=table(head, rows, attrs=Html('id="accuracy-matrix"')), n=note)


def _strategy(latest: Snapshot) -> Html:
    strategy = latest.section.get("strategy") or ((latest.state or {}).get("config") or {}).get("strategy") or {}
    if not isinstance(strategy, dict) or not strategy:
        return Html("")
    return h('<p>Strategy: $s</p>', s=join((h("<code>$k=$v</code>", k=k, v=v) for k, v in strategy.items()), " "))


@html_errors
def timeline_page(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """The accuracy matrix of every ``step-N`` tag, the strategy and the newest plot."""
    repo = nav.open_repo(ctx, req, m)
    steps = nav.step_tags(repo.refs())
    if not steps:
        raise RevisionNotFound(f"{repo.repo_id} has no step-N tags: it is not a timeline made by `hf-time timeline run`")
    snapshots = [open_snapshot(repo, tag) for _, tag, _ in steps]
    latest = snapshots[-1]
    t, rid = repo.repo_type, repo.repo_id
    plot = Html("")
    if PLOT_FILE in latest.tree:
        plot = h('<figure class="plot"><img id="timeline-plot" src="$src" alt="$alt"><figcaption>$cap</figcaption>'
                 "</figure>", src=urls.resolve(t, rid, latest.oid, PLOT_FILE),
                 alt=f"trajectory and accuracy matrix after {steps[-1][1]}",
                 cap=f"{PLOT_FILE} of {steps[-1][1]}")
    first, last = steps[0][1], steps[-1][1]
    compare = link(urls.compare(t, rid, first, last), f"compare {first} with {last}") if len(steps) > 1 else Html("")
    body = h("$head<h2>Timeline: $n steps</h2>$strategy<h3>Accuracy matrix</h3>$matrix<p>$compare</p>$plot",
             head=nav.header(repo, "timeline"), n=len(steps), strategy=_strategy(latest),
             matrix=_matrix(repo, steps, snapshots), compare=compare, plot=plot)
    return page(f"Timeline · {rid}", body)
