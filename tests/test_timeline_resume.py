"""A run killed at each step boundary resumes to the same final files as an uninterrupted run.

Each run gets its own embedded Hub with the server's clock frozen, so commits with the same content,
parent and message get the same sha on both Hubs: then not only the weights but every published file
(lineage with pinned shas, state, card, plot) can be compared byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.errors import RepositoryNotFoundError
from conftest import HUB_TOKEN
from probes import record
from test_timeline_common import fake_evaluator, fake_trainer, save_tiny_bert, timeline_dict

from hf_time.hub import Hub
from hf_time.hubserver import HubServer
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline

# The hardest resume: init=ema with deploy=latest publishes the running chain to the -running repo, and a
# sequential technique (the registry's `ema`, through hf_time.sequential.fold) carries a fold state.
STRATEGIES = {"ema-latest-fold": {"init": "ema", "deploy": "latest", "method": "ema", "params": {"w": 0.5}},
              "merge_all-ties": {"init": "base", "deploy": "merge_all", "method": "ties", "params": {"density": 0.5}}}


class Killed(Exception):
    """Stands in for SIGKILL between two steps."""


@pytest.fixture
def frozen_clock(monkeypatch):
    import hf_time.hubserver.commits as commits

    monkeypatch.setattr(commits, "now_iso", lambda: "2025-01-01T00:00:00.000Z")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One base folder and one task folder for every run, so configs (which record data paths) are equal."""
    root = tmp_path_factory.mktemp("resume")
    return root, save_tiny_bert(root / "base")


def _fingerprint(hub: Hub, repos: list[str]) -> dict:
    """path -> oid (sha256 for LFS files, git blob sha otherwise) of every file at every step tag."""
    from huggingface_hub.hf_api import RepoFile

    out = {}
    for repo in repos:
        try:
            tags = sorted(t.name for t in hub.api.list_repo_refs(repo).tags)
        except RepositoryNotFoundError:  # this strategy does not use the repo (e.g. no -running)
            continue
        for tag in tags:
            for e in hub.api.list_repo_tree(repo, revision=tag, recursive=True):
                if isinstance(e, RepoFile):
                    out[f"{repo}@{tag}/{e.path}"] = e.lfs.sha256 if e.lfs else e.blob_id
            out[f"{repo}@{tag}"] = hub.api.model_info(repo, revision=tag).sha
    return out


def _run(shared, tmp: Path, name: str, strategy: dict, *, kill_after: int | None = None, work: Path | None = None,
         server: HubServer | None = None):
    root, base = shared
    server = server or HubServer(root=tmp / "hub", token=HUB_TOKEN).start()
    hub = Hub(endpoint=server.url)
    hub.publish(base, "tests/base", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(root, "tests/base", name, **strategy))

    def on_step(record, timer):
        if kill_after is not None and record.step == kill_after:
            raise Killed(f"killed after step {record.step}")

    try:
        run = run_timeline(config, hub=hub, work_dir=work or tmp / "work", trainer=fake_trainer,
                           evaluator=fake_evaluator, on_step=on_step, progress=False)
    except Killed:
        return server, None
    return server, run


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_killed_at_each_step_boundary_resumes_to_the_same_files(shared, tmp_path, frozen_clock, strategy):
    name = f"resume-{strategy}"
    repos = [f"tests/{name}", f"tests/{name}-experts", f"tests/{name}-running"]
    server, full = _run(shared, tmp_path / "full", name, STRATEGIES[strategy])
    expected = _fingerprint(Hub(endpoint=server.url), repos)
    server.stop()
    assert full.state.done == 3 and len([k for k in expected if k.count("@") == 1 and "/" not in k.split("@")[1]]) >= 6

    for kill_after in (1, 2):
        tmp = tmp_path / f"kill-{kill_after}"
        server, killed = _run(shared, tmp, name, STRATEGIES[strategy], kill_after=kill_after)
        assert killed is None
        # Resume from the Hub alone for one case (a fresh machine), from the local work dir for the other.
        work = tmp / ("fresh-work" if kill_after == 2 else "work")
        _, resumed = _run(shared, tmp, name, STRATEGIES[strategy], work=work, server=server)
        assert resumed.skipped == tuple(range(1, kill_after + 1))
        assert [t.step for t in resumed.timings] == list(range(kill_after + 1, 4))
        same = _fingerprint(Hub(endpoint=server.url), repos) == expected and resumed.state == full.state
        record("kill points", f"{strategy}: killed after step {kill_after}, resumed from the "
                              f"{'Hub alone' if kill_after == 2 else 'work dir'}", ok=same)
        assert _fingerprint(Hub(endpoint=server.url), repos) == expected, f"differs after a kill at step {kill_after}"
        assert resumed.state == full.state
        server.stop()


def test_rerunning_a_finished_timeline_changes_nothing(hub, shared, tmp_path):
    root, base = shared
    h = Hub(endpoint=hub.url)
    h.publish(base, "tests/base-rerun", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(root, "tests/base-rerun", "resume-rerun", init="ema", deploy="ema"))
    kwargs = dict(hub=h, work_dir=tmp_path / "work", trainer=fake_trainer, evaluator=fake_evaluator, progress=False)
    first = run_timeline(config, **kwargs)
    head = h.api.model_info(config.repo_id).sha
    calls = []
    again = run_timeline(config, **{**kwargs, "trainer": lambda *a, **k: calls.append(a)})
    assert again.skipped == (1, 2, 3) and again.timings == () and calls == []
    assert again.state == first.state
    assert h.api.model_info(config.repo_id).sha == head


def test_a_timeline_repo_from_another_config_is_refused(hub, shared, tmp_path):
    from hf_time.errors import TimelineConflictError

    root, base = shared
    h = Hub(endpoint=hub.url)
    h.publish(base, "tests/base-conflict", commit_message="tiny base")
    kwargs = dict(hub=h, work_dir=tmp_path / "work", trainer=fake_trainer, evaluator=fake_evaluator, progress=False)
    run_timeline(timeline_config_from_dict(timeline_dict(root, "tests/base-conflict", "resume-conflict")), **kwargs)
    other = timeline_config_from_dict(timeline_dict(root, "tests/base-conflict", "resume-conflict", ema_weight=0.25))
    with pytest.raises(TimelineConflictError, match="step-1 was made by another config"):
        run_timeline(other, **kwargs)
