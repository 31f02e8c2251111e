"""Well-formed requests with wrong JSON types get a 4xx naming the field, never a 500.

Issue 9, defect 6: 13 such requests returned 500 (``[1]`` as a body, ``parentCommit: 5``,
``file.path: 5``, ``paths: 5``, ``startingPoint: [1]``...). Each case below is one malformed body
sent to one route of the session Hub, with the field the answer must name.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import HUB_TOKEN
from hub_raw import request

pytestmark = pytest.mark.probe("Hub probes")

REPO = "tests/payload-types"
SHA = hashlib.sha256(b"x").hexdigest()
API = f"/api/models/{REPO}"
LFS = f"/{REPO}.git/info/lfs/objects"


def _ndjson(*items) -> bytes:
    return b"".join((json.dumps(i) if not isinstance(i, bytes) else i.decode()).encode() + b"\n" for i in items)


HEADER = {"key": "header", "value": {"summary": "s"}}

# (method, path, body, field the error must name)
CASES = [
    ("POST", "/api/repos/create", [1], "body"),
    ("POST", "/api/repos/create", {"name": 5}, "name"),
    ("POST", "/api/repos/create", {"name": "x", "type": 5}, "type"),
    ("POST", "/api/repos/create", {"name": "x", "organization": [1]}, "organization"),
    ("POST", "/api/repos/create", {"name": "x", "private": "yes"}, "private"),
    ("POST", "/api/repos/create", {"name": "x", "visibility": 5}, "visibility"),
    ("DELETE", "/api/repos/delete", "x", "body"),
    ("DELETE", "/api/repos/delete", {"name": {"a": 1}}, "name"),
    ("POST", "/api/validate-yaml", [1], "body"),
    ("POST", "/api/validate-yaml", {"content": 5}, "content"),
    ("POST", f"{API}/preupload/main", [1], "body"),
    ("POST", f"{API}/preupload/main", {"files": 5}, "files"),
    ("POST", f"{API}/preupload/main", {"files": [1]}, "files[0]"),
    ("POST", f"{API}/preupload/main", {"files": [{"path": 5, "size": 1}]}, "files[0].path"),
    ("POST", f"{API}/preupload/main", {"files": [{"path": "a", "size": "1"}]}, "files[0].size"),
    ("POST", f"{API}/preupload/main", {"files": [{"path": "a", "size": True}]}, "files[0].size"),
    ("POST", f"{API}/preupload/main", {"files": [{"path": "a", "size": -1}]}, "files[0].size"),
    ("POST", f"{API}/preupload/main", {"files": [{"path": "a", "size": 1, "sample": 5}]}, "files[0].sample"),
    ("POST", f"{API}/preupload/main", {"files": [{"path": "a", "size": 1, "sample": "!!"}]}, "files[0].sample"),
    ("POST", f"{API}/preupload/main", {"files": [], "gitIgnore": 5}, "gitIgnore"),
    ("POST", f"{LFS}/batch", [1], "body"),
    ("POST", f"{LFS}/batch", {"operation": 5}, "operation"),
    ("POST", f"{LFS}/batch", {"operation": "upload", "objects": 5}, "objects"),
    ("POST", f"{LFS}/batch", {"operation": "upload", "objects": [1]}, "objects[0]"),
    ("POST", f"{LFS}/batch", {"operation": "upload", "objects": [{"oid": 5, "size": 1}]}, "objects[0].oid"),
    ("POST", f"{LFS}/batch", {"operation": "upload", "objects": [{"oid": "zz", "size": 1}]}, "objects[0].oid"),
    ("POST", f"{LFS}/batch", {"operation": "upload", "objects": [{"oid": SHA, "size": "1"}]}, "objects[0].size"),
    ("POST", f"{LFS}/batch", {"operation": "upload", "objects": [{"oid": SHA}]}, "objects[0].size"),
    ("POST", f"{LFS}/batch", {"operation": "upload", "transfers": "basic", "objects": []}, "transfers"),
    ("POST", f"{LFS}/verify", [1], "body"),
    ("POST", f"{LFS}/verify", {"oid": 5}, "oid"),
    ("POST", f"{LFS}/verify", {"oid": SHA, "size": "1"}, "size"),
    ("POST", f"{API}/commit/main", b"[1]\n", "line 1"),
    ("POST", f"{API}/commit/main", _ndjson({"key": 5, "value": {}}), "key"),
    ("POST", f"{API}/commit/main", _ndjson({"key": "header", "value": [1]}), "value"),
    ("POST", f"{API}/commit/main", _ndjson({"key": "header", "value": {"summary": 5}}), "summary"),
    ("POST", f"{API}/commit/main", _ndjson({"key": "header", "value": {"summary": "s", "parentCommit": 5}}),
     "parentCommit"),
    ("POST", f"{API}/commit/main", _ndjson({"key": "header", "value": {"summary": "s", "description": 5}}),
     "description"),
    ("POST", f"{API}/commit/main", _ndjson(HEADER, {"key": "file", "value": {"path": 5, "content": ""}}), "path"),
    ("POST", f"{API}/commit/main", _ndjson(HEADER, {"key": "file", "value": {"path": "a", "content": 5}}),
     "content"),
    ("POST", f"{API}/commit/main", _ndjson(HEADER, {"key": "file", "value": {"path": "a", "content": "!"}}),
     "content"),
    ("POST", f"{API}/commit/main",
     _ndjson(HEADER, {"key": "file", "value": {"path": "a", "content": "", "encoding": 5}}), "encoding"),
    ("POST", f"{API}/commit/main", _ndjson(HEADER, {"key": "lfsFile", "value": {"path": "a", "oid": 5}}), "oid"),
    ("POST", f"{API}/commit/main",
     _ndjson(HEADER, {"key": "lfsFile", "value": {"path": "a", "oid": SHA, "size": "1"}}), "size"),
    ("POST", f"{API}/commit/main", _ndjson(HEADER, {"key": "deletedFile", "value": {"path": 5}}), "path"),
    ("POST", f"{API}/commit/main", _ndjson(HEADER, {"key": "deletedFolder", "value": {"path": [1]}}), "path"),
    ("POST", f"{API}/commit/main", _ndjson(HEADER, {"key": "deletedFile", "value": 5}), "value"),
    ("POST", f"{API}/paths-info/main", [1], "body"),
    ("POST", f"{API}/paths-info/main", {"paths": 5}, "paths"),
    ("POST", f"{API}/paths-info/main", {"paths": [5]}, "paths[0]"),
    ("POST", f"{API}/paths-info/main", {"paths": [], "expand": "yes"}, "expand"),
    ("POST", f"{API}/branch/b1", [1], "body"),
    ("POST", f"{API}/branch/b1", {"startingPoint": [1]}, "startingPoint"),
    ("POST", f"{API}/tag/main", [1], "body"),
    ("POST", f"{API}/tag/main", {"tag": 5}, "tag"),
    ("POST", f"{API}/tag/main", {"tag": "t", "message": 5}, "message"),
]


@pytest.fixture(scope="module")
def typed_repo(hub):
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token=HUB_TOKEN).create_repo(REPO, exist_ok=True)
    return REPO


def _send(hub, method: str, path: str, body) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    content_type = "application/x-ndjson" if "/commit/" in path else "application/json"
    return request(hub.url, method, path, body=raw,
                   headers={"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": content_type})


@pytest.mark.parametrize("method, path, body, field", CASES, ids=[f"{c[1].split('/')[-1]}-{c[3]}-{i}"
                                                                    for i, c in enumerate(CASES)])
def test_wrong_json_types_are_a_4xx_naming_the_field(hub, typed_repo, method, path, body, field):
    resp = _send(hub, method, path, body)
    assert resp.status in (400, 422), (resp.status, resp.body)
    assert f"{field}'" in resp.message or f"'{field}" in resp.message, resp.message
    assert json.loads(resp.body)["error"] == resp.message


JSON_ROUTES = [
    ("POST", "/api/repos/create"), ("DELETE", "/api/repos/delete"), ("POST", "/api/validate-yaml"),
    ("POST", f"{API}/preupload/main"), ("POST", f"{LFS}/batch"), ("POST", f"{LFS}/verify"),
    ("POST", f"{API}/commit/main"), ("POST", f"{API}/paths-info/main"), ("POST", f"{API}/branch/b2"),
    ("POST", f"{API}/tag/main"),
]


@pytest.mark.parametrize("body", [b"[1]", b"5", b'"s"', b"null", b"true", b'{"a":', b"\xff\xfe", b"[]"])
def test_every_json_route_refuses_non_objects(hub, typed_repo, body):
    for method, path in JSON_ROUTES:
        resp = _send(hub, method, path, body)
        assert 400 <= resp.status < 500, (method, path, body, resp.status, resp.body)
        assert resp.message, (method, path)


def test_the_sweep_covers_every_route_that_reads_a_body():
    from hf_time.hubserver.messages import STREAM_BODY
    from hf_time.hubserver.server import ROUTES

    reading = {(m, r.pattern.pattern) for r in ROUTES for m in r.methods
               if m in ("POST", "PUT") and r.body != STREAM_BODY} | {("DELETE", r"^/api/repos/delete\Z")}
    covered = {(m, r.pattern.pattern) for m, path in JSON_ROUTES for r in ROUTES
               if m in r.methods and r.pattern.match(path)}
    assert reading <= covered, reading - covered
