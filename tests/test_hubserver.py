"""The embedded Hub against the REAL huggingface_hub client: repos, commits, refs, listings, auth.

Every test works in its own repository (``repo_name``) on the session server (``hub``, conftest.py).
"""

from __future__ import annotations

import logging
import os
import threading

import pytest
from conftest import HUB_TOKEN
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hf_time.hubserver import HubServer

LFS_BIG = 10 * 1024 * 1024 + 17  # just over the Hub's 10 MB LFS threshold


def _safetensors_like() -> bytes:
    """Binary bytes with a .safetensors name: LFS by extension and by content."""
    return b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{}}' + b"\x00" * 64


def test_create_repo_returns_url_and_409_is_exist_ok(api, repo_name):
    url = api.create_repo(repo_name)
    assert url.repo_id == repo_name and url.endswith(f"/{repo_name}")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(repo_name)
    assert err.value.response.status_code == 409
    assert api.create_repo(repo_name, exist_ok=True).repo_id == repo_name
    assert api.create_repo(repo_name, repo_type="dataset").repo_type == "dataset"  # separate namespace
    files = api.list_repo_files(repo_name)
    assert files == [".gitattributes"]  # the initial commit, as on the Hub


def test_commit_regular_lfs_and_delete(api, repo_name):
    api.create_repo(repo_name)
    big = b"0123456789abcdef" * (LFS_BIG // 16) + b"x" * (LFS_BIG % 16)
    info = api.create_commit(repo_name, commit_message="add", operations=[
        CommitOperationAdd("config.json", b'{"a": 1}'),
        CommitOperationAdd("weights/model.safetensors", _safetensors_like()),
        CommitOperationAdd("big.txt", big),
        CommitOperationAdd("empty.txt", b""),
    ])
    assert len(info.oid) == 40
    entries = {e.path: e for e in api.list_repo_tree(repo_name, recursive=True)}
    assert entries["config.json"].lfs is None
    assert entries["empty.txt"].lfs is None and entries["empty.txt"].size == 0
    assert entries["weights/model.safetensors"].lfs is not None
    assert entries["big.txt"].lfs.size == LFS_BIG and entries["big.txt"].size == LFS_BIG
    with open(api.hf_hub_download(repo_name, "big.txt"), "rb") as f:
        assert f.read() == big

    api.create_commit(repo_name, commit_message="delete", operations=[
        CommitOperationDelete("big.txt"), CommitOperationDelete("weights/", is_folder=True),
    ])
    assert sorted(api.list_repo_files(repo_name)) == [".gitattributes", "config.json", "empty.txt"]
    with pytest.raises(RemoteEntryNotFoundError, match="doesn't exist"):
        api.create_commit(repo_name, commit_message="x", operations=[CommitOperationDelete("missing.txt")])


def test_reuploading_identical_content_makes_no_commit(api, repo_name, tmp_path):
    api.create_repo(repo_name)
    (tmp_path / "a.txt").write_text("same")
    (tmp_path / "w.safetensors").write_bytes(_safetensors_like())
    first = api.upload_folder(folder_path=tmp_path, repo_id=repo_name)
    count = len(api.list_repo_commits(repo_name))
    again = api.upload_folder(folder_path=tmp_path, repo_id=repo_name)
    single = api.upload_file(path_or_fileobj=b"same", path_in_repo="a.txt", repo_id=repo_name)
    assert again.oid == first.oid == single.oid
    assert len(api.list_repo_commits(repo_name)) == count


def test_parent_commit_must_be_the_head(api, repo_name):
    api.create_repo(repo_name)
    base = api.upload_file(path_or_fileobj=b"1", path_in_repo="f.txt", repo_id=repo_name).oid
    api.upload_file(path_or_fileobj=b"2", path_in_repo="f.txt", repo_id=repo_name, parent_commit=base[:7])
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"3", path_in_repo="f.txt", repo_id=repo_name, parent_commit=base)
    assert err.value.response.status_code == 412
    # A pull request may start from an older commit.
    pr = api.upload_file(path_or_fileobj=b"3", path_in_repo="f.txt", repo_id=repo_name,
                         parent_commit=base, create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1
    with open(api.hf_hub_download(repo_name, "f.txt", revision="refs/pr/1"), "rb") as f:
        assert f.read() == b"3"
    with open(api.hf_hub_download(repo_name, "f.txt"), "rb") as f:
        assert f.read() == b"2"


def test_branches_tags_and_refs(api, repo_name):
    api.create_repo(repo_name)
    c1 = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=repo_name).oid
    api.create_branch(repo_name, branch="release/v1")
    api.create_branch(repo_name, branch="release/v1", exist_ok=True)
    with pytest.raises(HfHubHTTPError):
        api.create_branch(repo_name, branch="release/v1")
    api.create_tag(repo_name, tag="v1.0", tag_message="first")
    c2 = api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id=repo_name,
                         revision="release/v1").oid
    api.create_tag(repo_name, tag="v1.1", revision="release/v1")
    with pytest.raises(HfHubHTTPError):
        api.create_tag(repo_name, tag="v1.1")
    api.create_tag(repo_name, tag="v1.1", exist_ok=True)

    refs = api.list_repo_refs(repo_name, include_pull_requests=True)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": c1, "release/v1": c2}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": c1, "v1.1": c2}
    assert refs.converts == [] and refs.pull_requests == []
    assert {b.ref for b in refs.branches} == {"refs/heads/main", "refs/heads/release/v1"}

    api.delete_tag(repo_name, tag="v1.0")
    api.delete_branch(repo_name, branch="release/v1")
    refs = api.list_repo_refs(repo_name)
    assert [t.name for t in refs.tags] == ["v1.1"] and [b.name for b in refs.branches] == ["main"]
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag(repo_name, tag="v1.0")
    assert api.revision_exists(repo_name, "v1.1")  # the tag outlives the branch it came from


