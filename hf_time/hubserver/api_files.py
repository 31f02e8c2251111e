"""Hub routes that move file content: preupload, LFS batch/upload/verify, commit, ``/resolve``.

Upload sequence of the real client with Xet off (shared/design/hub-protocol.md §3.14):
preupload -> LFS batch -> PUT each object to its ticket href -> verify -> NDJSON commit.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from urllib.parse import unquote

from . import commits as C
from . import views
from .blobs import BlobStore
from .errors import BadRequest, EntryNotFound, RangeNotSatisfiable, RevisionNotFound, RouteNotFound
from .context import HubContext
from .messages import NDJSON_BODY, STREAM_BODY, Request, Response, route
from .rules import is_ignored, lfs_patterns, upload_mode

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LFS_JSON = {"Content-Type": "application/vnd.git-lfs+json"}


def preupload(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST .../preupload/{rev}``: per file, ``uploadMode``, ``shouldIgnore`` and the remote ``oid``.

    The remote oid is the one the client compares with its local one to drop unchanged files: the
    sha256 for LFS, the git blob sha1 for regular files.
    """
    repo = ctx.open_repo(req, m["type"], m["repo"])
    _, tree = repo.tree(unquote(m["rev"]))
    body = req.json()
    attributes = tree.get(".gitattributes")
    patterns = lfs_patterns(repo.read_text(attributes)) if attributes else []
    gitignore = body.get("gitIgnore")
    if gitignore is None and ".gitignore" in tree:
        gitignore = repo.read_text(tree[".gitignore"])
    out = []
    for item in body.get("files") or []:
        try:
            path, size = C.check_path(item["path"]), int(item["size"])
            sample = base64.b64decode(item.get("sample") or "")
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise BadRequest(f"Malformed preupload file entry: {exc}") from None
        mode = upload_mode(path, size, sample, patterns)
        entry = tree.get(path)
        remote = None
        if entry is not None:
            if mode == "lfs":
                remote = entry["sha256"]
            elif not entry.get("lfs"):
                remote = entry["oid"]
        out.append({"path": item["path"], "uploadMode": mode,
                    "shouldIgnore": is_ignored(path, gitignore), "oid": remote})
    return Response.json({"files": out})


def lfs_batch(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST /{P}{repo}.git/info/lfs/objects/batch``: basic transfer only, one ticket per missing object."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    body = req.json()
    if body.get("operation") != "upload":
        raise BadRequest("Only the 'upload' LFS operation is supported")
    verify = f"{views.repo_url(req.base_url, repo.repo_type, repo.repo_id)}.git/info/lfs/objects/verify"
    objects = []
    for obj in body.get("objects") or []:
        oid, size = obj.get("oid"), obj.get("size")
        if not isinstance(oid, str) or not _SHA256.match(oid) or not isinstance(size, int) or size < 0:
            objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "oid must be a sha256 hex and size an int"}})
        elif repo.blobs.has_lfs(oid) and repo.blobs.lfs_path(oid).stat().st_size == size:
            objects.append({"oid": oid, "size": size})  # no actions: the client skips the upload
        else:
            ticket = ctx.tickets.issue(repo.repo_type, repo.repo_id, oid, size)
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{req.base_url}/lfs-upload/{ticket}", "header": {}},
                "verify": {"href": verify, "header": {}},
            }})
    return Response.json({"transfer": "basic", "objects": objects}, headers=_LFS_JSON)


