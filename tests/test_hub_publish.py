"""Publish and pull round trips on the embedded Hub with the real huggingface_hub client."""

import json
import logging

import pytest
import torch

from hf_time.api import merge
from hf_time.errors import IncompatibleExpertsError, PublishError, RepoNotFoundError, RevisionNotFoundError
from hf_time.lineage import Lineage
from hf_time.hub import Hub
from tiny import save_tiny_llama
from conftest import HUB_TOKEN


@pytest.fixture(scope="module")
def hub_models(hub, tmp_path_factory):
    """Base + 2 experts on the embedded Hub; expert 1 also has a tag v1 and a later commit on main."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    d = tmp_path_factory.mktemp("hub_models")
    base = save_tiny_llama(d / "base", 0)
    e1 = save_tiny_llama(d / "e1", 1, base=base)
    e2 = save_tiny_llama(d / "e2", 2, base=base, max_shard_size="40KB")
    e1b = save_tiny_llama(d / "e1b", 11, base=base)
    for name, folder in (("base", base), ("e1", e1), ("e2", e2)):
        api.create_repo(f"pub/{name}", exist_ok=True)
        api.upload_folder(repo_id=f"pub/{name}", folder_path=str(folder))
    api.create_tag("pub/e1", tag="v1")
    api.upload_folder(repo_id="pub/e1", folder_path=str(e1b))  # main moves on; v1 stays
    return {"base": base, "e1": e1, "e2": e2, "e1b": e1b, "api": api}


def _state(folder):
    from hf_time.io import Checkpoint

    ck = Checkpoint(folder)
    return {n: ck.get(n) for n in ck.names()}


def test_merge_by_hub_id_publish_and_pull(hub, hub_models, tmp_path):
    from huggingface_hub import ModelCard, snapshot_download

    api = hub_models["api"]
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    res = merge("pub/base", ["pub/e1@v1", "pub/e2"], "task_arithmetic", params={"lambda": 0.5},
                out=tmp_path / "m", push_to="pub/merged", tag="step-1", hub=h, progress=False)
    # lineage pins each input to the commit sha it was read at (v1, not main's newer commit)
    v1 = next(t.target_commit for t in api.list_repo_refs("pub/e1").tags if t.name == "v1")
    lineage = res.lineage
    assert lineage.experts[0].sha == v1 and lineage.experts[0].revision == "v1"
    assert lineage.base.sha == api.model_info("pub/base").sha
    # numbers: θ_0 + 0.5·(τ_1 + τ_2) with τ_1 from the v1 weights
    b, x1, x2, m = _state(hub_models["base"]), _state(hub_models["e1"]), _state(hub_models["e2"]), _state(res.out_dir)
    for n in b:
        torch.testing.assert_close(m[n], b[n] + 0.5 * ((x1[n] - b[n]) + (x2[n] - b[n])), rtol=0, atol=1e-6)
    # one commit holding weights, lineage and card; tagged
    pub = res.published
    assert pub.changed and pub.tag == "step-1"
    commits = api.list_repo_commits("pub/merged")
    assert commits[0].commit_id == pub.commit
    files = set(api.list_repo_files("pub/merged", revision="step-1"))
    assert {"model.safetensors", "config.json", "hf_time.json", "README.md", "merge_config.yaml"} <= files
    remote_lineage = json.loads(open(api.hf_hub_download("pub/merged", "hf_time.json", revision="step-1")).read())
    assert Lineage.from_dict(remote_lineage) == lineage
    # the card's YAML parses back with the real client
    card = ModelCard.load("pub/merged")
    assert card.data.base_model == ["pub/base", "pub/e1", "pub/e2"]
    assert card.data.base_model_relation == "merge"
    assert "ties" not in card.data.tags and "task_arithmetic" in card.data.tags
    assert v1[:10] in card.text and "pub/e1@" + v1 in card.text
    # pull by tag and load with transformers
    from transformers import LlamaForCausalLM

    path = snapshot_download("pub/merged", revision="step-1")
    model = LlamaForCausalLM.from_pretrained(path)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 128)


def test_republishing_identical_content_is_a_noop(hub, hub_models, tmp_path):
    api = hub_models["api"]
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    first = merge("pub/base", ["pub/e1@v1", "pub/e2"], "ties", params={"density": 0.5}, out=tmp_path / "a",
                  push_to="pub/noop", tag="v1", hub=h, progress=False)
    n_commits = len(api.list_repo_commits("pub/noop"))
    again = merge("pub/base", ["pub/e1@v1", "pub/e2"], "ties", params={"density": 0.5}, out=tmp_path / "b",
                  push_to="pub/noop", tag="v1", hub=h, progress=False)
    assert not again.published.changed and again.published.commit == first.published.commit
    assert len(api.list_repo_commits("pub/noop")) == n_commits


def test_republish_replaces_stale_shards_in_one_commit(hub, hub_models, tmp_path):
    api = hub_models["api"]
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    merge("pub/base", ["pub/e2"], "linear", out=tmp_path / "a", push_to="pub/shards", hub=h, max_shard_size="40KB", progress=False)
    assert "model.safetensors.index.json" in api.list_repo_files("pub/shards")
    n = len(api.list_repo_commits("pub/shards"))
    merge("pub/base", ["pub/e2"], "linear", out=tmp_path / "b", push_to="pub/shards", hub=h, progress=False)
    files = api.list_repo_files("pub/shards")
    assert "model.safetensors" in files and not any(f.startswith("model-0000") for f in files)
    assert len(api.list_repo_commits("pub/shards")) == n + 1


def test_tag_clash_is_refused_and_branch_untouched(hub, hub_models, tmp_path):
    api = hub_models["api"]
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    merge("pub/base", ["pub/e2"], "linear", out=tmp_path / "a", push_to="pub/tagged", tag="step-1", hub=h, progress=False)
    head = api.model_info("pub/tagged").sha
    with pytest.raises(PublishError, match="tag 'step-1' already exists"):
        merge("pub/base", ["pub/e1"], "linear", out=tmp_path / "b", push_to="pub/tagged", tag="step-1", hub=h, progress=False)
    assert api.model_info("pub/tagged").sha == head


def test_incompatible_expert_fails_before_downloading_weights(hub, hub_models, tmp_path):
    import os
    from pathlib import Path

    api = hub_models["api"]
    other = save_tiny_llama(tmp_path / "other", 5, vocab_size=256)
    api.create_repo("pub/other-vocab", exist_ok=True)
    api.upload_folder(repo_id="pub/other-vocab", folder_path=str(other))
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    with pytest.raises(IncompatibleExpertsError, match=r"\[256, 32\].*\[128, 32\]"):
        merge("pub/base", ["pub/e2", "pub/other-vocab"], "ties", out=tmp_path / "o", hub=h, progress=False)
    cache = Path(os.environ["HF_HOME"]) / "hub" / "models--pub--other-vocab"
    assert not any(p.suffix == ".safetensors" for p in cache.rglob("*")), "weights were downloaded"
    assert not (tmp_path / "o").exists()


def test_missing_repo_and_revision_are_named(hub, hub_models, tmp_path):
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    with pytest.raises(RepoNotFoundError, match="'pub/nope' not found"):
        merge("pub/base", ["pub/nope"], "linear", out=tmp_path / "o", hub=h)
    with pytest.raises(RevisionNotFoundError, match="revision 'v9' not found in pub/e1"):
        merge("pub/base", ["pub/e1@v9"], "linear", out=tmp_path / "o", hub=h)
    assert not (tmp_path / "o").exists()


def test_cli_push_never_prints_token(hub, hub_models, tmp_path, capsys, caplog):
    from hf_time.cli import main

    caplog.set_level(logging.DEBUG)
    code = main(["-v", "merge", "--base", "pub/base", "--expert", "pub/e2", "--method", "linear", "--out",
                 str(tmp_path / "o"), "--push-to", "pub/cli", "--tag", "t1", "--endpoint", hub.url, "--quiet"])
    out = capsys.readouterr()
    assert code == 0 and "published -> pub/cli@" in out.out
    assert HUB_TOKEN not in out.out + out.err + caplog.text


def test_preuploaded_weights_stay_invisible_and_the_publish_does_not_send_them_again(hub, hub_models, tmp_path):
    """Hub.preupload puts the LFS objects in the repo's storage without a commit; the publish of the same
    folder then commits them as they are (the stored object is not rewritten) and sends only the rest."""
    from hf_time.hashing import sha256_file

    api = hub_models["api"]
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    folder = hub_models["e2"]  # two weight shards and their index
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert h.preupload(folder, "pub/ahead") == shards
    repo = hub.storage.repo("models", "pub/ahead")
    stored = {name: repo.blobs.lfs_path(sha256_file(folder / name)) for name in shards}
    assert all(p.is_file() for p in stored.values())
    assert set(api.list_repo_files("pub/ahead")) <= {".gitattributes"}  # nothing visible yet
    inodes = {name: p.stat().st_ino for name, p in stored.items()}
    pub = h.publish(folder, "pub/ahead", commit_message="publish")
    assert set(api.list_repo_files("pub/ahead", revision=pub.commit)) >= {*shards, "model.safetensors.index.json"}
    assert {name: p.stat().st_ino for name, p in stored.items()} == inodes  # not uploaded a second time
    assert h.preupload(tmp_path, "pub/ahead") == []  # no weights: nothing to do, no network call needed


def test_a_preupload_to_a_server_that_is_down_is_one_typed_error(tmp_path, hub_models):
    from hf_time.errors import HubConnectionError

    h = Hub(endpoint="http://127.0.0.1:9", token=HUB_TOKEN)  # the discard port: nothing listens
    with pytest.raises(HubConnectionError):
        h.preupload(hub_models["e1"], "pub/down")


def test_the_publish_hands_known_digests_to_the_upload_instead_of_hashing_again(hub, hub_models, tmp_path,
                                                                                 monkeypatch):
    """Weights whose sha256 this process already computed (the lineage hashes them) are not read and
    hashed a second time by huggingface_hub before the upload; the Hub still stores the right objects."""
    import shutil

    from huggingface_hub import lfs

    from hf_time.hashing import sha256_file

    folder = tmp_path / "snapshot"
    shutil.copytree(hub_models["e2"], folder)  # fresh inodes: nothing of this folder is known yet
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    digests = {name: sha256_file(folder / name) for name in shards[:1]}  # one shard known, the others not
    hashed = []
    real = lfs.sha_fileobj

    def counting(fileobj, *args, **kwargs):
        hashed.append(fileobj.name)
        return real(fileobj, *args, **kwargs)

    monkeypatch.setattr(lfs, "sha_fileobj", counting)
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    pub = h.publish(folder, "pub/known-digests", commit_message="publish")
    assert sorted(p for p in hashed if p.endswith(".safetensors")) == [str(folder / n) for n in shards[1:]]
    repo = hub.storage.repo("models", "pub/known-digests")
    for name in shards:  # the Hub verified and stored every object under its true digest
        assert repo.blobs.lfs_path(sha256_file(folder / name)).is_file()
    remote = {f.path: f.lfs.sha256 for f in hub_models["api"].list_repo_tree("pub/known-digests", revision=pub.commit)
              if getattr(f, "lfs", None) is not None}
    assert remote[shards[0]] == digests[shards[0]]