def test_list_repo_commits_newest_first(api, repo_name):
    api.create_repo(repo_name)
    oids = [api.upload_file(path_or_fileobj=str(i).encode(), path_in_repo="n.txt", repo_id=repo_name,
                            commit_message=f"step {i}", commit_description=f"body {i}").oid for i in range(3)]
    commits = api.list_repo_commits(repo_name)
    assert [c.commit_id for c in commits[:3]] == oids[::-1]
    assert [c.title for c in commits] == ["step 2", "step 1", "step 0", "initial commit"]
    assert commits[0].message == "body 2" and commits[0].authors
    assert commits[0].created_at >= commits[-1].created_at
    formatted = api.list_repo_commits(repo_name, revision=oids[1], formatted=True)
    assert [c.title for c in formatted] == ["step 1", "step 0", "initial commit"]
    assert formatted[0].formatted_title == "step 1"


def test_tree_and_paths_info(api, repo_name):
    api.create_repo(repo_name)
    api.create_commit(repo_name, commit_message="files", operations=[
        CommitOperationAdd("a.txt", b"a"),
        CommitOperationAdd("d/b.txt", b"b"),
        CommitOperationAdd("d/e/c.safetensors", _safetensors_like()),
    ])
    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(repo_name)}
    assert top == {("RepoFile", ".gitattributes"), ("RepoFile", "a.txt"), ("RepoFolder", "d")}
    scoped = [e.path for e in api.list_repo_tree(repo_name, path_in_repo="d", recursive=True)]
    assert scoped == ["d/b.txt", "d/e", "d/e/c.safetensors"]
    expanded = list(api.list_repo_tree(repo_name, path_in_repo="d", expand=True))
    assert all(e.last_commit is not None and e.last_commit.title == "files" for e in expanded)
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(repo_name, path_in_repo="nope"))

    infos = {i.path: i for i in api.get_paths_info(repo_name, ["a.txt", "d", "d/e/c.safetensors", "missing"])}
    assert set(infos) == {"a.txt", "d", "d/e/c.safetensors"}
    assert infos["a.txt"].size == 1 and infos["a.txt"].blob_id
    assert infos["d/e/c.safetensors"].lfs.sha256 and type(infos["d"]).__name__ == "RepoFolder"


