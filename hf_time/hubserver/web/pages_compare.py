"""Two snapshots side by side: ``/{repo}/compare/{rev_a}...{rev_b}``.

Compares what each commit's ``hf_time.json`` records (kind, method and resolved parameters, pinned
inputs, output files) and what it measured (per-task accuracy and TIME metrics, from the timeline
section or the card's ``model-index``). Rows that differ are marked. ``/{repo}/compare`` is a form
to pick the two revisions (``?a=&b=`` redirects to the compare URL), so no script is needed.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from hf_time.lineage import ExpertRecord, Lineage, RefRecord

from ..context import HubContext
from ..errors import BadRequest
from ..messages import Request, Response
from ..storage import Repo
from . import nav, urls
from .html import Html, cell, esc, h, html_errors, join, link, page, redirect, short, table
from .snapshots import Snapshot, open_snapshot

_METRICS = (("a_ka", "A_KA"), ("a_zs", "A_ZS"), ("geometric_mean", "GM"), ("bwt", "BWT"), ("forgetting", "forgetting"))


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _row(label: object, a: object, b: object) -> Html:
    """A row with the ``differs`` class when the two sides are not equal."""
    differs = Html(' class="differs"') if a != b else Html("")
    return h("<tr$d><th>$l</th><td>$a</td><td>$b</td></tr>", d=differs, l=label,
             a=a if isinstance(a, Html) else _text(a), b=b if isinstance(b, Html) else _text(b))


def _side_table(rows: list[Html], a: Snapshot, b: Snapshot, attrs: str) -> Html:
    return h("<table $attrs><thead><tr><th></th><th>A: $ra</th><th>B: $rb</th></tr></thead><tbody>$rows</tbody></table>",
             attrs=Html(attrs), ra=a.rev, rb=b.rev, rows=join(rows))


def _parameters(lineage: Lineage | None) -> dict:
    return dict(lineage.method.parameters) if lineage is not None and lineage.method is not None else {}


def _lineage_rows(sa: Snapshot, sb: Snapshot) -> list[Html]:
    """What each lineage records: kind, method and every resolved parameter, output, timeline step."""
    a, b = sa.lineage, sb.lineage

    def both(label: str, fn) -> Html:
        return _row(label, fn(a) if a is not None else None, fn(b) if b is not None else None)

    rows = [both("kind", lambda x: x.kind), both("method", lambda x: x.method and x.method.name)]
    pa, pb = _parameters(a), _parameters(b)
    rows += [_row(h("parameter <code>$k</code>", k=k), pa.get(k), pb.get(k)) for k in sorted({*pa, *pb})]
    rows += [both("LiNeS", lambda x: x.method and x.method.lines), both("output format", lambda x: x.output.format),
             both("dtype", lambda x: x.output.dtype), both("hf_time version", lambda x: x.hf_time_version)]
    if sa.step is not None or sb.step is not None:
        rows.append(_row("timeline step", sa.step, sb.step))
    sta, stb = sa.section.get("strategy") or {}, sb.section.get("strategy") or {}
    rows += [_row(f"strategy {k}", sta.get(k), stb.get(k)) for k in sorted({*sta, *stb})]
    return rows


def _ref(record: RefRecord | None) -> Html:
    """A pinned input: a link to its tree page on this server when it is a Hub ref, else the path."""
    if record is None:
        return esc("–")
    if record.is_hub and record.repo_id:
        text = f"{record.repo_id}@{short(record.sha)}" if record.sha else record.ref
        shown = link(urls.hub_ref(record.repo_id, record.sha), text)
    else:
        shown = h("<code>$r</code> (local)", r=record.ref)
    if isinstance(record, ExpertRecord):
        extra = f"weight {record.weight}" + (f", {_text(dict(record.parameters))}" if record.parameters else "")
        shown = h("$s <span class=\"muted\">$e</span>", s=shown, e=extra)
    return shown


def _input_rows(a: Lineage | None, b: Lineage | None) -> list[Html]:
    rows = []
    for role in ("base", "previous", "source"):
        ra, rb = getattr(a, role, None), getattr(b, role, None)
        if ra is not None or rb is not None:
            rows.append(_row(role, _ref(ra), _ref(rb)))
    ea, eb = (a.experts if a else ()), (b.experts if b else ())
    for i in range(max(len(ea), len(eb))):
        rows.append(_row(f"expert {i + 1}", _ref(ea[i] if i < len(ea) else None), _ref(eb[i] if i < len(eb) else None)))
    return rows


def _number(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "–"


def _delta_cell(x: Any, y: Any) -> Html:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
        return cell("–", attrs=Html('class="num"'))
    d = y - x
    cls = "num better" if d > 0 else "num worse" if d < 0 else "num"
    return cell(f"{d:+.3f}", attrs=h('class="$c"', c=cls))


def _score_table(names: list[tuple[str, str]], va: dict, vb: dict, attrs: str) -> Html:
    rows = [[cell(label, tag="th"), cell(_number(va.get(key)), attrs=Html('class="num"')),
             cell(_number(vb.get(key)), attrs=Html('class="num"')), _delta_cell(va.get(key), vb.get(key))]
            for key, label in names]
    return table(["", "A", "B", "B − A"], rows, attrs=Html(attrs))


def _accuracy(a: Snapshot, b: Snapshot) -> Html:
    acc_a, acc_b = a.accuracy(), b.accuracy()
    order_a, held_a = a.task_order()
    order_b, held_b = b.task_order()
    tasks = list(dict.fromkeys([*order_a, *order_b, *acc_a, *acc_b]))
    if not tasks:
        return h('<p class="muted">Neither snapshot records accuracies (no timeline section, no model-index).</p>')
    held = held_a | held_b
    names = [(t, f"{t} (held out)" if t in held else t) for t in tasks]
    return _score_table(names, acc_a, acc_b, 'id="compare-accuracy"')


def _files(a: Lineage | None, b: Lineage | None) -> list[Html]:
    fa = dict(a.output.files) if a else {}
    fb = dict(b.output.files) if b else {}
    return [_row(h("<code>$f</code>", f=f), short(fa[f]) if f in fa else None, short(fb[f]) if f in fb else None)
            for f in sorted({*fa, *fb})]


def _snapshot_rows(repo: Repo, a: Snapshot, b: Snapshot) -> list[Html]:
    t, rid = repo.repo_type, repo.repo_id
    return [_row("revision", link(urls.tree(t, rid, a.rev), a.rev), link(urls.tree(t, rid, b.rev), b.rev)),
            _row("commit", link(urls.commit(t, rid, a.oid), short(a.oid)), link(urls.commit(t, rid, b.oid), short(b.oid))),
            _row("title", a.record["title"], b.record["title"]),
            _row("date", a.record["date"], b.record["date"])]


def _form(repo: Repo, a: str = "", b: str = "") -> Html:
    refs = repo.refs()
    names = sorted({*refs["branches"], *refs["tags"]}, key=lambda n: [int(p) if p.isdigit() else p
                                                                      for p in re.split(r"(\d+)", n)])
    options = join(h('<option value="$n">', n=n) for n in names)
    return h('<form method="get" action="$action"><datalist id="revs">$options</datalist>'
             '<label>A <input name="a" list="revs" value="$a" required></label> '
             '<label>B <input name="b" list="revs" value="$b" required></label> '
             '<button type="submit">Compare</button></form>',
             action=urls.compare(repo.repo_type, repo.repo_id), options=options, a=a, b=b)


@html_errors
def compare_form(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``/{repo}/compare[?a=&b=]``: the form, or a redirect to the comparison it asks for."""
    repo = nav.open_repo(ctx, req, m)
    a, b = (req.arg("a") or "").strip(), (req.arg("b") or "").strip()
    if a and b:
        return redirect(urls.compare(repo.repo_type, repo.repo_id, a, b))
    tags = nav.step_tags(repo.refs())
    hint = Html("")
    if len(tags) >= 2:
        hint = h("<p>For example: $l</p>", l=link(urls.compare(repo.repo_type, repo.repo_id, tags[0][1], tags[-1][1]),
                                                   f"{tags[0][1]} with {tags[-1][1]}"))
    body = h("$head<h2>Compare two snapshots</h2>$form$hint", head=nav.header(repo, "compare"), form=_form(repo),
             hint=hint)
    return page(f"Compare · {repo.repo_id}", body)