def lfs_upload(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``PUT /lfs-upload/{ticket}``: the ticket is the authorisation (the client sends no token here)."""
    ticket = ctx.tickets.get(m["ticket"])
    if ticket is None:
        raise RouteNotFound("Unknown or expired upload ticket; ask the LFS batch endpoint again")
    repo = ctx.storage.repo(ticket.repo_type, ticket.repo_id)
    if req.content_length is not None and req.content_length != ticket.size:
        # Refused before reading: the announced size is what the ticket was issued for.
        raise BadRequest(f"Expected {ticket.size} bytes, got Content-Length {req.content_length}")
    try:
        repo.blobs.put_lfs_stream(req.stream, ticket.size, ticket.sha256)
    except ValueError as exc:
        raise BadRequest(f"LFS upload rejected: {exc}") from None
    if req.stream.read(1):
        raise BadRequest(f"Body is longer than the announced {ticket.size} bytes")
    ctx.tickets.done(m["ticket"])
    return Response(200, {"ETag": f'"{ticket.sha256}"'})


def lfs_verify(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST /{P}{repo}.git/info/lfs/objects/verify``: 200 once the object is stored with that size."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    body = req.json()
    oid, size = str(body.get("oid")), body.get("size")
    if not _SHA256.match(oid) or not repo.blobs.has_lfs(oid):
        raise BadRequest(f"LFS object {oid} has not been uploaded")
    if size is not None and repo.blobs.lfs_path(oid).stat().st_size != size:
        raise BadRequest(f"LFS object {oid} does not have {size} bytes")
    return Response.json({"success": True}, headers=_LFS_JSON)


def _parse_ndjson(lines: Iterable[bytes], blobs: BlobStore) -> tuple[dict, list[C.Operation]]:
    """Split a commit body into its header and its operations (shared/design/hub-protocol.md §3.9).

    Inline file contents are written to ``blobs`` as their line arrives, so a commit costs one line
    of memory however many files it carries; if the commit then fails, they are unreferenced blobs.
    """
    header, ops = None, []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise ValueError(f"unsupported encoding {value.get('encoding')!r}")
                content = base64.b64decode(value["content"])
                ops.append(C.AddStoredFile(value["path"], C.regular_entry(blobs.put_regular(content), content)))
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256" or not _SHA256.match(value["oid"]):
                    raise ValueError("lfsFile needs a sha256 oid")
                ops.append(C.AddLfsFile(value["path"], value["oid"], value.get("size")))
            elif key == "deletedFile":
                ops.append(C.DeleteFile(value["path"]))
            elif key == "deletedFolder":
                ops.append(C.DeleteFolder(value["path"].rstrip("/")))
            else:
                raise ValueError(f"unknown key {key!r}")
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise BadRequest(f"Malformed commit payload, line {number}: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("summary"), str) or not header["summary"]:
        raise BadRequest("The commit payload must start with a header carrying a non-empty 'summary'")
    return header, ops


def commit(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST /api/{T}/{repo}/commit/{rev}[?create_pr=1]`` with an NDJSON body."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    header, ops = _parse_ndjson(req.lines(), repo.blobs)
    result = repo.commit(unquote(m["rev"]), ops, header["summary"], header.get("description") or "",
                         parent=header.get("parentCommit"), create_pr=req.flag("create_pr"), author=ctx.user)
    url = views.repo_url(req.base_url, repo.repo_type, repo.repo_id)
    body = {"success": True, "commitOid": result.oid, "commitUrl": f"{url}/commit/{result.oid}", "hookOutput": ""}
    if result.pr_num is not None:
        body["pullRequestUrl"] = f"{url}/discussions/{result.pr_num}"
    return Response.json(body)


def _split_revision(repo, rest: str) -> tuple[str, str, dict | None]:
    """Split ``{rev}/{path}`` of a resolve URL into ``(commit oid, path, tree entry or None)``.

    The client sends the revision as one percent-encoded segment; an unencoded one such as
    ``refs/pr/1`` still works: every split is tried, and the first that names an existing file wins.

    Raises:
        RevisionNotFound: no prefix of the URL is a revision.
    """
    segments = rest.split("/")
    first: tuple[str, str, dict | None] | None = None
    for i in range(1, len(segments)):
        try:
            oid = repo.resolve(unquote("/".join(segments[:i])))
        except RevisionNotFound:
            continue
        path = unquote("/".join(segments[i:]))
        entry = repo.commit_record(oid)["tree"].get(path)
        if entry is not None:
            return oid, path, entry
        first = first or (oid, path, None)
    if first is None:
        raise RevisionNotFound(f"Invalid rev id in {rest!r}")
    return first


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single ``bytes=`` range, None to send the whole file."""
    found = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not found or found[1] == found[2] == "":
        return None  # absent, or a form we do not serve (multi-range): a 200 is always allowed
    if found[1] == "":
        start, end = max(0, size - int(found[2])), size - 1
        if int(found[2]) == 0:
            start = size
    else:
        start = int(found[1])
        end = min(int(found[2]), size - 1) if found[2] else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"Range {header!r} is outside the {size}-byte file", size)
    return start, end


def resolve(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``HEAD``/``GET /{P}{repo}/resolve/{rev}/{path}``: bytes plus the headers §3.13 requires."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    oid, path, entry = _split_revision(repo, m["rest"])
    if entry is None:
        raise EntryNotFound(f"Entry not found: {path!r} at {oid}", commit=oid)
    headers = views.resolve_headers(oid, entry)
    size = entry["size"]
    span = _byte_range(req.headers.get("range"), size) if req.method == "GET" else None
    if span is None:
        return Response(200, headers, file=repo.blob_path(entry), start=0, length=size)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(206, headers, file=repo.blob_path(entry), start=start, length=end - start + 1)


_PREFIX = r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+?)"
_API = r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"


ROUTES = [
    route("POST", _API + r"/preupload/(?P<rev>[^/]+)$", preupload, write=True),
    route("POST", _API + r"/commit/(?P<rev>[^/]+)$", commit, write=True, body=NDJSON_BODY),
    route("POST", _PREFIX + r"\.git/info/lfs/objects/batch$", lfs_batch, write=True),
    route("POST", _PREFIX + r"\.git/info/lfs/objects/verify$", lfs_verify, write=True),
    route("PUT", r"^/lfs-upload/(?P<ticket>[A-Za-z0-9_-]+)$", lfs_upload, body=STREAM_BODY),
    route("GET HEAD", _PREFIX + r"/resolve/(?P<rest>.+)$", resolve),
]