def test_exists_helpers_and_repo_info(api, repo_name):
    api.create_repo(repo_name)
    oid = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_name).oid
    api.create_tag(repo_name, tag="t")
    assert api.repo_exists(repo_name) and not api.repo_exists(repo_name + "-nope")
    assert api.file_exists(repo_name, "x.txt") and not api.file_exists(repo_name, "y.txt")
    for rev in ("main", "t", oid, oid[:7]):
        assert api.revision_exists(repo_name, rev), rev
    assert not api.revision_exists(repo_name, "nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_name, revision="nope")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_name + "-nope")
    info = api.model_info(repo_name, revision="t", files_metadata=True)
    assert info.id == repo_name and info.sha == oid and info.last_modified is not None
    assert {s.rfilename: s.size for s in info.siblings} == {".gitattributes": info.siblings[0].size, "x.txt": 1}


def test_writes_need_a_token(hub, api, repo_name):
    anon = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anon.create_repo(repo_name)
    assert err.value.response.status_code == 401
    api.create_repo(repo_name)
    with pytest.raises(HfHubHTTPError) as err:
        anon.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_name)
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError):
        anon.create_tag(repo_name, tag="t")
    assert anon.list_repo_files(repo_name) == [".gitattributes"]  # reads are anonymous


def test_fixed_token_and_private_repos(tmp_path):
    with HubServer(tmp_path / "hub", token="s3cret") as server:
        good = HfApi(endpoint=server.url, token="s3cret")
        bad = HfApi(endpoint=server.url, token="wrong")
        anon = HfApi(endpoint=server.url, token=False)
        with pytest.raises(HfHubHTTPError) as err:
            bad.create_repo("me/m")
        assert err.value.response.status_code == 401
        good.create_repo("me/m", private=True)
        assert good.model_info("me/m").private
        with pytest.raises(RepositoryNotFoundError):
            anon.model_info("me/m")
        assert good.whoami()["name"]


def test_concurrent_commits_are_serialised(api, repo_name):
    api.create_repo(repo_name)
    errors = []

    def push(i: int) -> None:
        try:
            api.upload_file(path_or_fileobj=f"{i}".encode(), path_in_repo=f"f{i}.txt", repo_id=repo_name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(api.list_repo_files(repo_name)) == [".gitattributes"] + [f"f{i}.txt" for i in range(6)]
    assert len(api.list_repo_commits(repo_name)) == 7  # linear history, nothing lost


def test_data_persists_across_restarts(tmp_path):
    root = tmp_path / "hub"
    with HubServer(root, token="t") as first:
        api = HfApi(endpoint=first.url, token="t")
        api.create_repo("me/persist")
        oid = api.upload_file(path_or_fileobj=_safetensors_like(), path_in_repo="m.safetensors",
                              repo_id="me/persist").oid
        api.create_tag("me/persist", tag="v1")
    with HubServer(root, token="t") as second:
        api = HfApi(endpoint=second.url, token="t")
        assert api.model_info("me/persist", revision="v1").sha == oid
        path = api.hf_hub_download("me/persist", "m.safetensors", revision="v1", cache_dir=tmp_path / "cache")
        with open(path, "rb") as f:
            assert f.read() == _safetensors_like()


def test_tokens_never_reach_the_logs(api, repo_name, caplog):
    caplog.set_level(logging.DEBUG, logger="hf_time.hubserver")
    api.create_repo(repo_name)
    api.upload_file(path_or_fileobj=_safetensors_like(), path_in_repo="w.safetensors", repo_id=repo_name)
    api.hf_hub_download(repo_name, "w.safetensors")
    records = [r for r in caplog.records if r.name.startswith("hf_time.hubserver")]
    assert any("/commit/main" in r.getMessage() for r in records)  # request lines are logged...
    text = "\n".join(r.getMessage() for r in records)
    assert HUB_TOKEN not in text  # ...but never the token
    assert "/lfs-upload/***" in text  # nor the one-time upload ticket


def test_gitignore_and_delete_repo(api, repo_name, tmp_path):
    api.create_repo(repo_name)
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "keep.txt").write_text("k")
    (tmp_path / "run.log").write_text("noise")
    api.upload_folder(folder_path=tmp_path, repo_id=repo_name)
    assert sorted(api.list_repo_files(repo_name)) == [".gitattributes", ".gitignore", "keep.txt"]
    api.delete_repo(repo_name)
    assert not api.repo_exists(repo_name)
    api.delete_repo(repo_name, missing_ok=True)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo_name)


