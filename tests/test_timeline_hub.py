"""A timeline on the embedded Hub: repo layout and tags, the card's model-index, the CLI, OPCM by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_timeline_common import base_tensors, fake_evaluator, fake_trainer, save_tiny_bert, timeline_dict

from hf_time.hub import Hub
from hf_time.lineage import Lineage
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline


@pytest.fixture(scope="module")
def timeline(hub, tmp_path_factory):
    """One Best-in-TIME timeline over 3 steps (fake trainer), shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("hub-timeline")
    h = Hub(endpoint=hub.url)
    h.publish(save_tiny_bert(tmp / "base"), "tests/hub-base", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(tmp, "tests/hub-base", "hub-best", init="ema", deploy="ema"))
    run = run_timeline(config, hub=h, work_dir=tmp / "work", trainer=fake_trainer, evaluator=fake_evaluator,
                       progress=False)
    return config, run, h, tmp


def test_layout_step_tags_hold_the_deployed_models(timeline):
    config, run, h, _ = timeline
    refs = h.api.list_repo_refs(config.repo_id)
    assert sorted(t.name for t in refs.tags) == ["step-1", "step-2", "step-3"]
    commits = h.api.list_repo_commits(config.repo_id)
    tag_targets = {t.name: t.target_commit for t in refs.tags}
    # The repo's history is the timeline: one commit per step, the last one is main.
    assert [c.commit_id for c in commits][:3] == [tag_targets[f"step-{t}"] for t in (3, 2, 1)]
    files = set(h.list_files(h.resolve(f"{config.repo_id}@step-2")))
    assert {"model.safetensors", "config.json", "hf_time.json", "timeline_state.json", "README.md", "plot.png",
            "merge_config.yaml", "vocab.txt"} <= files
    for t in (1, 2, 3):
        res = h.resolve(f"{config.repo_id}@step-{t}")
        lineage = Lineage.from_dict(h.read_json(res, "hf_time.json"))
        # what was done: the EMA chain r_t = merge([θ_t, r_{t-1}]) with weights [w, 1-w], pinned inputs
        assert lineage.kind == "merge" and lineage.method.name == "linear" and [e.weight for e in lineage.experts] == [0.5, 0.5]
        assert all(e.sha for e in lineage.experts) and lineage.experts[0].repo_id == f"{config.repo_id}-experts"
        section = lineage.timeline
        assert section["step"] == t and section["node"]["kind"] == "chain" and len(section["accuracy"]) == t
        state = h.read_json(res, "timeline_state.json")
        assert len(state["steps"]) == t
    experts = h.api.list_repo_refs(f"{config.repo_id}-experts")
    assert sorted(t.name for t in experts.tags) == ["step-1", "step-2", "step-3"]
    # Expert 2 trained from the deployed model of step 1 (init = deploy = EMA), pinned by sha.
    rec = run.state.steps[1]
    assert rec.init.repo_id == config.repo_id and rec.init.sha == tag_targets["step-1"]
    assert rec.expert.pinned == f"{config.repo_id}-experts@{experts.tags[[t.name for t in experts.tags].index('step-2')].target_commit}"


def test_merge_config_reproduces_the_snapshot(timeline, tmp_path):
    """merge_config.yaml names pinned Hub refs; `hf_time.api.merge` of it gives the same weights."""
    from hf_time.api import merge
    from hf_time.config import load_merge_config

    config, _, h, _ = timeline
    folder = h.download(h.resolve(f"{config.repo_id}@step-3"), ["merge_config.yaml", "*.safetensors"])
    mc = load_merge_config(folder / "merge_config.yaml")
    assert all("@" in e.ref and len(e.ref.split("@")[1]) == 40 for e in mc.experts)
    out = merge(config=mc, out=tmp_path / "again", hub=h, progress=False).out_dir
    for k, v in load_file(folder / "model.safetensors").items():
        assert torch.equal(load_file(out / "model.safetensors")[k], v)


def test_card_model_index_parses_back(timeline):
    from huggingface_hub import ModelCard, hf_hub_download

    config, run, h, _ = timeline
    path = hf_hub_download(config.repo_id, "README.md", revision="step-3", endpoint=h.endpoint)
    card = ModelCard.load(path)
    # the Hub models the deployed merge was made from: the base and the experts repo (not the timeline itself)
    assert card.data.base_model == ["tests/hub-base", "tests/hub-best-experts"] and card.data.base_model_relation == "merge"
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    last = run.state.steps[-1].accuracy
    for task, acc in last.items():
        assert results[(task, "accuracy")] == pytest.approx(acc, abs=1e-4)
    final = run.state.final_metrics()
    assert results[("timeline tasks", "a_ka")] == pytest.approx(final["a_ka"], abs=1e-4)
    assert results[("timeline tasks", "geometric_mean")] == pytest.approx(final["geometric_mean"], abs=1e-4)
    assert card.data.eval_results[0].dataset_split == "test"
    text = card.text
    assert "| step 3 (c) |" in text and "![trajectory and accuracy matrix](plot.png)" in text
    assert "`ema`" in text and "EMA weight w" in text
    assert ("made by `linear` from the expert of step 3 (weight 0.5) and the running merge after step 2 (weight 0.5)"
            in text)
    assert "chain-2" not in text and "expert-3" not in text and "huggingface.co" not in text  # no jargon, no fixed host
    # The main branch's card loads through the Hub too (ModelCard.load by repo id).
    assert ModelCard.load(config.repo_id).data.eval_results


