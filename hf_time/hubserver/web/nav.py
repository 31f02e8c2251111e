"""What every repo page shares: opening the repo for a web request, its title and its tabs."""

from __future__ import annotations

import re
from urllib.parse import unquote

from ..context import HubContext
from ..messages import Request
from ..storage import Repo
from . import urls
from .html import Html, h, join, link, short

_STEP_TAG = re.compile(r"step-([1-9][0-9]{0,8})\Z")
_KIND = {"models": "model", "datasets": "dataset", "spaces": "space"}


def open_repo(ctx: HubContext, req: Request, match: re.Match) -> Repo:
    """The repo a page URL names; private ones are 404 without an accepted token, as in the API.

    Raises:
        RepoNotFound: no such repo, or a private one.
    """
    return ctx.open_repo(req, match["type"], match["repo"])


def rev_of(match: re.Match, group: str = "rev") -> str:
    """A revision from its (percent-encoded) URL segment; ``main`` when the URL has none."""
    value = match.groupdict().get(group)
    return unquote(value) if value else "main"


def step_tags(refs: dict) -> list[tuple[int, str, str]]:
    """``(step, tag, commit)`` of the ``step-N`` tags of a timeline repo, by step."""
    found = [(int(m[1]), tag, oid) for tag, oid in refs["tags"].items() if (m := _STEP_TAG.match(tag))]
    return sorted(found)


def refs_at(refs: dict, oid: str) -> list[str]:
    """Names of the branches and tags that point at ``oid``."""
    return sorted(n for kind in ("branches", "tags") for n, target in refs[kind].items() if target == oid)


def header(repo: Repo, active: str, *, rev: str | None = None, oid: str | None = None) -> Html:
    """The repo's title, the revision being shown, and the tabs (Files, Commits, Timeline, Compare)."""
    t, rid = repo.repo_type, repo.repo_id
    refs = repo.refs()
    tabs = [("files", link(urls.tree(t, rid, rev or "main"), "Card and files")),
            ("commits", link(urls.commits(t, rid, rev or "main"), "Commits"))]
    if step_tags(refs):
        tabs.append(("timeline", link(urls.timeline(t, rid), "Timeline")))
    tabs.append(("compare", link(urls.compare(t, rid), "Compare")))
    tab_html = join(h("<strong>$l</strong>", l=l) if name == active else l for name, l in tabs)
    where = Html("")
    if oid is not None:
        names = [n for n in refs_at(refs, oid) if n != rev]
        also = h(' <span class="muted">(also $n)</span>', n=", ".join(names)) if names else Html("")
        shown = rev if rev and rev != oid else short(oid)
        where = h('<p class="where">at <code class="rev">$rev</code> · commit <a href="$c"><code>$oid</code></a>$also</p>',
                  rev=shown, c=urls.commit(t, rid, oid), oid=short(oid), also=also)
    private = Html(' <span class="badge">private</span>') if repo.meta().get("private") else Html("")
    return h('<p class="muted"><span class="badge">$kind</span>$private</p><h1>$title</h1>$where'
             '<nav class="tabs">$tabs</nav>',
             kind=_KIND[t], private=private, title=link(urls.repo(t, rid), rid), where=where, tabs=tab_html)