def test_lfs_upload_href_authorises_itself(hub, api, repo_name):
    import hashlib

    from huggingface_hub import get_session

    api.create_repo(repo_name)
    data = b"\x00lfs payload" * 1000
    oid = hashlib.sha256(data).hexdigest()
    session = get_session()
    batch_url = f"{hub.url}/{repo_name}.git/info/lfs/objects/batch"
    lfs_headers = {"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"}
    payload = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    assert session.post(batch_url, json=payload, headers=lfs_headers).status_code == 401  # batch needs a token
    auth = {**lfs_headers, "authorization": f"Bearer {HUB_TOKEN}"}
    obj = session.post(batch_url, json=payload, headers=auth).json()["objects"][0]
    href = obj["actions"]["upload"]["href"]
    assert session.put(f"{hub.url}/lfs-upload/not-a-ticket", content=data).status_code == 404
    assert session.put(href, content=b"x" * len(data)).status_code == 400  # wrong bytes are refused
    # No Authorization header, and a chunked body (unknown length), as a streaming client sends it.
    assert session.put(href, content=iter([data[:5000], data[5000:]])).status_code == 200
    assert session.put(href, content=data).status_code == 404  # one-time
    verify = obj["actions"]["verify"]["href"]
    assert session.post(verify, json={"oid": oid, "size": len(data)}, headers=auth).status_code == 200
    again = session.post(batch_url, json=payload, headers=auth).json()["objects"][0]
    assert "actions" not in again  # already stored: the client skips the upload


def test_serve_forever_in_foreground_stops_cleanly(tmp_path):
    server = HubServer(tmp_path / "hub", port=0, token="t")
    runner = threading.Thread(target=server.serve_forever)
    runner.start()
    try:
        assert HfApi(endpoint=server.url, token="t").create_repo("me/fg").repo_id == "me/fg"
    finally:
        server.stop()
        runner.join(timeout=5)
    assert not runner.is_alive()
    with pytest.raises(RuntimeError):
        server.start()  # a stopped server cannot be restarted; a new one on the same root can


def test_use_embedded_hub_points_a_fresh_process_at_it(tmp_path):
    import subprocess
    import sys

    code = (
        "from hf_time.hubserver import use_embedded_hub\n"
        f"server = use_embedded_hub({str(tmp_path / 'hub')!r}, hf_home={str(tmp_path / 'home')!r})\n"
        "from huggingface_hub import HfApi, constants\n"
        "assert constants.ENDPOINT == server.url and constants.HF_HUB_DISABLE_XET\n"
        "HfApi().create_repo('local/model')\n"
        "HfApi().upload_file(path_or_fileobj=b'x' * 11, path_in_repo='w.bin', repo_id='local/model')\n"
        "print(sorted(HfApi().list_repo_files('local/model')))\n"
        "server.stop()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'w.bin'" in out.stdout
    assert (tmp_path / "hub").is_dir()


def test_hub_endpoint_is_the_named_hub_or_an_embedded_one(tmp_path):
    """What the recipes start with: --endpoint given, HF_ENDPOINT is set to it and nothing is started;
    else an embedded Hub under --root that the client (imported afterwards) talks to, without its own bars."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from hf_time.hubserver import hub_endpoint\n"
        "named = hub_endpoint('https://hub.example', 'unused', hf_home='unused')\n"
        "assert named == os.environ['HF_ENDPOINT'] == 'https://hub.example' and not os.path.exists('unused')\n"
        "assert 'HF_HUB_DISABLE_PROGRESS_BARS' not in os.environ and 'huggingface_hub' not in sys.modules\n"
        f"url = hub_endpoint(None, {str(tmp_path / 'hub')!r}, hf_home={str(tmp_path / 'home')!r})\n"
        "from huggingface_hub import HfApi, constants\n"
        "assert constants.ENDPOINT == url.rstrip('/') and constants.HF_HUB_DISABLE_PROGRESS_BARS\n"
        f"assert os.environ['HF_HOME'] == {str(tmp_path / 'home')!r}\n"
        "HfApi().create_repo('local/model')\n"
        "print(HfApi().model_info('local/model').id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "local/model"
    assert (tmp_path / "hub" / "repos" / "models" / "local").is_dir()  # the repo, under --root


def test_use_embedded_hub_refuses_after_the_client_was_imported(tmp_path):
    import huggingface_hub  # noqa: F401

    from hf_time.hubserver import use_embedded_hub

    with pytest.raises(RuntimeError, match="before huggingface_hub"):
        use_embedded_hub(tmp_path)
