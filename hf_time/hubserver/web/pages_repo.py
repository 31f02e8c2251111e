"""The pages of one repository: its card and files at a revision, and one file.

``/{repo}`` is the repo at ``main``; ``/{repo}/tree/{rev}[/{folder}]`` the same at any branch, tag
or (short) sha, e.g. the ``/org/name/tree/<sha>`` links that hf_time prints and puts in its cards;
``/{repo}/blob/{rev}/{path}`` one file (text shown, images inline, anything else to download).
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

from .. import views
from ..commits import folders_of
from ..context import HubContext
from ..errors import EntryNotFound
from ..messages import Request, Response
from ..storage import Repo
from . import nav, urls
from .card import Where, render_card
from .html import Html, cell, h, html_errors, join, link, page, short, table

_TEXT_MAX_BYTES = 1 << 20
_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"}
_RECENT_COMMITS = 10


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _crumbs(repo: Repo, rev: str, folder: str) -> Html:
    """``name / sub / folder`` with a link per level (empty at the root)."""
    if not folder:
        return Html("")
    t, rid = repo.repo_type, repo.repo_id
    parts = folder.split("/")
    links = [link(urls.tree(t, rid, rev), rid.split("/")[1])]
    links += [link(urls.tree(t, rid, rev, "/".join(parts[: i + 1])), p) for i, p in enumerate(parts)]
    return h('<p class="crumbs">$c</p>', c=join(links, " / "))


def _files(repo: Repo, rev: str, tree: dict, folder: str) -> Html:
    t, rid = repo.repo_type, repo.repo_id
    folders = folders_of(tree)
    rows = []
    for path in views.tree_paths(tree, folder, recursive=False):
        name = posixpath.basename(path)
        if path in folders:
            rows.append([link(urls.tree(t, rid, rev, path), name + "/"), "", ""])
            continue
        entry = tree[path]
        lfs = Html(' <span class="badge">LFS</span>') if entry.get("lfs") else Html("")
        rows.append([link(urls.blob(t, rid, rev, path), name),
                     cell(h("$s$l", s=_size(entry["size"]), l=lfs), attrs=Html('class="num"')),
                     link(urls.resolve(t, rid, rev, path), "download")])
    return table(["name", "size", ""], rows, attrs=Html('class="files"'))


def _refs(repo: Repo) -> Html:
    t, rid = repo.repo_type, repo.repo_id
    refs = repo.refs()
    rows = [[kind, link(urls.tree(t, rid, name), name), link(urls.commit(t, rid, oid), short(oid))]
            for kind, group in (("branch", "branches"), ("tag", "tags"))
            for name, oid in sorted(refs[group].items(), key=lambda kv: _natural(kv[0]))]
    return table(["kind", "name", "commit"], rows, attrs=Html('class="refs"'))


def _natural(name: str) -> list:
    """Sort key that puts ``step-2`` before ``step-10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def commit_rows(repo: Repo, history: list[tuple[str, dict]]) -> list[list]:
    """Rows of a commit table: date, title (to the commit), refs pointing there, browse link."""
    t, rid = repo.repo_type, repo.repo_id
    refs = repo.refs()
    return [[record["date"][:19].replace("T", " "), link(urls.commit(t, rid, oid), record["title"]),
             ", ".join(nav.refs_at(refs, oid)), link(urls.tree(t, rid, oid), short(oid))]
            for oid, record in history]


def exists_on(ctx: HubContext, req: Request):
    """``exists(repo_type, repo_id)`` for card links: public repos, or private ones with a token."""
    def exists(repo_type: str, repo_id: str) -> bool:
        if not ctx.storage.exists(repo_type, repo_id):
            return False
        return not ctx.storage.repo(repo_type, repo_id).meta().get("private") or ctx.accepts(req.bearer())

    return exists


@html_errors
def tree_page(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``/{repo}`` and ``/{repo}/tree/{rev}[/{folder}]``: card, files, refs and recent commits."""
    repo = nav.open_repo(ctx, req, m)
    rev = nav.rev_of(m)
    oid, tree = repo.tree(rev)
    folder = unquote(m.groupdict().get("path") or "").strip("/")
    files = _files(repo, rev, tree, folder)  # raises EntryNotFound for an unknown folder
    readme = tree.get(f"{folder}/README.md" if folder else "README.md")
    card = Html("")
    if readme is not None and readme["size"] <= _TEXT_MAX_BYTES:
        where = Where(repo.repo_type, repo.repo_id, oid, folder)
        card = render_card(repo.read_text(readme), where, exists_on(ctx, req))
    history = repo.history(oid)
    recent = table(["date", "commit", "refs", "browse"], commit_rows(repo, history[:_RECENT_COMMITS]),
                   attrs=Html('class="commits"'))
    more = link(urls.commits(repo.repo_type, repo.repo_id, rev), f"all {len(history)} commits")
    body = h("$head$crumbs$card<h2>Files</h2>$files<h2>Branches and tags</h2>$refs"
             "<h2>Recent commits</h2>$recent<p>$more</p>",
             head=nav.header(repo, "files", rev=rev, oid=oid), crumbs=_crumbs(repo, rev, folder), card=card,
             files=files, refs=_refs(repo), recent=recent, more=more)
    return page(f"{repo.repo_id} at {rev}", body)


@html_errors
def blob_page(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``/{repo}/blob/{rev}/{path}``: one file, with a download link."""
    repo = nav.open_repo(ctx, req, m)
    rev = nav.rev_of(m)
    oid, tree = repo.tree(rev)
    path = unquote(m["path"]).strip("/")
    entry = tree.get(path)
    if entry is None:
        raise EntryNotFound(f"{path!r} does not exist at {rev} ({short(oid)})", commit=oid)
    t, rid = repo.repo_type, repo.repo_id
    kind = views.content_type(path).split(";")[0]
    raw = urls.resolve(t, rid, oid, path)
    if kind in _IMAGES:
        shown = h('<p class="plot"><img src="$src" alt="$alt"></p>', src=raw, alt=path)
    elif entry["size"] <= _TEXT_MAX_BYTES and b"\0" not in (data := repo.blob_path(entry).read_bytes()):
        text = data.decode("utf-8", "replace")
        if path.lower().endswith(".md"):
            shown = render_card(text, Where(t, rid, oid, posixpath.dirname(path)), exists_on(ctx, req))
        else:
            shown = h("<pre><code>$t</code></pre>", t=text)
    else:
        shown = h("<p>Binary or large file: not shown here.</p>")
    sha = entry.get("sha256", "")
    facts = h('<p class="muted">$size · sha256 <code>$sha</code>$lfs · <a href="$raw">download</a></p>',
              size=_size(entry["size"]), sha=sha, lfs=" · stored with LFS" if entry.get("lfs") else "", raw=raw)
    crumbs = _crumbs(repo, rev, posixpath.dirname(path))
    body = h("$head$crumbs<h2>$path</h2>$facts$shown", head=nav.header(repo, "files", rev=rev, oid=oid),
             crumbs=crumbs, path=path, facts=facts, shown=shown)
    return page(f"{path} · {rid}", body)
