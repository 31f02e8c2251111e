"""Hub routes that move file content: preupload, LFS batch/upload/verify, commit, ``/resolve``.

Upload sequence of the real client with Xet off (shared/design/hub-protocol.md §3.14):
preupload -> LFS batch -> PUT each object to its ticket href -> verify -> NDJSON commit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import unquote

from . import commits as C
from . import views
from .blobs import BlobStore
from .context import HubContext
from .errors import BadRequest, EntryNotFound, RangeNotSatisfiable, RevisionNotFound, RouteNotFound
from .messages import NDJSON_BODY, STREAM_BODY, Request, Response, route
from .payload import FieldError, Fields
from .rules import is_ignored, lfs_patterns, upload_mode

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")  # \Z, not $: "$" also matches before a final "\n"
_LFS_JSON = {"Content-Type": "application/vnd.git-lfs+json"}
# Longest unencoded multi-segment revision tried in a /resolve URL (a ref name plus "refs/heads/").
_MAX_REVISION_CHARS = 300


def preupload(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST .../preupload/{rev}``: per file, ``uploadMode``, ``shouldIgnore`` and the remote ``oid``.

    The remote oid is the one the client compares with its local one to drop unchanged files: the
    sha256 for LFS, the git blob sha1 for regular files.
    """
    body = Fields(req.json())
    files = [(f.str("path", required=True), f.int("size", required=True), f.base64("sample"))
             for f in body.objects("files")]
    gitignore = body.str("gitIgnore")
    repo = ctx.open_repo(req, m["type"], m["repo"])
    _, tree = repo.tree(unquote(m["rev"]))
    attributes = tree.get(".gitattributes")
    patterns = lfs_patterns(repo.read_text(attributes)) if attributes else []
    if gitignore is None and ".gitignore" in tree:
        gitignore = repo.read_text(tree[".gitignore"])
    out = []
    for raw_path, size, sample in files:
        path = C.check_path(raw_path)
        mode = upload_mode(path, size, sample, patterns)
        entry = tree.get(path)
        remote = None
        if entry is not None:
            if mode == "lfs":
                remote = entry["sha256"]
            elif not entry.get("lfs"):
                remote = entry["oid"]
        out.append({"path": raw_path, "uploadMode": mode, "shouldIgnore": is_ignored(path, gitignore), "oid": remote})
    return Response.json({"files": out})


def _sha256_field(fields: Fields, name: str = "oid") -> str:
    oid = fields.str(name, required=True)
    if not _SHA256.match(oid):
        raise FieldError(fields.path_of(name), "must be the 64-character lower-case hex sha256 of the content")
    return oid


