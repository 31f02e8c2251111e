import pytest

from hf_time.errors import InvalidReferenceError, RepoNotFoundError
from hf_time.refs import ModelRef, ResolvedRef, parse_ref


def test_hub_ref_with_and_without_revision():
    assert parse_ref("org/name") == ModelRef(repo_id="org/name")
    assert parse_ref("org/name@v1.0") == ModelRef(repo_id="org/name", revision="v1.0")
    assert parse_ref("gpt2@refs/pr/1") == ModelRef(repo_id="gpt2", revision="refs/pr/1")
    sha = "a" * 40
    assert parse_ref(f"org/m@{sha}").is_pinned
    assert not parse_ref("org/m@main").is_pinned


def test_existing_folder_is_local(tmp_path):
    ref = parse_ref(str(tmp_path))
    assert ref.is_local and ref.path == tmp_path.resolve() and ref.is_pinned


@pytest.mark.parametrize("bad", ["", "org/", "org/name@", "a/b/c", "org/..", "org/name.git", "-bad/name"])
def test_invalid_refs_are_rejected(bad):
    with pytest.raises(InvalidReferenceError):
        parse_ref(bad)


def test_missing_path_names_it():
    with pytest.raises(RepoNotFoundError, match="does-not-exist"):
        parse_ref("./does-not-exist")


def test_resolved_ref_pins_sha():
    r = ResolvedRef(parse_ref("org/m@main"), "b" * 40)
    assert r.pinned == "org/m@" + "b" * 40
