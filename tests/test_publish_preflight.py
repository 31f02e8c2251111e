"""Publishing problems surface before any download or merge (issue 10.1): the repo id, the token, the tag."""

from __future__ import annotations

import pytest

from conftest import HUB_TOKEN
from hf_time.api import merge
from hf_time.cli import main
from hf_time.errors import InvalidReferenceError, PublishError
from hf_time.hub import Hub
from tiny import save_tiny_llama


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    d = tmp_path_factory.mktemp("preflight")
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    h.publish(save_tiny_llama(d / "base", 0), "preflight/base", commit_message="base")
    h.publish(save_tiny_llama(d / "e1", 1, base=d / "base"), "preflight/e1", commit_message="e1")
    h.publish(save_tiny_llama(d / "e2", 2, base=d / "base"), "preflight/e2", commit_message="e2")
    return h


@pytest.fixture
def no_downloads(monkeypatch):
    """Fail the test if anything is downloaded (the checks must come first)."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("downloaded before the publish checks")

    monkeypatch.setattr(Hub, "download", refuse)


def test_no_token_is_refused_before_any_download(hub, published, tmp_path, no_downloads):
    anonymous = Hub(endpoint=hub.url, token=False)
    with pytest.raises(PublishError, match="needs a token: set HF_TOKEN"):
        merge("preflight/base", ["preflight/e1"], "ties", out=tmp_path / "m", push_to="preflight/out", hub=anonymous)


def test_a_refused_token_is_refused_before_any_download(hub, published, tmp_path, no_downloads):
    wrong = Hub(endpoint=hub.url, token="not-the-token")
    with pytest.raises(PublishError, match="token was refused"):
        merge("preflight/base", ["preflight/e1"], "ties", out=tmp_path / "m", push_to="preflight/out", hub=wrong)


@pytest.mark.parametrize("repo", ["bad//name", "name-without-namespace", "org/name@v1", "org/na me"])
def test_a_bad_repo_id_is_refused_before_any_download(hub, published, tmp_path, capsys, no_downloads, repo):
    with pytest.raises(InvalidReferenceError):
        merge("preflight/base", ["preflight/e1"], "ties", out=tmp_path / "m", push_to=repo, hub=published)
    code = main(["merge", "--base", "preflight/base", "--expert", "preflight/e1", "--method", "ties", "--out",
                 str(tmp_path / "m"), "--push-to", repo, "--endpoint", hub.url])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1


def test_a_tag_holding_another_merge_is_refused_before_any_download(hub, published, tmp_path, monkeypatch):
    merge("preflight/base", ["preflight/e1"], "ties", out=tmp_path / "v1", push_to="preflight/tagged", tag="v1",
          hub=published, progress=False)
    again = merge("preflight/base", ["preflight/e1"], "ties", out=tmp_path / "again", push_to="preflight/tagged", tag="v1",
                  hub=published, progress=False)
    assert not again.published.changed  # the same merge: a re-publish is fine
    monkeypatch.setattr(Hub, "download", lambda *a, **k: pytest.fail("downloaded before the tag check"))
    with pytest.raises(PublishError, match="tag 'v1' already exists in preflight/tagged .* with another merge"):
        merge("preflight/base", ["preflight/e2"], "ties", out=tmp_path / "other", push_to="preflight/tagged", tag="v1",
              hub=published, progress=False)
    assert not (tmp_path / "other").exists()


def test_an_existing_output_folder_is_exit_code_2(published, tmp_path, capsys):
    (tmp_path / "m").mkdir()
    code = main(["merge", "--base", "preflight/base", "--expert", "preflight/e1", "--method", "ties", "--out",
                 str(tmp_path / "m")])
    assert code == 2 and "already exists; choose another --out or pass --overwrite" in capsys.readouterr().err


def test_a_tag_conflict_is_exit_code_2_from_the_cli(published, tmp_path, capsys):
    """Issue 10.2: a tag that holds another merge is the user's to fix (exit 2), not a bug (exit 1)."""
    args = ["merge", "--base", "preflight/base", "--method", "ties", "--push-to", "preflight/cli-tagged", "--tag", "v1",
            "--quiet"]
    assert main([*args, "--expert", "preflight/e1", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    code = main([*args, "--expert", "preflight/e2", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: tag 'v1' already exists in preflight/cli-tagged") and "with another merge" in err


def test_a_read_only_token_is_refused_before_any_download(hub, published, tmp_path, no_downloads, monkeypatch):
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    monkeypatch.setattr(h.api, "whoami", lambda *a, **k: {"name": "reader", "auth": {"accessToken": {"role": "read"}}})
    with pytest.raises(PublishError, match="the token is read-only; use a token with write access"):
        merge("preflight/base", ["preflight/e1"], "ties", out=tmp_path / "m", push_to="preflight/out", hub=h)
    assert not (tmp_path / "m").exists()


def test_no_token_from_the_cli_is_one_line_with_the_fix_before_any_download(hub, published, tmp_path, capsys,
                                                                            no_downloads, monkeypatch):
    """Issue 10.1: no token used to end in a bare 401 after the merge had run."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no stored token either
    code = main(["merge", "--base", "preflight/base", "--expert", "preflight/e1", "--method", "ties", "--out",
                 str(tmp_path / "m"), "--push-to", "preflight/out", "--endpoint", hub.url, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "needs a token: set HF_TOKEN or run `hf auth login`" in err
