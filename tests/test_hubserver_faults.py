"""Fault injection in the embedded Hub, and what the REAL huggingface_hub client does under each fault.

Issue 9, "keep the hunt": 5xx and 429 with Retry-After, connections dropped mid-upload and
mid-download, slow responses, 401/403, a branch moved by another commit. The table below pins down,
per fault, how many requests huggingface_hub 2.4.0 makes (``tries``), how long it would sleep
between them (``sleeps``; the client's ``time.sleep`` is recorded instead of slept) and what it
finally raises. hf_time's own retry layer (hf_time/hub.py) builds on these facts; if an upgrade of
huggingface_hub changes them, these tests say so.
"""

from __future__ import annotations

import os
import re
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from hf_time.hubserver import HubServer
from hf_time.hubserver.faults import Fault, FaultPlan, delay, drop, move_branch, respond

pytestmark = pytest.mark.probe("faults")

BLOB = bytes(range(256)) * 400  # 100 kB, stored through LFS (.bin)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the client's backoff sleeps instead of sleeping them."""
    from huggingface_hub import file_download
    from huggingface_hub.utils import _http

    slept: list[float] = []
    fake = types.SimpleNamespace(**{**vars(time), "sleep": slept.append})
    monkeypatch.setattr(_http, "time", fake)
    monkeypatch.setattr(file_download, "time", fake)
    return slept


