"""The embedded Hub under hostile or unlucky conditions (issue 9, defects 8 and 9).

Very long ``/resolve`` URLs cost seconds of CPU; names ending in a newline passed the name regexes
(``$`` matches before a final newline, ``\\Z`` does not); a full disk answered 500, which the client
retries for 23 s; temp files of crashed uploads were never removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
import types

import pytest
from conftest import HUB_TOKEN
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from hub_raw import request

from hf_time import atomic
from hf_time.hubserver import HubServer, blobs, storage

pytestmark = pytest.mark.probe("Hub probes")

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}


# ---- long URLs ---------------------------------------------------------------------------------

def test_absurdly_long_urls_are_refused_with_414(hub, api, repo_name):
    api.create_repo(repo_name)
    resp = request(hub.url, "GET", f"/{repo_name}/resolve/main/" + "a/" * 30000)  # 60 KB
    assert resp.status == 414 and "longer than" in resp.message


def test_resolving_a_long_url_reads_the_refs_once(hub, api, repo_name, monkeypatch):
    api.create_repo(repo_name)
    reads = []
    real = storage.Repo.refs
    monkeypatch.setattr(storage.Repo, "refs", lambda self: reads.append(1) or real(self))
    path = f"/{repo_name}/resolve/main/" + "a/" * 3900 + "x.txt"  # under the URL limit, 3900 segments
    resp = request(hub.url, "GET", path)
    assert resp.status == 404 and resp.headers["x-error-code"] == "EntryNotFound"
    assert len(reads) <= 2  # was one read of refs.json (plus a glob) per segment
    reads.clear()
    resp = request(hub.url, "GET", f"/{repo_name}/resolve/" + "b/" * 3900 + "x.txt")
    assert resp.status == 404 and resp.headers["x-error-code"] == "RevisionNotFound"
    assert len(reads) <= 2


def test_revisions_with_slashes_still_resolve(api, repo_name, hub):
    api.create_repo(repo_name)
    api.create_branch(repo_name, branch="feature/x/y")
    api.upload_file(path_or_fileobj=b"hi", path_in_repo="d/f.txt", repo_id=repo_name, revision="feature/x/y")
    assert request(hub.url, "GET", f"/{repo_name}/resolve/feature/x/y/d/f.txt").body == b"hi"
    assert request(hub.url, "GET", f"/{repo_name}/resolve/feature%2Fx%2Fy/d/f.txt").body == b"hi"


# ---- names ending in a newline -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["model\n", "model\n\n", "x" * 96 + "\n"])
def test_repo_names_ending_in_a_newline_are_refused(hub, name):
    resp = request(hub.url, "POST", "/api/repos/create", body=json.dumps({"name": name}).encode(), headers=AUTH)
    assert 400 <= resp.status < 500
    assert not (hub.root / "repos" / "models" / "user" / name).exists()


@pytest.mark.parametrize("kind", ["branch", "tag"])
def test_ref_names_ending_in_a_newline_are_refused(hub, api, repo_name, kind):
    api.create_repo(repo_name)
    if kind == "branch":
        resp = request(hub.url, "POST", f"/api/models/{repo_name}/branch/b%0A", body=b"{}", headers=AUTH)
    else:
        resp = request(hub.url, "POST", f"/api/models/{repo_name}/tag/main", body=b'{"tag": "v1\\n"}', headers=AUTH)
    assert resp.status == 400 and "Invalid" in resp.message
    refs = api.list_repo_refs(repo_name)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []


def test_lfs_oids_ending_in_a_newline_are_refused(hub, api, repo_name):
    api.create_repo(repo_name)
    oid = hashlib.sha256(b"x").hexdigest() + "\n"
    body = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": 1}]}).encode()
    resp = request(hub.url, "POST", f"/{repo_name}.git/info/lfs/objects/batch", body=body, headers=AUTH)
    assert resp.status == 400 and "objects[0].oid" in resp.message


def test_shas_ending_in_a_newline_are_not_commits(hub, api, repo_name):
    api.create_repo(repo_name)
    oid = api.model_info(repo_name).sha
    repo = hub.storage.repo("models", repo_name)
    assert repo.has_commit(oid) and not repo.has_commit(oid + "\n")
    assert repo.resolve(oid[:7]) == oid
    with pytest.raises(Exception, match="Invalid rev id"):
        repo.resolve(oid[:7] + "\n")


# ---- disk full ---------------------------------------------------------------------------------

@pytest.fixture
def fill_disk(monkeypatch):
    """Call it to make every blob/record write of the server fail as on a full disk (ENOSPC)."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    full = types.SimpleNamespace(**{**vars(os), "fsync": fsync})

    def fill():  # the blob store's own writes and the atomic writes it delegates to
        monkeypatch.setattr(blobs, "os", full)
        monkeypatch.setattr(atomic, "os", full)

    return fill


