"""Hub API routes about repositories, refs and listings (everything except file transfer).

Each function takes ``(ctx, req, match)`` and returns a :class:`Response`; the route table at the
bottom binds them to paths. Revisions and paths arrive percent-encoded (``quote(rev, safe="")``) and
are decoded here (shared/design/hub-protocol.md §3).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from . import views
from .errors import AlreadyExists
from .context import HubContext
from .messages import Request, Response, route
from .payload import FieldError, Fields
from .rules import card_metadata

_CARD_MAX_BYTES = 1 << 20
_TYPES = {"model": "models", "dataset": "datasets", "space": "spaces", None: "models"}


def _repo_id_from_body(ctx: HubContext, body: Fields) -> tuple[str, str]:
    """``(repo_type, repo_id)`` from a create/delete body; no organisation means the user's namespace."""
    name = body.str("name", required=True, nonempty=True)
    repo_type = body.str("type")
    if repo_type not in _TYPES:
        raise FieldError("type", f"unknown repository type {repo_type[:40]!r}; expected model, dataset or space")
    namespace = body.str("organization") or ctx.user
    return _TYPES[repo_type], name if "/" in name else f"{namespace}/{name}"


def create_repo(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST /api/repos/create`` -> ``{"url"}``; 409 with ``url`` when it exists (for ``exist_ok``)."""
    body = Fields(req.json())
    repo_type, repo_id = _repo_id_from_body(ctx, body)
    url = views.repo_url(req.base_url, repo_type, repo_id)
    private = body.str("visibility") == "private" or body.bool("private")
    try:
        ctx.storage.create_repo(repo_type, repo_id, private=private, author=ctx.user)
    except AlreadyExists as err:
        raise AlreadyExists(err.message, url=url) from None
    return Response.json({"url": url, "name": repo_id, "id": repo_id})


def delete_repo(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``DELETE /api/repos/delete``; 404 ``RepoNotFound`` when missing (``missing_ok`` relies on it)."""
    repo_type, repo_id = _repo_id_from_body(ctx, Fields(req.json()))
    ctx.storage.delete_repo(repo_type, repo_id)
    return Response.json({})


def validate_yaml(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST /api/validate-yaml``: parse the card's front matter; 400 with ``errors`` if invalid."""
    content = Fields(req.json()).str("content", required=True)
    _, problems = card_metadata(content)
    body = {"errors": [{"message": p} for p in problems], "warnings": []}
    return Response.json(body, 400 if problems else 200)


def whoami(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``GET /api/whoami-v2`` (a write route, so only reached with an accepted token)."""
    return Response.json({
        "type": "user", "id": ctx.user, "name": ctx.user, "fullname": ctx.user, "orgs": [],
        "auth": {"type": "access_token", "accessToken": {"displayName": "hf-time", "role": "write"}},
    })


def repo_info(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``GET /api/{T}/{repo}[/revision/{rev}]`` with ``siblings``, ``sha`` and ``cardData``."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    revision = unquote(m["rev"]) if m["rev"] else None
    oid = repo.resolve(revision)
    record = repo.commit_record(oid)
    card = None
    readme = record["tree"].get("README.md")
    if readme is not None and readme["size"] <= _CARD_MAX_BYTES:
        card, _ = card_metadata(repo.read_text(readme))
    body = views.repo_info(repo.repo_type, repo.repo_id, repo.meta(), oid, record, card,
                           blobs=req.flag("blobs"))
    return Response.json(body)


def list_tree(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``GET .../tree/{rev}[/{path}]?recursive=&expand=``: direct children, or all descendants."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    oid, tree = repo.tree(unquote(m["rev"]))
    folder = unquote(m["path"] or "").strip("/")
    paths = views.tree_paths(tree, folder, recursive=req.flag("recursive"))
    last = repo.last_changes(oid, paths) if req.flag("expand") else {}
    return Response.json([views.path_item(tree, p, last.get(p)) for p in paths])


def paths_info(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST .../paths-info/{rev}`` (form ``paths=..&expand=..``): known paths only, missing ones left out."""
    if "json" in (req.headers.get("content-type") or ""):
        body = Fields(req.json())
        paths, expand = body.strings("paths", allow_single=True), body.bool("expand")
    else:
        form = req.form()
        paths, expand = form.get("paths", []), form.get("expand", ["false"])[0].lower() in ("1", "true")
    repo = ctx.open_repo(req, m["type"], m["repo"])
    oid, tree = repo.tree(unquote(m["rev"]))
    paths = [p.strip("/") for p in paths]
    items = [(p, views.path_item(tree, p)) for p in dict.fromkeys(paths)]
    found = [p for p, item in items if item is not None]
    last = repo.last_changes(oid, found) if expand else {}
    return Response.json([views.path_item(tree, p, last.get(p)) for p in found])


def list_refs(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``GET .../refs[?include_prs=1]``."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    return Response.json(views.refs_view(repo.refs(), include_prs=req.flag("include_prs")))


def list_commits(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``GET .../commits/{rev}``: newest first, the whole history in one page."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    formatted = "formatted" in req.query.get("expand[]", []) + req.query.get("expand", [])
    history = repo.history(unquote(m["rev"]))
    return Response.json([views.commit_item(oid, rec, formatted) for oid, rec in history])


def create_branch(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST .../branch/{name}`` from ``startingPoint`` (default ``main``); 409 if it exists."""
    start = Fields(req.json()).str("startingPoint")
    repo = ctx.open_repo(req, m["type"], m["repo"])
    repo.create_ref("branches", unquote(m["name"]), start)
    return Response.json({})


def delete_branch(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``DELETE .../branch/{name}``."""
    ctx.open_repo(req, m["type"], m["repo"]).delete_ref("branches", unquote(m["name"]))
    return Response.json({})


def create_tag(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST .../tag/{rev}`` with ``{"tag", "message"?}``: the revision is in the path; 409 if it exists."""
    body = Fields(req.json())
    tag = body.str("tag", required=True, nonempty=True)
    body.str("message")  # accepted for the client's sake; lightweight tags carry no message here
    repo = ctx.open_repo(req, m["type"], m["repo"])
    repo.create_ref("tags", tag, unquote(m["name"]))
    return Response.json({})


def delete_tag(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``DELETE .../tag/{name}``."""
    ctx.open_repo(req, m["type"], m["repo"]).delete_ref("tags", unquote(m["name"]))
    return Response.json({})


_API = r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"


ROUTES = [
    route("POST", r"^/api/repos/create\Z", create_repo, write=True),
    route("DELETE", r"^/api/repos/delete\Z", delete_repo, write=True),
    route("POST", r"^/api/validate-yaml\Z", validate_yaml),
    route("GET", r"^/api/whoami-v2\Z", whoami, write=True),
    route("GET", _API + r"(?:/revision/(?P<rev>.+))?\Z", repo_info),
    route("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?\Z", list_tree),
    route("POST", _API + r"/paths-info/(?P<rev>[^/]+)\Z", paths_info),
    route("GET", _API + r"/refs\Z", list_refs),
    route("GET", _API + r"/commits/(?P<rev>[^/]+)\Z", list_commits),
    route("POST", _API + r"/branch/(?P<name>.+)\Z", create_branch, write=True),
    route("DELETE", _API + r"/branch/(?P<name>.+)\Z", delete_branch, write=True),
    route("POST", _API + r"/tag/(?P<name>.+)\Z", create_tag, write=True),
    route("DELETE", _API + r"/tag/(?P<name>.+)\Z", delete_tag, write=True),
]