@html_errors
def compare_page(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``/{repo}/compare/{a}...{b}``: lineage, inputs, accuracy and metrics of two revisions."""
    repo = nav.open_repo(ctx, req, m)
    raw_a, sep, raw_b = m["spec"].partition("...")
    if not sep or not raw_a or not raw_b:
        raise BadRequest("Compare two revisions as /compare/<rev_a>...<rev_b>")
    a, b = open_snapshot(repo, unquote(raw_a)), open_snapshot(repo, unquote(raw_b))
    problems = [f"A: {p}" for p in a.problems] + [f"B: {p}" for p in b.problems]
    problems += [f"{side}: no hf_time.json at this revision" for side, s in (("A", a), ("B", b))
                 if s.lineage is None and not s.problems]
    notes = join(h('<p class="error">$p</p>', p=p) for p in problems)
    metrics = Html("")
    if a.metrics() or b.metrics():
        metrics = h("<h2>TIME metrics</h2>$t", t=_score_table(list(_METRICS), a.metrics(), b.metrics(),
                                                               'id="compare-metrics"'))
    files = _files(a.lineage, b.lineage)
    body = h("$head<h2>Snapshots</h2>$snap$notes<h2>Lineage</h2>$lineage<h2>Inputs (pinned)</h2>$inputs"
             "<h2>Accuracy per task</h2>$acc$metrics<h2>Weight files (sha256)</h2>$files$form",
             head=nav.header(repo, "compare"), snap=_side_table(_snapshot_rows(repo, a, b), a, b, 'class="snapshots"'),
             notes=notes, lineage=_side_table(_lineage_rows(a, b), a, b, 'id="compare-lineage"'),
             inputs=_side_table(_input_rows(a.lineage, b.lineage), a, b, 'id="compare-inputs"'),
             acc=_accuracy(a, b), metrics=metrics,
             files=_side_table(files, a, b, 'class="weights"') if files else h('<p class="muted">None recorded.</p>'),
             form=_form(repo, a.rev, b.rev))
    return page(f"{a.rev}...{b.rev} · {repo.repo_id}", body)