def _requests(caplog, request_line_start: str) -> int:
    """How many requests the server logged whose request line starts so (logged as '"GET /x HTTP/1.1"')."""
    return sum(f'"{request_line_start}' in r.getMessage() for r in caplog.records if r.name == "hf_time.hubserver")


def test_a_full_disk_is_507_and_the_client_does_not_retry(hub, api, repo_name, fill_disk, caplog):
    api.create_repo(repo_name)
    fill_disk()
    caplog.set_level(logging.DEBUG, logger="hf_time.hubserver")
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"small regular file", path_in_repo="a.txt", repo_id=repo_name)
    assert err.value.response.status_code == 507
    assert "disk" in str(err.value).lower()
    assert _requests(caplog, f"POST /api/models/{repo_name}/commit/main") == 1
    # LFS upload (PUT through the client's http_backoff): 507 is not in its retry list either.
    # The client wraps LFS upload failures: RuntimeError("Error while uploading ...") from the 507.
    with pytest.raises(RuntimeError, match="Error while uploading 'w.bin'") as err:
        api.upload_file(path_or_fileobj=b"\0" * 1000, path_in_repo="w.bin", repo_id=repo_name)
    assert isinstance(err.value.__cause__, HfHubHTTPError) and err.value.__cause__.response.status_code == 507
    assert _requests(caplog, "PUT /lfs-upload/") == 1
    assert list((hub.root / "repos" / "models" / repo_name).rglob(".upload-*")) == []
    assert list((hub.root / "repos" / "models" / repo_name).rglob(".tmp-*")) == []


def test_507_is_not_in_the_clients_retry_list():
    from huggingface_hub.utils import _http

    assert 507 not in _http._DEFAULT_RETRY_ON_STATUS_CODES and 500 in _http._DEFAULT_RETRY_ON_STATUS_CODES


# ---- temp files of crashed uploads -------------------------------------------------------------

def test_stale_temp_files_are_removed_at_start(tmp_path, caplog):
    root = tmp_path / "hub"
    with HubServer(root, token="t") as server:
        api = HfApi(endpoint=server.url, token="t")
        api.create_repo("me/m")
        api.upload_file(path_or_fileobj=b"\0" * 100, path_in_repo="w.bin", repo_id="me/m")
    repo = root / "repos" / "models" / "me" / "m"
    old = time.time() - 3600
    stale = [repo / "blobs" / "sha256" / "ab" / ".upload-crashed", repo / ".tmp-refs", repo / "commits" / ".tmp-c"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    fresh = repo / "blobs" / "sha256" / "cd" / ".upload-in-flight"  # another process may be writing it
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"y")
    caplog.set_level(logging.INFO, logger="hf_time.hubserver")
    with HubServer(root, token="t") as server:
        assert not any(p.exists() for p in stale)
        assert fresh.exists()
        assert HfApi(endpoint=server.url, token="t").list_repo_files("me/m") == [".gitattributes", "w.bin"]
    assert "removed 3 stale temporary files" in caplog.text