def lfs_batch(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST /{P}{repo}.git/info/lfs/objects/batch``: basic transfer only, one ticket per missing object."""
    body = Fields(req.json())
    if body.str("operation", required=True) != "upload":
        raise BadRequest("Only the 'upload' LFS operation is supported")
    body.strings("transfers")  # any list is fine: "basic" is always what we answer
    wanted = [(_sha256_field(obj), obj.int("size", required=True)) for obj in body.objects("objects")]
    repo = ctx.open_repo(req, m["type"], m["repo"])
    verify = f"{views.repo_url(req.base_url, repo.repo_type, repo.repo_id)}.git/info/lfs/objects/verify"
    objects = []
    for oid, size in wanted:
        if repo.blobs.has_lfs(oid) and repo.blobs.lfs_path(oid).stat().st_size == size:
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
    body = Fields(req.json())
    oid, size = _sha256_field(body), body.int("size")
    repo = ctx.open_repo(req, m["type"], m["repo"])
    if not repo.blobs.has_lfs(oid):
        raise BadRequest(f"LFS object {oid} has not been uploaded")
    if size is not None and repo.blobs.lfs_path(oid).stat().st_size != size:
        raise BadRequest(f"LFS object {oid} does not have {size} bytes")
    return Response.json({"success": True}, headers=_LFS_JSON)


def _operation(item: Fields, blobs: BlobStore) -> C.Operation:
    """One commit operation from a non-header NDJSON line (``{"key", "value"}``)."""
    key, value = item.str("key", required=True), item.obj("value", required=True)
    if key == "file":
        if value.str("encoding", default="base64") != "base64":
            raise FieldError(value.path_of("encoding"), "only 'base64' is supported")
        path, content = value.str("path", required=True), value.base64("content", required=True)
        # Stored now, so a commit holds one line in memory however many files it carries; if the
        # commit then fails, the blob is merely unreferenced.
        return C.AddStoredFile(path, C.regular_entry(blobs.put_regular(content), content))
    if key == "lfsFile":
        if value.str("algo", default="sha256") != "sha256":
            raise FieldError(value.path_of("algo"), "only 'sha256' is supported")
        return C.AddLfsFile(value.str("path", required=True), _sha256_field(value), value.int("size"))
    if key == "deletedFile":
        return C.DeleteFile(value.str("path", required=True))
    if key == "deletedFolder":
        return C.DeleteFolder(value.str("path", required=True).rstrip("/"))
    raise FieldError(item.path_of("key"), f"unknown operation {key[:40]!r}")


def _parse_ndjson(lines: Iterable[bytes], blobs: BlobStore) -> tuple[Fields, list[C.Operation]]:
    """Split a commit body into its header and its operations (shared/design/hub-protocol.md §3.9)."""
    header: Fields | None = None
    ops: list[C.Operation] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError as exc:
            raise BadRequest(f"Commit payload line {number} is not valid JSON: {exc}") from None
        item = Fields(parsed, f"line {number}")
        if item.str("key", required=True) == "header":
            header = item.obj("value", required=True)
        else:
            ops.append(_operation(item, blobs))
    if header is None:
        raise BadRequest("The commit payload must start with a header line carrying a 'summary'")
    header.str("summary", required=True, nonempty=True)
    header.str("description")
    header.str("parentCommit")
    return header, ops


def commit(ctx: HubContext, req: Request, m: re.Match) -> Response:
    """``POST /api/{T}/{repo}/commit/{rev}[?create_pr=1]`` with an NDJSON body."""
    repo = ctx.open_repo(req, m["type"], m["repo"])
    header, ops = _parse_ndjson(req.lines(), repo.blobs)
    result = repo.commit(unquote(m["rev"]), ops, header.str("summary"), header.str("description") or "",
                         parent=header.str("parentCommit"), create_pr=req.flag("create_pr"), author=ctx.user)
    url = views.repo_url(req.base_url, repo.repo_type, repo.repo_id)
    body = {"success": True, "commitOid": result.oid, "commitUrl": f"{url}/commit/{result.oid}", "hookOutput": ""}
    if result.pr_num is not None:
        body["pullRequestUrl"] = f"{url}/discussions/{result.pr_num}"
    return Response.json(body)


def _split_revision(repo, rest: str) -> tuple[str, str, dict | None]:
    """Split ``{rev}/{path}`` of a resolve URL into ``(commit oid, path, tree entry or None)``.

    The client sends the revision as one percent-encoded segment; an unencoded one such as
    ``refs/pr/1`` still works: splits are tried left to right, and the first that names an
    existing file wins. The refs are read once and only prefixes up to the longest possible ref
    name are tried, so the work is linear in the URL (it used to read ``refs.json`` per segment).

    Raises:
        RevisionNotFound: no prefix of the URL is a revision.
    """
    segments = rest.split("/")
    refs = repo.refs()
    trees: dict[str, dict] = {}
    first: tuple[str, str, dict | None] | None = None
    candidate = ""
    for i in range(1, len(segments)):
        candidate = segments[0] if i == 1 else f"{candidate}/{segments[i - 1]}"
        if i > 1 and len(candidate) > _MAX_REVISION_CHARS:
            break  # no ref name is this long: everything after the first segment is the path
        try:
            oid = repo.resolve(unquote(candidate), refs=refs)
        except RevisionNotFound:
            continue
        if oid not in trees:
            trees[oid] = repo.commit_record(oid)["tree"]
        path = unquote("/".join(segments[i:]))
        entry = trees[oid].get(path)
        if entry is not None:
            return oid, path, entry
        first = first or (oid, path, None)
    if first is None:
        raise RevisionNotFound(f"Invalid rev id in {rest[:200]!r}")
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
    headers = views.resolve_headers(oid, entry, path)
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
    route("POST", _API + r"/preupload/(?P<rev>[^/]+)\Z", preupload, write=True),
    route("POST", _API + r"/commit/(?P<rev>[^/]+)\Z", commit, write=True, body=NDJSON_BODY),
    route("POST", _PREFIX + r"\.git/info/lfs/objects/batch\Z", lfs_batch, write=True),
    route("POST", _PREFIX + r"\.git/info/lfs/objects/verify\Z", lfs_verify, write=True),
    route("PUT", r"^/lfs-upload/(?P<ticket>[A-Za-z0-9_-]+)\Z", lfs_upload, body=STREAM_BODY),
    route("GET HEAD", _PREFIX + r"/resolve/(?P<rest>.+)\Z", resolve),
]
