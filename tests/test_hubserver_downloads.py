"""Downloads from the embedded Hub with the real client: /resolve, HEAD headers, Range, snapshots."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import CommitOperationAdd, get_session, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError
from safetensors.torch import save as st_save


@pytest.fixture
def versioned_repo(api, repo_name):
    """A repo with two commits on main, a tag on the first and a branch on the second."""
    api.create_repo(repo_name)
    first = api.create_commit(repo_name, commit_message="v1", operations=[
        CommitOperationAdd("config.json", b'{"v": 1}'),
        CommitOperationAdd("sub/notes.md", b"# notes"),
        CommitOperationAdd("w.safetensors", st_save({"x": torch.zeros(4)})),
    ]).oid
    api.create_tag(repo_name, tag="v1")
    second = api.upload_file(path_or_fileobj=b'{"v": 2}', path_in_repo="config.json", repo_id=repo_name).oid
    api.create_branch(repo_name, branch="dev/next")
    return repo_name, first, second


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_hf_hub_download_by_branch_tag_and_sha(api, versioned_repo):
    repo, first, second = versioned_repo
    assert json.loads(_read(hf_hub_download(repo, "config.json"))) == {"v": 2}
    assert json.loads(_read(hf_hub_download(repo, "config.json", revision="v1"))) == {"v": 1}
    assert json.loads(_read(hf_hub_download(repo, "config.json", revision=first))) == {"v": 1}
    assert json.loads(_read(hf_hub_download(repo, "config.json", revision=second[:10]))) == {"v": 2}
    assert json.loads(_read(hf_hub_download(repo, "config.json", revision="dev/next"))) == {"v": 2}
    assert _read(hf_hub_download(repo, "sub/notes.md", revision="v1")) == b"# notes"
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo, "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "config.json", revision="no-such-branch")


def test_snapshot_download_with_patterns_and_local_dir(versioned_repo, tmp_path):
    repo, first, _ = versioned_repo
    full = snapshot_download(repo, revision="v1")
    assert json.loads(_read(f"{full}/config.json")) == {"v": 1} and full.endswith(first)
    target = tmp_path / "out"
    got = snapshot_download(repo, revision=first, allow_patterns=["*.json", "sub/*"], local_dir=target)
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()
                   and ".cache" not in p.parts)
    assert str(got) == str(target) and files == ["config.json", "sub/notes.md"]
    latest = snapshot_download(repo, revision="dev/next", allow_patterns="*.json")
    assert json.loads(_read(f"{latest}/config.json")) == {"v": 2}


def test_head_headers_and_range_requests(hub, versioned_repo):
    repo, first, second = versioned_repo
    session = get_session()
    head = session.head(f"{hub.url}/{repo}/resolve/main/w.safetensors")
    size = int(head.headers["X-Linked-Size"])
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == second
    assert int(head.headers["Content-Length"]) == size and len(head.headers["X-Linked-Etag"].strip('"')) == 64
    url = f"{hub.url}/{repo}/resolve/{first}/config.json"
    whole = session.get(url)
    assert whole.content == b'{"v": 1}' and whole.headers["ETag"].strip('"') and "X-Linked-Etag" not in whole.headers
    part = session.get(url, headers={"Range": "bytes=1-3"})
    assert part.status_code == 206 and part.content == b'"v"'
    assert part.headers["Content-Range"] == "bytes 1-3/8"
    assert session.get(url, headers={"Range": "bytes=6-"}).content == b"1}"
    assert session.get(url, headers={"Range": "bytes=-2"}).content == b"1}"
    assert session.get(url, headers={"Range": "bytes=0-100000"}).content == b'{"v": 1}'
    assert session.get(url, headers={"Range": "bytes=99-"}).status_code == 416
    missing = session.head(f"{hub.url}/{repo}/resolve/main/nope.txt")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == second
    # An unencoded refs/pr/N style revision (slashes) still resolves.
    assert session.get(f"{hub.url}/{repo}/resolve/dev/next/config.json").content == b'{"v": 2}'


def test_safetensors_metadata_single_and_sharded(api, repo_name):
    single, sharded = repo_name + "-single", repo_name + "-sharded"
    api.create_repo(single)
    api.upload_file(path_or_fileobj=st_save({"a": torch.ones(2, 3), "b": torch.zeros(5, dtype=torch.int64)},
                                            metadata={"format": "pt"}),
                    path_in_repo="model.safetensors", repo_id=single)
    meta = api.get_safetensors_metadata(single)
    assert not meta.sharded and meta.weight_map == {"a": "model.safetensors", "b": "model.safetensors"}
    tensors = meta.files_metadata["model.safetensors"].tensors
    assert tensors["a"].shape == [2, 3] and tensors["b"].dtype == "I64"

    api.create_repo(sharded)
    shards = {"model-00001-of-00002.safetensors": {"l0.w": torch.ones(4, 4)},
              "model-00002-of-00002.safetensors": {"l1.w": torch.ones(4, 2), "l1.b": torch.ones(2)}}
    index = {"metadata": {"total_size": 4 * (16 + 8 + 2)},
             "weight_map": {k: name for name, ts in shards.items() for k in ts}}
    ops = [CommitOperationAdd(name, st_save(ts)) for name, ts in shards.items()]
    ops.append(CommitOperationAdd("model.safetensors.index.json", json.dumps(index).encode()))
    api.create_commit(sharded, operations=ops, commit_message="sharded")
    meta = api.get_safetensors_metadata(sharded)
    assert meta.sharded and meta.metadata == index["metadata"] and set(meta.files_metadata) == set(shards)
    assert meta.files_metadata["model-00002-of-00002.safetensors"].tensors["l1.w"].shape == [4, 2]
    assert meta.parameter_count == {"F32": 16 + 8 + 2}
