"""Request bodies of the embedded Hub: bounded, strictly framed, never smuggled.

Issue 9, defect 3: 400 MB to ``/api/validate-yaml`` (no auth needed) grew the server to 1.2 GB, and
a chunk size of ``-1`` read until the client hung up. Defect 5: ``Content-Length: +60`` was read as
0, so the body was parsed as a second request. Bounds are asserted by counting the body bytes the
server read (``traffic.body_bytes``), never by timing.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import HUB_TOKEN
from hub_raw import Conn, exchange, host_of, request

from hf_time.hubserver import HubServer, Limits

pytestmark = pytest.mark.probe("Hub probes")

CARD = json.dumps({"content": "---\nlicense: mit\n---\n# card\n"}).encode()


def _post_head(hub_url: str, path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host_of(hub_url)}", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(*chunks: bytes, end: bool = True) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return out + (b"0\r\n\r\n" if end else b"")


# ---- defect 3: bounded bodies ------------------------------------------------------------------

def test_a_400mb_validate_yaml_body_is_refused_before_it_is_read(hub):
    before = hub.traffic.body_bytes
    with Conn(hub.url) as conn:
        conn.send(_post_head(hub.url, "/api/validate-yaml", f"Content-Length: {400 << 20}"))
        conn.send(b"{" + b" " * (1 << 20))  # the first MiB of it; the rest never needs to be sent
        resp = conn.response()
        assert resp.status == 413 and "larger than" in resp.message
        assert resp.headers["connection"] == "close"
        assert conn.rest() == b""  # the server hung up: no keep-alive on a body it will not read
    assert hub.traffic.body_bytes - before == 0


def test_a_chunked_body_is_cut_at_the_limit(tmp_path):
    limit = 64 * 1024
    with HubServer(tmp_path / "hub", limits=Limits(max_json_bytes=limit)) as server:
        with Conn(server.url) as conn:
            conn.send(_post_head(server.url, "/api/validate-yaml", "Transfer-Encoding: chunked"))
            conn.send(_chunked(*[b" " * 16384] * 16, end=False))  # 256 KiB, 4x the limit, no end
            resp = conn.response()
        assert resp.status == 413
        assert server.traffic.body_bytes <= limit  # the chunk that would cross the limit is not read
        # Under the limit, a chunked JSON body is fine.
        ok = request(server.url, "POST", "/api/validate-yaml", body=_chunked(CARD[:10], CARD[10:]),
                     headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                     content_length=False)
        assert ok.status == 200, ok


@pytest.mark.parametrize("size_line", [b"-1", b"zz", b"", b"1" * 17, b"0x10", b"+10", b"1 0", b"\xff"])
def test_bad_chunk_sizes_are_refused(hub, size_line):
    raw = _post_head(hub.url, "/api/validate-yaml", "Transfer-Encoding: chunked") + size_line + b"\r\n" + CARD
    resp, after = exchange(hub.url, raw, timeout=10)  # the old reader waited for the client to hang up
    assert resp is not None and resp.status == 400 and "chunk size" in resp.message, resp
    assert after == b""


def test_chunk_data_must_end_with_crlf(hub):
    raw = _post_head(hub.url, "/api/validate-yaml", "Transfer-Encoding: chunked") + b"5\r\nabcdeXX0\r\n\r\n"
    resp, _ = exchange(hub.url, raw, timeout=10)
    assert resp.status == 400 and "CRLF" in resp.message


def _ticket(hub, api, repo_name: str, data: bytes) -> str:
    from huggingface_hub import get_session

    api.create_repo(repo_name)
    payload = {"operation": "upload", "transfers": ["basic"],
               "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]}
    resp = get_session().post(f"{hub.url}/{repo_name}.git/info/lfs/objects/batch", json=payload,
                              headers={"authorization": f"Bearer {HUB_TOKEN}"})
    return resp.json()["objects"][0]["actions"]["upload"]["href"].removeprefix(hub.url)


def _upload_temp_files(hub, repo_name: str) -> list:
    return list((hub.root / "repos" / "models" / repo_name / "blobs").rglob(".upload-*"))


def test_lfs_upload_longer_than_announced_is_refused_before_reading(hub, api, repo_name):
    data = b"\x00lfs" * 1000
    path = _ticket(hub, api, repo_name, data)
    before = hub.traffic.body_bytes
    with Conn(hub.url) as conn:
        conn.send(f"PUT {path} HTTP/1.1\r\nHost: {host_of(hub.url)}\r\nContent-Length: {100 << 20}\r\n\r\n".encode())
        conn.send(data)
        resp = conn.response()
    assert resp.status == 400 and f"Expected {len(data)} bytes" in resp.message
    assert hub.traffic.body_bytes == before
    # Chunked (no announced length): the size is checked while streaming to disk.
    too_long = request(hub.url, "PUT", path, body=_chunked(data, b"extra"),
                       headers={"Transfer-Encoding": "chunked"}, content_length=False)
    assert too_long.status == 400 and "longer than" in too_long.message
    too_short = request(hub.url, "PUT", path, body=_chunked(data[:-1]),
                        headers={"Transfer-Encoding": "chunked"}, content_length=False)
    assert too_short.status == 400 and "ended after" in too_short.message
    assert _upload_temp_files(hub, repo_name) == []  # refused uploads leave nothing behind
    assert request(hub.url, "PUT", path, body=data).status == 200


def test_a_commit_is_parsed_line_by_line_with_a_line_limit(tmp_path):
    with HubServer(tmp_path / "hub", token="t", limits=Limits(max_commit_line_bytes=4096)) as server:
        from huggingface_hub import CommitOperationAdd, HfApi

        api = HfApi(endpoint=server.url, token="t")
        api.create_repo("me/m")
        api.create_commit("me/m", operations=[CommitOperationAdd(f"f{i}.txt", b"x" * 2000) for i in range(20)],
                          commit_message="20 files of 2 kB: each line is under the limit")
        assert len(api.list_repo_files("me/m")) == 21
        line = json.dumps({"key": "file", "value": {"path": "big.txt", "content": "A" * 8192}}).encode()
        body = json.dumps({"key": "header", "value": {"summary": "s"}}).encode() + b"\n" + line + b"\n"
        resp = request(server.url, "POST", "/api/models/me/m/commit/main", body=body,
                       headers={"Authorization": "Bearer t", "Content-Type": "application/x-ndjson"})
        assert resp.status == 413 and "line" in resp.message


def test_a_small_refused_body_keeps_the_connection(hub):
    # 401 on a small JSON body: the body is skipped, and the next request on the socket is served.
    with Conn(hub.url) as conn:
        conn.send(_post_head(hub.url, "/api/repos/create", f"Content-Length: {len(CARD)}") + CARD)
        assert conn.response().status == 401
        conn.send(_post_head(hub.url, "/api/validate-yaml", f"Content-Length: {len(CARD)}") + CARD)
        assert conn.response().status == 200


# ---- defect 5: request smuggling ---------------------------------------------------------------

SMUGGLED = f"GET /api/whoami-v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {HUB_TOKEN}\r\n\r\n".encode()


@pytest.mark.parametrize("content_length", [
    "+60", "-1", "6 0", "60 ", "0x3c", "1e2", "\uff16\uff10", "60, 61", "99999999999999999999",
])
def test_malformed_content_length_is_refused_and_nothing_is_smuggled(hub, content_length):
    body = SMUGGLED.ljust(60, b"\n")
    head = _post_head(hub.url, "/api/validate-yaml").replace(b"\r\n\r\n", b"\r\n")
    raw = head + b"Content-Length: " + content_length.encode("utf-8") + b"\r\n\r\n" + body
    resp, after = exchange(hub.url, raw, timeout=10)
    assert resp.status == 400 and "Content-Length" in resp.message, resp
    assert after == b""  # no second response: the body was not taken for a request


def test_conflicting_duplicate_content_lengths_are_refused(hub):
    raw = _post_head(hub.url, "/api/validate-yaml", f"Content-Length: {len(CARD)}", "Content-Length: 0") + CARD
    resp, after = exchange(hub.url, raw, timeout=10)
    assert resp.status == 400 and after == b""
    same = _post_head(hub.url, "/api/validate-yaml", f"Content-Length: {len(CARD)}", f"Content-Length: {len(CARD)}",
                      "Connection: close")
    resp, _ = exchange(hub.url, same + CARD, timeout=10)
    assert resp.status == 200  # identical copies are allowed (RFC 9112 §6.3)


def test_content_length_with_transfer_encoding_is_refused(hub):
    raw = _post_head(hub.url, "/api/validate-yaml", "Content-Length: 4", "Transfer-Encoding: chunked")
    resp, after = exchange(hub.url, raw + b"0\r\n\r\n" + SMUGGLED, timeout=10)
    assert resp.status == 400 and "both Content-Length and Transfer-Encoding" in resp.message
    assert after == b""


@pytest.mark.parametrize("coding", ["gzip", "gzip, chunked", "chunked, chunked", "identity", "chunked;q=1"])
def test_unsupported_transfer_encodings_are_refused(hub, coding):
    raw = _post_head(hub.url, "/api/validate-yaml", f"Transfer-Encoding: {coding}") + _chunked(CARD) + SMUGGLED
    resp, after = exchange(hub.url, raw, timeout=10)
    assert resp.status == 501 and "Transfer-Encoding" in resp.message
    assert after == b""


@pytest.mark.parametrize("header", [b"Content-Length : 60", b"Transfer-Encoding : chunked",
                                    b"X-Folded: a\r\n b", b"no colon here"])
def test_malformed_header_lines_are_refused(hub, header):
    raw = _post_head(hub.url, "/api/validate-yaml").replace(b"\r\n\r\n", b"\r\n" + header + b"\r\n\r\n")
    resp, after = exchange(hub.url, raw + SMUGGLED.ljust(60, b"\n"), timeout=10)
    assert resp.status == 400 and after == b""


def test_expect_100_continue_is_only_sent_once_the_body_is_wanted(hub):
    # Refused: the final status comes at once, without a "100 Continue" inviting the 400 MB.
    before = hub.traffic.body_bytes
    with Conn(hub.url) as conn:
        conn.send(_post_head(hub.url, "/api/validate-yaml", f"Content-Length: {400 << 20}", "Expect: 100-continue"))
        resp = conn.response()
        assert resp.status == 413 and conn.rest() == b""
    assert hub.traffic.body_bytes == before
    # Accepted: "100 Continue" first, then the body is sent and answered.
    with Conn(hub.url) as conn:
        conn.send(_post_head(hub.url, "/api/validate-yaml", f"Content-Length: {len(CARD)}", "Expect: 100-continue"))
        assert conn.response().status == 100
        conn.send(CARD)
        assert conn.response().status == 200
