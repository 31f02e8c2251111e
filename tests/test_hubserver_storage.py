"""The embedded Hub's storage and content rules, without HTTP."""

from __future__ import annotations

import hashlib
import json

import pytest

from hf_time.hubserver import HubStorage
from hf_time.hubserver import commits as C
from hf_time.hubserver.blobs import git_blob_sha1
from hf_time.hubserver.errors import (
    AlreadyExists,
    BadRequest,
    EntryNotFound,
    RepoNotFound,
    RevisionNotFound,
    StaleParent,
)
from hf_time.hubserver.rules import DEFAULT_GITATTRIBUTES, is_ignored, lfs_patterns, upload_mode


@pytest.fixture
def repo(tmp_path):
    return HubStorage(tmp_path).create_repo("models", "ns/repo")


def test_git_blob_sha1_matches_git():
    # `printf hello | git hash-object --stdin`
    assert git_blob_sha1(b"hello") == "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"


def test_commit_records_are_content_addressed_and_resolvable(repo):
    result = repo.commit("main", [C.AddFile("a.txt", b"a")], "add a")
    raw = (repo.path / "commits" / f"{result.oid}.json").read_bytes()
    record = json.loads(raw)
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha1(canonical).hexdigest() == result.oid
    assert record["date"].endswith("Z") and record["parent"] == repo.history(result.oid)[1][0]
    repo.create_ref("tags", "v1", "main")
    for rev in ("main", "refs/heads/main", "v1", "refs/tags/v1", result.oid, result.oid[:8]):
        assert repo.resolve(rev) == result.oid, rev
    with pytest.raises(RevisionNotFound):
        repo.resolve("nope")


def test_failed_commit_leaves_the_branch_untouched(repo):
    head = repo.resolve("main")
    with pytest.raises(EntryNotFound):
        repo.commit("main", [C.AddFile("a.txt", b"a"), C.DeleteFile("missing.txt")], "bad")
    with pytest.raises(BadRequest):
        repo.commit("main", [C.AddFile("../escape", b"x")], "bad")
    with pytest.raises(BadRequest):
        repo.commit("main", [C.AddLfsFile("w.bin", "0" * 64, 3)], "never uploaded")
    with pytest.raises(RevisionNotFound):
        repo.commit("nope", [C.AddFile("a.txt", b"a")], "no branch")
    with pytest.raises(StaleParent):
        repo.commit("main", [C.AddFile("a.txt", b"a")], "stale", parent="f" * 40)
    assert repo.resolve("main") == head and len(repo.history("main")) == 1


def test_no_op_commit_and_file_folder_clash(repo):
    first = repo.commit("main", [C.AddFile("d/a.txt", b"a")], "add")
    again = repo.commit("main", [C.AddFile("d/a.txt", b"a")], "same")
    assert not again.created and again.oid == first.oid
    with pytest.raises(BadRequest):
        repo.commit("main", [C.AddFile("d", b"file over a folder")], "clash")


def test_repos_persist_and_are_unique(tmp_path):
    storage = HubStorage(tmp_path)
    storage.create_repo("datasets", "ns/data")
    with pytest.raises(AlreadyExists):
        storage.create_repo("datasets", "ns/data")
    reopened = HubStorage(tmp_path)
    assert reopened.exists("datasets", "ns/data") and not reopened.exists("models", "ns/data")
    reopened.delete_repo("datasets", "ns/data")
    with pytest.raises(RepoNotFound):
        storage.repo("datasets", "ns/data")
    with pytest.raises(RepoNotFound):
        storage.repo("models", "no-namespace")


def test_upload_mode_and_gitignore_rules():
    patterns = lfs_patterns(DEFAULT_GITATTRIBUTES)
    assert upload_mode("model.safetensors", 10, b"{}", patterns) == "lfs"
    assert upload_mode("data/train.parquet", 10, b"PAR1", patterns) == "lfs"
    assert upload_mode("config.json", 10, b"{}", patterns) == "regular"
    assert upload_mode("blob.txt", 10, b"a\0b", patterns) == "lfs"
    assert upload_mode("huge.txt", 10 * 1024 * 1024, b"aaa", patterns) == "lfs"
    assert upload_mode("empty.bin", 0, b"", patterns) == "regular"
    assert is_ignored("logs/run.log", "*.log") and not is_ignored("run.txt", "*.log")
    assert is_ignored("cache/x/y.txt", "cache/") and not is_ignored("keep.log", "*.log\n!keep.log")
