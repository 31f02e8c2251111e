"""hf_time's own Hub client under injected faults (hf_time.hubserver.faults): what it survives by bounded
retries, and the one line it ends with when it cannot."""

from __future__ import annotations

import re
import types

import pytest

from conftest import HUB_TOKEN
from hf_time.api import merge
from hf_time.cli import main
from hf_time.errors import HubRequestError, PublishError
from hf_time.hub import Hub
from hf_time.hubserver.faults import FaultPlan, drop, move_branch, respond
from tiny import save_tiny_llama

pytestmark = pytest.mark.probe("faults")


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """hf_time's backoff sleeps, recorded instead of slept (the client's own are patched too)."""
    import time

    from huggingface_hub import file_download
    from huggingface_hub.utils import _http

    from hf_time import hub_retry

    slept: list[float] = []
    fake = types.SimpleNamespace(**{**vars(time), "sleep": slept.append})
    for module in (hub_retry, _http, file_download):
        monkeypatch.setattr(module, "time", fake)
    return slept


@pytest.fixture
def published(hub, tmp_path_factory, request):
    """A base and an expert on the embedded Hub, in repos unique to the test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50]
    d = tmp_path_factory.mktemp("faulty")
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    base, expert = f"faults-client/{slug}-base", f"faults-client/{slug}-e1"
    h.publish(save_tiny_llama(d / "base", 0), base, commit_message="base")
    h.publish(save_tiny_llama(d / "e1", 1, base=d / "base"), expert, commit_message="e1")
    yield h, base, expert
    hub.faults = None


def test_two_503s_on_model_info_are_retried(hub, published, sleeps):
    h, base, _ = published
    hub.faults = FaultPlan(respond(503, method="GET", path=rf"/api/models/{base}", times=2))
    assert h.resolve(base).sha
    assert sleeps[:2] == [0.5, 1.0] and len(hub.faults.seen) >= 3


def test_a_hub_that_stays_down_is_one_error_after_bounded_retries(hub, published, sleeps):
    h, base, _ = published
    hub.faults = FaultPlan(respond(503, method="GET", path=rf"/api/models/{base}", times=100))
    with pytest.raises(HubRequestError, match=r"answered 503 after 3 tries; try again later"):
        h.resolve(base)
    assert sum(sleeps) < 10


def test_429_honours_retry_after(hub, published, sleeps):
    h, base, _ = published
    hub.faults = FaultPlan(respond(429, retry_after=1, method="GET", path=rf"/api/models/{base}", times=1))
    assert h.resolve(base).sha and sleeps[0] == 1.0


def test_a_refused_token_is_not_retried(hub, published, sleeps):
    h, base, _ = published
    hub.faults = FaultPlan(respond(401, method="GET", path=rf"/api/models/{base}", times=5))
    with pytest.raises(HubRequestError, match="401; the token was refused"):
        h.resolve(base)
    assert sleeps == []


def test_a_dropped_connection_is_retried(hub, published, sleeps):
    h, base, _ = published
    hub.faults = FaultPlan(drop("before", method="GET", path=rf"/api/models/{base}", times=1))
    assert h.resolve(base).sha


def test_a_merge_survives_a_dropped_download(hub, published, tmp_path, sleeps):
    h, base, expert = published
    hub.faults = FaultPlan(drop("mid_response", method="GET", path=r"/resolve/.*model\.safetensors", times=1))
    res = merge(base, [expert], "ties", out=tmp_path / "m", hub=h, progress=False)
    assert res.out_dir.is_dir() and [name for _, _, name in hub.faults.seen if name] == ["Drop"]


def test_a_commit_whose_answer_is_lost_is_recognised_as_landed(hub, published, tmp_path, sleeps):
    h, base, expert = published
    out = merge(base, [expert], "ties", out=tmp_path / "m", hub=h, progress=False).out_dir
    target = f"{base}-merged"
    h.api.create_repo(target)
    before = len(h.api.list_repo_commits(target))
    hub.faults = FaultPlan(drop("after", method="POST", path=rf"/api/models/{target}/commit/", times=1))
    pub = h.publish(out, target, commit_message="merge", tag="v1")
    commits = h.api.list_repo_commits(target)
    assert len(commits) == before + 1 and commits[0].commit_id == pub.commit  # exactly one commit, tagged
    assert {t.name: t.target_commit for t in h.api.list_repo_refs(target).tags} == {"v1": pub.commit}


def test_a_branch_moved_by_another_writer_is_refused_with_the_reason(hub, published, tmp_path, sleeps):
    h, base, expert = published
    out = merge(base, [expert], "ties", out=tmp_path / "m", hub=h, progress=False).out_dir
    target = f"{base}-moved"
    h.api.create_repo(target)
    hub.faults = FaultPlan(move_branch(target, method="POST", path=rf"/api/models/{target}/commit/", times=1))
    with pytest.raises(PublishError, match="moved to .* while publishing"):
        h.publish(out, target, commit_message="merge")


def test_a_full_hub_disk_ends_the_cli_in_one_line(hub, published, tmp_path, capsys, sleeps):
    h, base, expert = published
    hub.faults = FaultPlan(respond(507, method="POST", path=r"/commit/", times=10))
    code = main(["merge", "--base", base, "--expert", expert, "--method", "ties", "--out", str(tmp_path / "m"),
                 "--push-to", f"{base}-full", "--endpoint", hub.url, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "disk is full" in err and "Traceback" not in err