def test_plot_is_a_png_and_deterministic(timeline, tmp_path):
    from hf_time.timeline.card import plot_timeline

    _, run, _, _ = timeline
    a, b = plot_timeline(run.state, tmp_path / "a.png"), plot_timeline(run.state, tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.read_bytes() == b.read_bytes()


def test_cli_status_and_report(timeline, tmp_path, capsys):
    from hf_time.cli import main

    config, run, h, _ = timeline
    assert main(["timeline", "status", f"{config.repo_id}@step-2", "--hub", h.endpoint]) == 0
    out = capsys.readouterr().out
    assert "steps done: 2/3 (next: c)" in out and "init=ema deploy=ema method=linear" in out
    assert main(["timeline", "report", config.repo_id, "--hub", h.endpoint, "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "step 3 (c)" in out and "A_KA" in out and (tmp_path / "p.png").stat().st_size > 1000
    assert main(["timeline", "report", config.repo_id, "--hub", h.endpoint, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["repo_id"] == config.repo_id
    assert main(["timeline", "status", "tests/no-such-timeline", "--hub", h.endpoint]) == 2  # a problem the user can fix: exit 2, as every HfTimeError
    assert "not found" in capsys.readouterr().err


def test_cli_run_reports_config_errors_with_key_paths(tmp_path, capsys):
    from hf_time.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbase: org/b\ntasks: [movie_sentiment]\nstrategy: {init: sometimes}\n")
    assert main(["timeline", "run", str(path)]) == 2
    assert "strategy.init: must be one of base, latest, merge_all, ema" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# OPCM through the timeline, against a direct small-matrix computation of methods.md §3


def _noisy_trainer(init_dir, task, config, out_dir, *, replay=None, device=None):
    """θ^s = init + seeded Gaussian noise (a task vector with a real spectrum, unlike a constant)."""
    from hf_time.pipeline.artifact import CARRIED_FILES
    from hf_time.io import atomic_output_dir, copy_files

    g = torch.Generator().manual_seed(sum(map(ord, task.name)))
    tensors = load_file(f"{init_dir}/model.safetensors")
    out = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in sorted(tensors.items())}
    with atomic_output_dir(out_dir, overwrite=True) as tmp:
        save_file(out, tmp / "model.safetensors", metadata={"format": "pt"})
        copy_files(init_dir, tmp, CARRIED_FILES)
    return out_dir


def _opcm_by_hand(base: dict, experts: list[dict], alpha: float = 0.5) -> dict:
    """θ^(T) by the formulas of methods.md §3, with full SVDs, in float64."""
    names = [k for k, v in base.items() if v.is_floating_point()]
    b = {k: base[k].double() for k in names}
    taus = [{k: e[k].double() - b[k] for k in names} for e in experts]
    norm = lambda d: math.sqrt(sum(float((v ** 2).sum()) for v in d.values()))  # noqa: E731
    delta, lam, norms = dict(taus[0]), 1.0, [norm(taus[0])]
    for tau in taus[1:]:
        norms.append(norm(tau))
        s_upd = {}
        for k in names:
            projected = tau[k].ndim == 2 and ".layer." in k and "embed" not in k
            if projected:
                u, s, vh = torch.linalg.svd(delta[k], full_matrices=True)
                r = int(torch.nonzero(torch.cumsum(s, 0) / s.sum() > alpha)[0, 0])
                p = u.T @ tau[k] @ vh.T
                p.fill_diagonal_(0)
                p[:r, :r] = 0
                s_upd[k] = lam * delta[k] + u @ p @ vh
            else:
                s_upd[k] = lam * delta[k] + tau[k]
        lam = norm(s_upd) / (sum(norms) / len(norms))
        delta = {k: v / lam for k, v in s_upd.items()}
    return {k: b[k] + delta[k] for k in names}


def test_opcm_timeline_matches_a_direct_computation(hub, tmp_path):
    h = Hub(endpoint=hub.url)
    base_dir = save_tiny_bert(tmp_path / "base", seed=1)
    h.publish(base_dir, "tests/opcm-base", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/opcm-base", "hub-opcm", init="base",
                                                     deploy="merge_all", method="opcm", params={"alpha": 0.5}))
    run = run_timeline(config, hub=h, work_dir=tmp_path / "work", trainer=_noisy_trainer, evaluator=fake_evaluator,
                       progress=False)
    assert run.state.fold_state["method"] == "opcm" and len(run.state.fold_state["norms"]) == 3
    base = base_tensors(base_dir)
    experts = [base_tensors(h.download(h.resolve(f"{config.repo_id}-experts@step-{t}"), ["*.safetensors"])) for t in (1, 2, 3)]
    for t in (1, 2, 3):
        expected = _opcm_by_hand(base, experts[:t])
        got = base_tensors(h.download(h.resolve(f"{config.repo_id}@step-{t}"), ["*.safetensors"]))
        for k, v in expected.items():
            torch.testing.assert_close(got[k].double(), v, rtol=1e-4, atol=1e-5, msg=f"step {t} {k}")


def test_deployed_weights_are_uploaded_while_they_are_evaluated(hub, tmp_path):
    """The evaluator sees the step's weights arrive in the timeline repo's storage before it returns
    (the upload runs beside the evaluation), and the publish commits that stored object as it is."""
    import time

    from hf_time.hashing import sha256_file

    h = Hub(endpoint=hub.url)
    h.publish(save_tiny_bert(tmp_path / "base", seed=2), "tests/ahead-base", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/ahead-base", "hub-ahead", init="ema",
                                                     deploy="ema"))
    calls, seen = [], []

    def stored_object(model_dir):
        if not hub.storage.exists("models", config.repo_id):
            return None
        path = hub.storage.repo("models", config.repo_id).blobs.lfs_path(sha256_file(model_dir / "model.safetensors"))
        return path if path.is_file() else None

    def evaluator(model_dir, tasks, **kwargs):
        calls.append(model_dir)
        if len(calls) > 1:  # the first call scores the base, before any step
            deadline = time.monotonic() + 30
            while stored_object(model_dir) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            stored = stored_object(model_dir)
            seen.append((stored, stored.stat().st_ino if stored is not None else None))
        return fake_evaluator(model_dir, tasks, **kwargs)

    run_timeline(config, hub=h, work_dir=tmp_path / "work", trainer=fake_trainer, evaluator=evaluator, progress=False)
    steps = seen
    assert len(steps) == 3 and all(inode is not None for _, inode in steps)
    assert [p.stat().st_ino for p, _ in steps] == [inode for _, inode in steps]  # the publish did not send them again
    for t, (stored, _) in enumerate(steps, start=1):
        published = h.download(h.resolve(f"{config.repo_id}@step-{t}"), ["model.safetensors"]) / "model.safetensors"
        assert sha256_file(published) == stored.name


def test_a_failed_upload_ahead_leaves_the_publish_to_send_the_weights(hub, tmp_path, monkeypatch, caplog):
    from hf_time.errors import HubConnectionError

    h = Hub(endpoint=hub.url)
    h.publish(save_tiny_bert(tmp_path / "base", seed=3), "tests/ahead-fail-base", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/ahead-fail-base", "hub-ahead-fail", init="ema",
                                                     deploy="ema"))

    def down(*args, **kwargs):
        raise HubConnectionError("could not reach the Hub (uploading the weights): connection refused")

    monkeypatch.setattr(h, "preupload", down)
    with caplog.at_level("INFO", logger="hf_time.timeline.runner"):
        run = run_timeline(config, hub=h, work_dir=tmp_path / "work", trainer=fake_trainer, evaluator=fake_evaluator,
                           progress=False)
    assert run.state.done == 3 and "the publish sends them" in caplog.text
    assert "model.safetensors" in h.list_files(h.resolve(f"{config.repo_id}@step-3"))


def test_the_plotting_library_is_loaded_at_set_up_not_in_the_first_step(hub, tmp_path, monkeypatch):
    """matplotlib's import (~0.5 s) belongs to the run's set-up, not to step 1's bookkeeping."""
    from hf_time.timeline import runner

    order = []
    monkeypatch.setattr(runner, "prepare_plot", lambda: order.append("prepare"))
    plot = runner.plot_png
    monkeypatch.setattr(runner, "plot_png", lambda state: order.append("plot") or plot(state))
    h = Hub(endpoint=hub.url)
    h.publish(save_tiny_bert(tmp_path / "base", seed=3), "tests/plot-base", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/plot-base", "hub-plot", init="base",
                                                     deploy="latest"))
    run = run_timeline(config, hub=h, work_dir=tmp_path / "work", trainer=fake_trainer, evaluator=fake_evaluator,
                       progress=False)
    assert order == ["prepare", "plot", "plot", "plot"]  # once, before the first step's card
    assert "card" in run.setup.phases
