"""``/api/models``, ``/api/datasets`` and ``/api/spaces`` against the REAL client and the ``hf`` CLI.

A dedicated server with pages of 2 repos (``Limits.max_page_items``) holds a known set of repos, so
every listing of more than two items has crossed a page boundary through the ``Link`` header.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from hf_time.hubserver import HubServer, Limits

TOKEN = "listing-test-token"
MODELS = ["alice/merge-one", "alice/merge-two", "alice/timeline-x", "bob/merge-three", "bob/other"]
DATASETS = ["alice/data-a", "bob/data-b", "bob/data-c"]
CARD = "---\ntags: [hf_time, merge]\nlibrary_name: transformers\npipeline_tag: feature-extraction\n---\n# card\n"


@pytest.fixture(scope="module")
def small_pages(tmp_path_factory):
    """A server whose listing pages hold 2 repos: 5 public models, a private one, 3 datasets, a space."""
    server = HubServer(tmp_path_factory.mktemp("listing") / "hub", token=TOKEN, limits=Limits(max_page_items=2))
    server.start()
    api = HfApi(endpoint=server.url, token=TOKEN)
    for repo_id in MODELS:
        api.create_repo(repo_id)
    for repo_id in DATASETS:
        api.create_repo(repo_id, repo_type="dataset")
    api.create_repo("alice/hidden", private=True)
    api.create_repo("alice/app", repo_type="space", space_sdk="static")
    # A commit makes this repo the most recently modified one, and gives it a card with tags.
    api.create_commit("alice/merge-two", operations=[CommitOperationAdd("README.md", CARD.encode())],
                      commit_message="card")
    yield server, api
    server.stop()


def _raw(url: str) -> tuple[list, str | None]:
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read()), r.headers.get("Link")


def test_a_page_holds_at_most_the_limit_and_links_to_the_next(small_pages):
    server, _ = small_pages
    page, link = _raw(f"{server.url}/api/models?search=merge")
    assert len(page) == 2
    assert link.startswith(f"<{server.url}/api/models?") and link.endswith('>; rel="next"') and "search=merge" in link
    second, last_link = _raw(link[1:link.index(">")])
    assert len(second) == 1 and last_link is None  # 3 matches: 2 + 1, and no link after the last page
    assert {m["id"] for m in page + second} == {"alice/merge-one", "alice/merge-two", "bob/merge-three"}


def test_list_models_walks_every_page_newest_first(small_pages):
    _, api = small_pages
    models = list(api.list_models(token=False))
    assert sorted(m.id for m in models) == sorted(MODELS)  # 3 pages of 2; the private repo is not listed
    dates = [m.last_modified for m in models]
    assert dates == sorted(dates, reverse=True)
    assert models[0].id == "alice/merge-two"  # the last commit
    assert all(m.private is False and m.sha and len(m.sha) == 40 for m in models)


def test_list_datasets_search_author_and_sort(small_pages):
    _, api = small_pages
    assert sorted(d.id for d in api.list_datasets()) == sorted(DATASETS)
    assert [d.id for d in api.list_datasets(author="bob", sort="created_at")] == ["bob/data-c", "bob/data-b"]
    assert [d.id for d in api.list_datasets(search="DATA-A")] == ["alice/data-a"]  # case-insensitive
    assert list(api.list_datasets(search="merge")) == []  # models are not datasets


def test_list_spaces_lists_spaces_only(small_pages):
    _, api = small_pages
    assert [s.id for s in api.list_spaces()] == ["alice/app"]
    assert "alice/app" not in {m.id for m in api.list_models()}


def test_list_models_author_search_limit_and_direction(small_pages):
    server, api = small_pages
    assert sorted(m.id for m in api.list_models(author="bob")) == ["bob/merge-three", "bob/other"]
    assert [m.id for m in api.list_models(search="merge", author="alice")] == ["alice/merge-two", "alice/merge-one"]
    assert len(list(api.list_models(limit=3))) == 3  # the client stops after 2 pages
    ascending, _ = _raw(f"{server.url}/api/models?sort=id&direction=1&limit=2")
    assert [m["id"] for m in ascending] == ["alice/merge-one", "alice/merge-two"]


def test_private_repos_are_listed_only_with_the_token(small_pages):
    _, api = small_pages
    assert "alice/hidden" not in {m.id for m in api.list_models(token=False)}
    mine = {m.id: m for m in api.list_models(author="alice")}  # the api's token is the server's
    assert mine["alice/hidden"].private is True
    assert "alice/hidden" not in {m.id for m in HfApi(endpoint=api.endpoint, token="wrong").list_models()}


def test_card_filters_and_what_each_item_carries(small_pages):
    _, api = small_pages
    tagged = list(api.list_models(filter=["hf_time", "merge"], cardData=True))
    assert [m.id for m in tagged] == ["alice/merge-two"]
    assert tagged[0].card_data.tags == ["hf_time", "merge"] and tagged[0].tags == ["hf_time", "merge"]
    assert tagged[0].pipeline_tag == "feature-extraction" and tagged[0].library_name == "transformers"
    assert [m.id for m in api.list_models(pipeline_tag="feature-extraction")] == ["alice/merge-two"]
    assert list(api.list_models(gated=True)) == []
    full = next(iter(api.list_models(search="merge-two", full=True)))
    assert sorted(s.rfilename for s in full.siblings) == [".gitattributes", "README.md"]
    plain = next(iter(api.list_models(search="merge-two")))
    assert plain.siblings is None and plain.card_data is None
    expanded = next(iter(api.list_models(search="merge-two", expand=["createdAt", "likes"])))
    assert expanded.created_at is not None and expanded.likes == 0 and expanded.tags is None


def test_bad_listing_parameters_are_400(small_pages):
    server, api = small_pages
    for query in ("sort=stars", "direction=2", "limit=0", "limit=x", "cursor=bm90LWEtY3Vyc29y"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.url}/api/models?{query}")
        assert err.value.code == 400, query
    with pytest.raises(HfHubHTTPError):
        list(api.list_models(sort="stars"))  # type: ignore[arg-type]


def _hf(server: HubServer, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "NO_COLOR": "1"}
    hf = Path(sys.executable).with_name("hf")
    return subprocess.run([str(hf), *args, "--format", "json"], env=env, capture_output=True, text=True, timeout=120)


def test_hf_cli_lists_models_and_datasets(small_pages):
    server, _ = small_pages
    done = _hf(server, "models", "ls", "--author", "bob")
    assert done.returncode == 0, done.stderr
    assert sorted(m["id"] for m in json.loads(done.stdout)) == ["bob/merge-three", "bob/other"]
    done = _hf(server, "datasets", "ls", "--search", "data", "--limit", "3")
    assert done.returncode == 0, done.stderr
    assert sorted(d["id"] for d in json.loads(done.stdout)) == sorted(DATASETS)
