"""``GET /``: every repository on the server, newest first, searchable, a page at a time.

Query parameters: ``search`` (words that must all appear in the id), ``type`` (``models``,
``datasets``, ``spaces``; all by default), ``author`` and ``cursor`` (the next page, from the
"Next page" link). Private repos are listed only for a request with an accepted token, which a
browser does not send.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from ..context import HubContext
from ..errors import BadRequest
from ..messages import Request, Response
from ..storage import REPO_TYPES
from . import nav, urls
from .html import Html, h, html_errors, join, link, page
from .listing import Listed, list_page, query_from_args

_PAGE_ITEMS = 50
_SHOWN_TAGS = 6


def _item(item: Listed) -> Html:
    t, rid = item.repo.repo_type, item.repo.repo_id
    steps = nav.step_tags(item.repo.refs())
    timeline = h(' · <a class="badge" href="$u">timeline, $n steps</a>', u=urls.timeline(t, rid), n=len(steps)) \
        if steps else Html("")
    card = item.card() or {}
    tags = card.get("tags") if isinstance(card.get("tags"), list) else []
    shown = join((h('<span class="badge">$t</span>', t=str(tag)) for tag in tags[:_SHOWN_TAGS]), " ")
    return h('<li data-repo="$rid"><span class="badge">$kind</span> $name$timeline'
             '<br><span class="muted">updated $date</span> $tags</li>',
             rid=rid, kind=t[:-1], name=link(urls.repo(t, rid), rid), timeline=timeline,
             date=item.last_modified[:19].replace("T", " "), tags=shown)


def _type_links(search: str, current: str) -> Html:
    out = []
    for value, label in (("", "all"), ("models", "models"), ("datasets", "datasets"), ("spaces", "spaces")):
        params = urlencode([(k, v) for k, v in (("search", search), ("type", value)) if v])
        href = "/" + (f"?{params}" if params else "")
        out.append(h("<strong>$l</strong>", l=label) if value == current else link(href, label))
    return join(out, " · ")


@html_errors
def index_page(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """The repo list (models, datasets and spaces together, or one type)."""
    kind = req.arg("type") or ""
    if kind and kind not in REPO_TYPES:
        raise BadRequest(f"type must be one of {', '.join(REPO_TYPES)}, got {kind[:20]!r}")
    query = query_from_args(req.query, ctx.limits.max_page_items, default_limit=_PAGE_ITEMS)
    items, cursor = list_page(ctx.storage, [kind] if kind else REPO_TYPES, query,
                              show_private=ctx.accepts(req.bearer()))
    search = " ".join(req.query.get("search", []))
    listing = h('<ul class="repos">$i</ul>', i=join(_item(i) for i in items)) if items else \
        h('<p class="muted">No repository matches$s.</p>', s=f" “{search}”" if search else "")
    more = Html("")
    if cursor is not None:
        params = [(k, v) for k, values in req.query.items() if k != "cursor" for v in values]
        more = h('<p><a rel="next" href="/?$q">Next page</a></p>', q=urlencode(params + [("cursor", cursor)]))
    heading = f"Repositories matching “{search}”" if search else "Repositories"
    body = h("<h1>$heading</h1><p>$types</p>$listing$more", heading=heading, types=_type_links(search, kind),
             listing=listing, more=more)
    return page("Repositories", body, search=search)
