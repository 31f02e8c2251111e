"""Seeded mutation fuzzing of the embedded Hub: a client mistake is never a 500, and always answered.

Valid requests of every body-reading route (as the real client sends them) are mutated: a JSON
node replaced by a value of another type, bytes flipped, inserted or cut, the framing headers
garbled, URL segments replaced by odd ones. Every probe must get a response below 500, and the
server must still serve a valid request afterwards. The seed is fixed, so a failure reproduces.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import random
import socket

import pytest
from conftest import HUB_TOKEN
from hub_raw import Conn, host_of
from probes import record

REPO = "tests/fuzz"
SHA = hashlib.sha256(b"x").hexdigest()
ODD_VALUES = [None, 0, -1, 2**70, 1.5, True, "", "x" * 300, "\n", "../..", "%00", "\u0000", [], [1], {}, {"a": 1},
              [{"path": None}], "refs/pr/1", "main\n"]
ODD_SEGMENTS = ["..", "%2e%2e", "%00", "%0A", "%ff", "a" * 300, "refs%2Fpr%2F1", "", "%", "%zz", "~", ".git",
                "main", "0" * 40, "*", "\u00e9"]
HEADER = {"key": "header", "value": {"summary": "fuzz", "description": "", "parentCommit": None}}

SEEDS = [
    ("POST", "/api/repos/create", {"name": "fuzzed", "type": "model", "private": False}),
    ("DELETE", "/api/repos/delete", {"name": "does-not-exist", "type": "model", "organization": "tests"}),
    ("POST", "/api/validate-yaml", {"content": "---\nlicense: mit\n---\n", "repoType": "model"}),
    ("POST", f"/api/models/{REPO}/preupload/main",
     {"files": [{"path": "a.txt", "size": 1, "sample": base64.b64encode(b"x").decode()}], "gitIgnore": None}),
    ("POST", f"/{REPO}.git/info/lfs/objects/batch",
     {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": SHA, "size": 1}], "hash_algo": "sha256",
      "ref": {"name": "main"}}),
    ("POST", f"/{REPO}.git/info/lfs/objects/verify", {"oid": SHA, "size": 1}),
    ("POST", f"/api/models/{REPO}/paths-info/main", {"paths": ["a.txt", "d"], "expand": True}),
    ("POST", f"/api/models/{REPO}/branch/fuzz-branch", {"startingPoint": "main"}),
    ("POST", f"/api/models/{REPO}/tag/main", {"tag": "fuzz-tag", "message": "m"}),
    ("POST", f"/api/models/{REPO}/commit/main", [
        HEADER, {"key": "file", "value": {"path": "f.txt", "content": base64.b64encode(b"hi").decode(),
                                          "encoding": "base64"}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": SHA, "size": 1}},
        {"key": "deletedFile", "value": {"path": "gone.txt"}}, {"key": "deletedFolder", "value": {"path": "dir/"}}]),
]
GET_SEEDS = [f"/api/models/{REPO}/revision/main", f"/api/models/{REPO}/tree/main/d", f"/{REPO}/resolve/main/a.txt",
             f"/api/models/{REPO}/commits/main", f"/api/models/{REPO}/refs", f"/datasets/{REPO}/resolve/main/a.txt"]


def _nodes(obj, path=()):
    """Every (path, value) of a JSON document, the root included."""
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _nodes(value, (*path, i))


def _replace(obj, path, value):
    if not path:
        return value
    out = copy.deepcopy(obj)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _encode(method: str, path: str, body) -> bytes:
    if isinstance(body, list) and "/commit/" in path:
        return b"".join(json.dumps(line).encode() + b"\n" for line in body)
    return json.dumps(body).encode()


def _mutate(rng: random.Random, method: str, path: str, body) -> tuple[str, dict[str, str], bytes]:
    """One probe: a mutated (path, extra headers, body) from a valid seed."""
    headers: dict[str, str] = {}
    kind = rng.randrange(6)
    if kind <= 1:  # a JSON node of another type (commit lines are mutated one line at a time)
        if isinstance(body, list) and "/commit/" in path:
            i = rng.randrange(len(body))
            node_path, _ = rng.choice(list(_nodes(body[i])))
            body = [*body[:i], _replace(body[i], node_path, rng.choice(ODD_VALUES)), *body[i + 1:]]
        else:
            node_path, _ = rng.choice(list(_nodes(body)))
            body = _replace(body, node_path, rng.choice(ODD_VALUES))
        raw = _encode(method, path, body)
    else:
        raw = bytearray(_encode(method, path, body))
        if kind == 2:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif kind == 3:  # cut or insert
            cut = rng.randrange(len(raw))
            raw = raw[:cut] + (bytes(rng.randrange(256) for _ in range(rng.randint(0, 20))) if rng.random() < 0.5 else b"")
        elif kind == 4:  # garbled framing
            headers["Content-Length"] = rng.choice(["+1", "-1", "1e3", " 5", "5 5", "0x10", "99999999999", "", "18446744073709551617"])
        else:  # odd URL segment
            parts = path.split("/")
            parts[rng.randrange(2, len(parts))] = rng.choice(ODD_SEGMENTS)
            path = "/".join(parts)
        raw = bytes(raw)
    return path, headers, raw


def _probe(url: str, method: str, path: str, headers: dict[str, str], body: bytes) -> int | None:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_of(url)}", f"Authorization: Bearer {HUB_TOKEN}",
             "Content-Type: application/json", "Connection: close"]
    headers = {"Content-Length": str(len(body)), **headers}
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with Conn(url, timeout=30) as conn:
        conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body)
        conn.sock.shutdown(socket.SHUT_WR)  # a body shorter than announced then ends, as a hang-up would
        resp = conn.response(head=method == "HEAD")
    return None if resp is None else resp.status


@pytest.fixture(scope="module")
def fuzz_repo(hub):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    api.create_repo(REPO, exist_ok=True)
    api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=REPO)
    api.upload_file(path_or_fileobj=b"b", path_in_repo="d/b.txt", repo_id=REPO)
    return api


@pytest.mark.parametrize("seed", range(4))
def test_mutated_requests_get_an_answer_below_500(hub, fuzz_repo, caplog, seed):
    caplog.set_level(logging.WARNING, logger="hf_time.hubserver")
    rng = random.Random(seed)
    statuses: dict[int | None, int] = {}
    for _ in range(100):
        if rng.random() < 0.8:
            method, path, body = rng.choice(SEEDS)
            path, headers, raw = _mutate(rng, method, path, body)
        else:
            method, path, headers, raw = rng.choice(["GET", "HEAD"]), rng.choice(GET_SEEDS), {}, b""
            parts = path.split("/")
            for _ in range(rng.randint(1, 3)):
                parts[rng.randrange(2, len(parts))] = rng.choice(ODD_SEGMENTS)
            path = "/".join(parts)
        status = _probe(hub.url, method, path, headers, raw)
        statuses[status] = statuses.get(status, 0) + 1
        record("Hub probes", f"mutated {method} {path[:60]}", ok=status is not None and status < 500, detail=str(status))
        assert status is not None and status < 500, (method, path, headers, raw[:200], status)
    assert "internal error" not in caplog.text
    assert fuzz_repo.model_info(REPO).sha  # still serving
    assert len(statuses) >= 3  # the probes reached different outcomes, not one early refusal