@pytest.fixture
def repo(request) -> str:
    """A repo id unique to the test (and to its case, for the parametrized one)."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params["case"].name if callspec else request.node.name
    return "faults/" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80]


@pytest.fixture
def faulty(hub, api, repo):
    """A repo with a small file and an LFS file, and a way to install a fault plan on the Hub."""
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id=repo)
    api.upload_file(path_or_fileobj=BLOB, path_in_repo="w.bin", repo_id=repo)

    def install(*faults: Fault) -> FaultPlan:
        hub.faults = FaultPlan(*faults)
        return hub.faults

    yield install
    hub.faults = None


# ---- what the client does under each fault -------------------------------------------------------

def _model_info(api, repo, tmp):
    return api.model_info(repo).sha


def _upload(api, repo, tmp):
    api.upload_file(path_or_fileobj=b"new", path_in_repo="new.txt", repo_id=repo)
    return "new.txt" in api.list_repo_files(repo)


def _upload_lfs(api, repo, tmp):
    api.upload_file(path_or_fileobj=os.urandom(1000), path_in_repo="new.bin", repo_id=repo)
    return "new.bin" in api.list_repo_files(repo)


def _download(api, repo, tmp, **kw):
    return Path(hf_hub_download(repo, "a.txt", cache_dir=tmp, **kw)).read_bytes() == b"hello"


def _download_lfs(api, repo, tmp):
    return Path(hf_hub_download(repo, "w.bin", cache_dir=tmp)).read_bytes() == BLOB


def _snapshot(api, repo, tmp):
    return (Path(snapshot_download(repo, cache_dir=tmp)) / "w.bin").read_bytes() == BLOB


@dataclass(frozen=True)
class Case:
    """One fault, one client call, and what the client was seen to do."""

    name: str
    fault: Callable[[str], Fault]  # repo id -> fault
    call: Callable
    tries: int  # requests matching the fault that the client made
    sleeps: list
    raises: type | None = None  # None: the call succeeds
    status: int | None = None  # HTTP status carried by the error (or by its cause)


def _api(repo: str) -> str:
    return rf"^/api/models/{repo}\Z"


BACKOFF = [1, 2, 4, 8, 8]  # huggingface_hub http_backoff: 5 retries, doubling up to 8 s
CASES = [
    # 5xx: retried (with backoff) only by calls that go through http_backoff
    Case("503 model_info", lambda r: respond(503, path=_api(r)), _model_info, 1, [], HfHubHTTPError, 503),
    Case("503 x2 preupload", lambda r: respond(503, path="/preupload/", times=2), _upload, 3, [1, 2]),
    Case("503 always preupload", lambda r: respond(503, path="/preupload/", times=None), _upload, 6, BACKOFF,
         HfHubHTTPError, 503),
    Case("500 commit", lambda r: respond(500, path="/commit/"), _upload, 1, [], HfHubHTTPError, 500),
    Case("503 lfs batch", lambda r: respond(503, path="/objects/batch"), _upload_lfs, 2, [1]),
    Case("503 always lfs PUT", lambda r: respond(503, method="PUT", path="/lfs-upload/", times=None), _upload_lfs,
         6, BACKOFF, RuntimeError, 503),
    Case("503 lfs verify", lambda r: respond(503, path="/objects/verify"), _upload_lfs, 2, [1]),
    Case("503 HEAD resolve", lambda r: respond(503, method="HEAD", path="/resolve/"), _download, 2, []),
    Case("503 GET resolve", lambda r: respond(503, method="GET", path="/resolve/"), _download, 1, [],
         HfHubHTTPError, 503),
    Case("503 snapshot revision", lambda r: respond(503, path="/revision/"), _snapshot, 1, [],
         LocalEntryNotFoundError, 503),
    # 429 + Retry-After: the client sleeps Retry-After + 1 where it retries at all
    Case("429 preupload", lambda r: respond(429, path="/preupload/", retry_after=3), _upload, 2, [4.0]),
    Case("429 lfs PUT", lambda r: respond(429, method="PUT", path="/lfs-upload/", retry_after=1), _upload_lfs,
         2, [2.0]),
    Case("429 GET resolve", lambda r: respond(429, method="GET", path="/resolve/", retry_after=2), _download,
         2, [3.0]),
    Case("429 HEAD resolve", lambda r: respond(429, method="HEAD", path="/resolve/", retry_after=2), _download,
         2, []),  # retried at once: Retry-After is ignored on the metadata HEAD
    Case("429 commit", lambda r: respond(429, path="/commit/", retry_after=3), _upload, 1, [], HfHubHTTPError, 429),
    Case("429 model_info", lambda r: respond(429, path=_api(r), retry_after=3), _model_info, 1, [],
         HfHubHTTPError, 429),
    # 401/403: never retried
    Case("401 model_info", lambda r: respond(401, path=_api(r)), _model_info, 1, [], HfHubHTTPError, 401),
    Case("401 preupload", lambda r: respond(401, path="/preupload/"), _upload, 1, [], HfHubHTTPError, 401),
    Case("401 lfs batch", lambda r: respond(401, path="/objects/batch"), _upload_lfs, 1, [], HfHubHTTPError, 401),
    Case("403 commit", lambda r: respond(403, path="/commit/"), _upload, 1, [], HfHubHTTPError, 403),
    Case("403 HEAD resolve", lambda r: respond(403, method="HEAD", path="/resolve/"), _download, 1, [],
         LocalEntryNotFoundError, 403),
    # dropped connections
    Case("drop before commit", lambda r: drop("before", path="/commit/"), _upload, 1, [],
         httpx2.RemoteProtocolError),
    Case("drop before model_info", lambda r: drop("before", path=_api(r)), _model_info, 1, [],
         httpx2.RemoteProtocolError),
    Case("drop before preupload", lambda r: drop("before", path="/preupload/"), _upload, 2, [1]),
    Case("drop mid-upload lfs PUT", lambda r: drop("mid_request", method="PUT", path="/lfs-upload/"), _upload_lfs,
         2, [1]),
    Case("drop before GET resolve", lambda r: drop("before", method="GET", path="/resolve/"), _download, 2, [1]),
    Case("drop mid-download GET resolve", lambda r: drop("mid_response", method="GET", path="/resolve/"),
         _download_lfs, 2, [1]),  # under 10 MiB read: started over (see the resume test below)
    Case("drop before snapshot tree", lambda r: drop("before", path="/tree/"), _snapshot, 2, [1]),
    # slow responses (the server waits 1 s; the client's timeout is 0.3 s)
    Case("slow model_info", lambda r: delay(1.0, path=_api(r)), lambda a, r, t: a.model_info(r, timeout=0.3), 1,
         [], httpx2.ReadTimeout),
    Case("slow HEAD resolve", lambda r: delay(1.0, method="HEAD", path="/resolve/"),
         lambda a, r, t: _download(a, r, t, etag_timeout=0.3), 2, []),
    # another writer moves the branch between the client's read of the head and its commit
    Case("branch moved, parent_commit", lambda r: move_branch(r, path="/commit/"),
         lambda a, r, t: a.upload_file(path_or_fileobj=b"n", path_in_repo="n.txt", repo_id=r,
                                       parent_commit=a.model_info(r).sha), 1, [], HfHubHTTPError, 412),
    Case("branch moved, no parent", lambda r: move_branch(r, path="/commit/"), _upload, 1, []),
]


def _status(exc: BaseException) -> int | None:
    for e in (exc, exc.__cause__):
        response = getattr(e, "response", None)
        if response is not None:
            return response.status_code
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_what_the_real_client_does_under_each_fault(faulty, api, repo, tmp_path, sleeps, case):
    fault = case.fault(repo)
    plan = faulty(fault)
    if case.raises is None:
        assert case.call(api, repo, tmp_path) not in (False, None)
    else:
        with pytest.raises(case.raises) as err:
            case.call(api, repo, tmp_path)
        if case.status is not None:
            assert _status(err.value) == case.status
    assert plan.count(fault.method, fault.path) == case.tries
    assert sleeps == case.sleeps
    assert fault.fired >= 1  # the fault did act


# ---- consequences worth knowing --------------------------------------------------------------------

def test_a_commit_whose_answer_was_lost_is_applied_and_an_identical_retry_is_a_no_op(faulty, api, repo):
    plan = faulty(drop("after", path="/commit/"))
    with pytest.raises(httpx2.RemoteProtocolError):
        api.upload_file(path_or_fileobj=b"once", path_in_repo="once.txt", repo_id=repo)
    assert "once.txt" in api.list_repo_files(repo)  # applied although the client saw an error
    head = api.model_info(repo).sha
    # Retrying the same upload is safe: preupload reports the file unchanged, so no second commit.
    again = api.upload_file(path_or_fileobj=b"once", path_in_repo="once.txt", repo_id=repo)
    assert again.oid == head and len(api.list_repo_commits(repo)) == 4
    assert plan.count("POST", "/commit/") == 1


def test_a_dropped_download_resumes_from_the_last_whole_chunk(faulty, api, repo, tmp_path, sleeps, caplog):
    import logging

    # The client writes what it reads in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE) and resumes
    # with a Range request from the last whole chunk; below 10 MiB received, it starts over (200).
    big = os.urandom(24 << 20)
    api.upload_file(path_or_fileobj=big, path_in_repo="big.bin", repo_id=repo)
    caplog.set_level(logging.DEBUG, logger="hf_time.hubserver")
    faulty(drop("mid_response", method="GET", path="/resolve/"))  # hangs up after 12 MiB
    assert Path(hf_hub_download(repo, "big.bin", cache_dir=tmp_path)).read_bytes() == big
    statuses = [r.getMessage().split('" ')[-1].split()[0] for r in caplog.records
                if f'"GET /{repo}/resolve/main/big.bin' in r.getMessage()]
    assert statuses == ["200", "206"] and sleeps == [1]


def test_a_moved_branch_keeps_the_concurrent_commit(faulty, api, repo):
    faulty(move_branch(repo, path="/commit/"))
    api.upload_file(path_or_fileobj=b"mine", path_in_repo="mine.txt", repo_id=repo)
    files = api.list_repo_files(repo)
    assert "mine.txt" in files and ".faults/concurrent-1.txt" in files
    titles = [c.title for c in api.list_repo_commits(repo)]
    assert titles[1] == "Concurrent commit 1 (injected fault)"


# ---- the plan itself ---------------------------------------------------------------------------------

def test_faults_match_by_method_and_path_and_fire_a_bounded_number_of_times():
    plan = FaultPlan(respond(503, method="POST", path="/commit/", times=2, skip=1), delay(0, path="/tree/"))
    assert plan.take("GET", "/api/models/a/b/commit/main") is None  # wrong method
    assert plan.take("POST", "/api/models/a/b/commit/main") is None  # skipped once
    assert plan.take("POST", "/api/models/a/b/commit/main").action.status == 503
    assert plan.take("POST", "/api/models/a/b/commit/main").action.status == 503
    assert plan.take("POST", "/api/models/a/b/commit/main") is None  # times=2 used up
    assert plan.take("GET", "/api/models/a/b/tree/main") is not None
    assert plan.count() == 6 and plan.count("POST", "/commit/") == 4
    assert [hit for _, _, hit in plan.seen] == [None, None, "Respond", "Respond", None, "Delay"]
    with pytest.raises(ValueError):
        drop("sometimes")


def test_a_plan_is_inert_until_installed_and_can_be_removed(tmp_path):
    plan = FaultPlan(respond(500, times=None))
    with HubServer(tmp_path / "hub", token="t") as server:
        api = HfApi(endpoint=server.url, token="t")
        api.create_repo("me/m")
        assert server.faults is None and plan.seen == []
        server.faults = plan
        with pytest.raises(HfHubHTTPError):
            api.model_info("me/m")
        server.faults = None
        assert api.model_info("me/m").sha
    assert len(plan.seen) == 1
    with HubServer(tmp_path / "hub", token="t", faults=FaultPlan(respond(401))) as server:
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=server.url, token="t").model_info("me/m")
        assert err.value.response.status_code == 401
