"""``GET /api/models``, ``/api/datasets`` and ``/api/spaces``: listings with the Hub's pagination.

``HfApi.list_models()``/``list_datasets()``/``list_spaces()`` and ``hf models ls`` send ``search``,
``author``, ``filter`` (tags), ``pipeline_tag``, ``gated``, ``sort``, ``limit`` and ``full``/
``cardData``/``expand``; they follow the ``Link: <url>; rel="next"`` header page by page until it
is absent (huggingface_hub ``utils/_pagination.py``). Other parameters (inference providers,
parameter counts, emissions...) describe things this server does not have and are ignored.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from .. import views
from ..context import HubContext
from ..errors import BadRequest
from ..messages import Request, Response, route
from .listing import Listed, list_page, query_from_args

# What an item carries without full/cardData/expand (as huggingface.co: no files, no card).
_SUMMARY = ("id", "author", "sha", "lastModified", "createdAt", "private", "gated", "disabled", "downloads",
            "likes", "tags", "library_name", "pipeline_tag", "modelId")


def _card_filter(req: Request):
    """The ``filter`` (every tag required), ``pipeline_tag`` and ``gated`` conditions, or None."""
    tags = [t for t in req.query.get("filter", []) if t]
    pipeline = req.arg("pipeline_tag")
    gated = req.arg("gated")
    if gated not in (None, "", "true", "false", "True", "False"):
        raise BadRequest(f"gated must be true or false, got {gated[:20]!r}")
    if not tags and not pipeline and gated is None:
        return None

    def keep(item: Listed) -> bool:
        if gated is not None and gated.lower() == "true":
            return False  # nothing is gated on this server
        card = item.card() or {}
        have = set(views.repo_info(item.repo.repo_type, item.repo.repo_id, item.meta, item.head, item.record,
                                   card, blobs=False)["tags"])
        have.add(str(card.get("library_name", "")))
        return all(t in have for t in tags) and (not pipeline or card.get("pipeline_tag") == pipeline)

    return keep


def _item(item: Listed, req: Request) -> dict:
    """One listed repository in the shape ``ModelInfo``/``DatasetInfo`` read."""
    full = views.repo_info(item.repo.repo_type, item.repo.repo_id, item.meta, item.head, item.record,
                           item.card(), blobs=False)
    expand = [e for values in (req.query.get("expand", []), req.query.get("expand[]", [])) for e in values]
    if expand:
        return {"id": full["id"], **{k: full[k] for k in expand if k in full}}
    if req.flag("full"):
        return full
    out = {k: full[k] for k in _SUMMARY if k in full}
    if req.flag("cardData") and "cardData" in full:
        out["cardData"] = full["cardData"]
    return out


def list_repos(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``GET /api/{T}``: one page, newest first by default, with ``Link`` to the next one."""
    query = query_from_args(req.query, ctx.limits.max_page_items)
    page, cursor = list_page(ctx.storage, [m["type"]], query, show_private=ctx.accepts(req.bearer()),
                             keep=_card_filter(req))
    headers = {}
    if cursor is not None:
        # Every parameter is carried over (the client sends none with the next URL) except the cursor.
        params = [(k, v) for k, values in req.query.items() if k != "cursor" for v in values]
        headers["Link"] = f'<{req.base_url}{req.path}?{urlencode(params + [("cursor", cursor)])}>; rel="next"'
    return Response.json([_item(i, req) for i in page], headers=headers)


ROUTES = [route("GET HEAD", r"^/api/(?P<type>models|datasets|spaces)\Z", list_repos)]
