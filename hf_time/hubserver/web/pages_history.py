"""History pages: the commits reachable from a revision, and what one commit changed.

``/{repo}/commits/{rev}`` lists every commit, newest first; ``/{repo}/commit/{sha}`` (the
``commitUrl`` the commit API answers with) shows its message and the files it added, changed or
deleted compared with its parent.
"""

from __future__ import annotations

import re

from ..context import HubContext
from ..messages import Request, Response
from . import nav, urls
from .html import Html, h, html_errors, link, page, short, table
from .pages_repo import commit_rows


@html_errors
def commits_page(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``/{repo}/commits/{rev}``."""
    repo = nav.open_repo(ctx, req, m)
    rev = nav.rev_of(m)
    oid = repo.resolve(rev)
    history = repo.history(oid)
    rows = table(["date", "commit", "refs", "browse"], commit_rows(repo, history), attrs=Html('class="commits"'))
    body = h("$head<h2>$n commits</h2>$rows", head=nav.header(repo, "commits", rev=rev, oid=oid),
             n=len(history), rows=rows)
    return page(f"Commits · {repo.repo_id}", body)


def changes(old: dict[str, dict], new: dict[str, dict]) -> list[tuple[str, str]]:
    """``(change, path)`` from tree ``old`` to tree ``new``: added, modified or deleted, by path."""
    out = [("added" if p not in old else "modified", p) for p in new if old.get(p, {}).get("oid") != new[p]["oid"]]
    out += [("deleted", p) for p in old if p not in new]
    return sorted(out, key=lambda cp: cp[1])


@html_errors
def commit_page(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``/{repo}/commit/{sha}``: message, author, parent and changed files."""
    repo = nav.open_repo(ctx, req, m)
    oid = repo.resolve(m["sha"])
    record = repo.commit_record(oid)
    t, rid = repo.repo_type, repo.repo_id
    parent = record["parent"]
    old = repo.commit_record(parent)["tree"] if parent else {}
    rows = []
    for change, path in changes(old, record["tree"]):
        shown_at = parent if change == "deleted" else oid
        rows.append([change, link(urls.blob(t, rid, shown_at, path), path)])
    parent_link = link(urls.commit(t, rid, parent), short(parent)) if parent else Html("none (first commit)")
    compare = link(urls.compare(t, rid, parent, oid), "compare with parent") if parent else Html("")
    body = h("$head<h2>$title</h2><pre>$message</pre>"
             '<p class="muted">$date · by $author · parent $parent · $browse $compare</p>'
             "<h2>$n changed files</h2>$files",
             head=nav.header(repo, "commits", rev=oid, oid=oid), title=record["title"],
             message=record["message"] or "(no description)", date=record["date"],
             author=", ".join(record["authors"]), parent=parent_link,
             browse=link(urls.tree(t, rid, oid), "browse files"), compare=compare, n=len(rows),
             files=table(["change", "path"], rows, attrs=Html('class="changes"')))
    return page(f"{record['title']} · {rid}", body)
