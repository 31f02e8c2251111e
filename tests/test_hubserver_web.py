"""The embedded Hub's web pages: every page kind parsed as HTML, escaping, 404s, privacy, Host checks.

A dedicated server holds hand-made repos (published with the real client): a model with a card,
a folder, a tag and a branch with a slash; a dataset; a private model; a repo whose file names,
tag, commit title and card are hostile; and two merge snapshots with real ``hf_time.json`` lineages
to compare. The timeline page, with a real timeline, is in test_hubserver_web_timeline.py.
"""

from __future__ import annotations

import http.client
import json
import struct
import urllib.error
import urllib.request
import zlib
from urllib.parse import urlsplit

import pytest
from html_dom import active_content, parse
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from hub_raw import Conn, host_of

from hf_time.hubserver import HubServer
from hf_time.lineage import ExpertRecord, Lineage, MethodRecord, OutputRecord, RefRecord

TOKEN = "web-test-token"
HOSTILE = '"><img src=x onerror=alert(1)>'
SCRIPT = "<script>alert(1)</script>"


def png(width: int, height: int) -> bytes:
    """A valid grey PNG, from the standard library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


PLOT = png(30, 20)
CARD = """---
license: apache-2.0
tags: [hf_time, merge]
base_model: web/base
datasets: [web/data]
model-index:
- name: alpha
  results:
  - task: {type: text-classification}
    dataset: {name: sms_spam, type: sms_spam, split: test}
    metrics: [{type: accuracy, value: 0.875, name: accuracy}]
---
# Alpha model

![the plot](plot.png) and [the notes](docs/notes.md) and [a page](/web/base/tree/main).
"""
EVIL_CARD = f"""---
license: "{SCRIPT}"
---
# Evil {SCRIPT}

<img src=x onerror=alert(1)> [click](javascript:alert(1)) ![x](javascript:alert(2)) [d](data:text/html,<script>x</script>)

<a href="javascript:alert(3)">raw</a>
"""


def lineage(method: str, params: dict, base_sha: str, expert_shas: list[str], weight_sha: str) -> bytes:
    """An ``hf_time.json`` in the real format (written by :class:`Lineage` itself)."""
    experts = tuple(ExpertRecord(f"web/expert-{i}", f"web/expert-{i}", "main", sha, weight=0.5)
                    for i, sha in enumerate(expert_shas, start=1))
    record = Lineage(kind="merge", output=OutputRecord("model", files={"model.safetensors": weight_sha}),
                     method=MethodRecord(method, "dense", parameters=params),
                     base=RefRecord("web/base", "web/base", "main", base_sha), experts=experts)
    return json.dumps(record.to_dict()).encode()


def merge_card(acc: dict[str, float]) -> bytes:
    results = "".join(f"  - task: {{type: text-classification}}\n    dataset: {{name: {t}, type: {t}}}\n"
                      f"    metrics: [{{type: accuracy, value: {v}}}]\n" for t, v in acc.items())
    return f"---\nmodel-index:\n- name: merged\n  results:\n{results}---\n# merged\n".encode()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A server with the repos described in the module docstring; yields ``(server, api, facts)``."""
    server = HubServer(tmp_path_factory.mktemp("web") / "hub", token=TOKEN).start()
    api = HfApi(endpoint=server.url, token=TOKEN)
    facts = {}
    api.create_repo("web/base")
    facts["base_sha"] = api.create_commit("web/base", operations=[CommitOperationAdd("config.json", b"{}")],
                                          commit_message="base").oid
    api.create_repo("web/data", repo_type="dataset")
    api.create_commit("web/data", repo_type="dataset", commit_message="card",
                      operations=[CommitOperationAdd("README.md", b"# The data\n\nrows and rows")])
    api.create_repo("web/secret", private=True)
    api.create_commit("web/secret", commit_message="card", operations=[CommitOperationAdd("README.md", b"# secret")])

    api.create_repo("web/alpha")
    first = api.create_commit("web/alpha", commit_message="first", operations=[
        CommitOperationAdd("README.md", CARD.encode()), CommitOperationAdd("plot.png", PLOT),
        CommitOperationAdd("config.json", b'{"hidden_size": 16}'), CommitOperationAdd("old.txt", b"gone soon"),
        CommitOperationAdd("docs/notes.md", b"# Notes\n\nSee [config](../config.json) and ![p](../plot.png)."),
        CommitOperationAdd("page.html", b"<script>alert(1)</script>")])
    api.create_tag("web/alpha", tag="v1")
    api.create_branch("web/alpha", branch="release/v1")
    second = api.create_commit("web/alpha", commit_message="second", operations=[
        CommitOperationAdd("config.json", b'{"hidden_size": 32}'), CommitOperationDelete("old.txt")])
    facts.update(alpha_first=first.oid, alpha_second=second.oid, alpha_commit_url=second.commit_url)

    api.create_repo("web/evil")
    api.create_commit("web/evil", commit_message=f"title {SCRIPT}", operations=[
        CommitOperationAdd("README.md", EVIL_CARD.encode()), CommitOperationAdd(f"{HOSTILE}.txt", SCRIPT.encode())])
    api.create_tag("web/evil", tag='x"onmouseover="alert(1)')

    api.create_repo("web/merged")
    base, experts = facts["base_sha"], ["1" * 40, "2" * 40]
    api.create_commit("web/merged", commit_message="linear", operations=[
        CommitOperationAdd("hf_time.json", lineage("linear", {"normalize": True}, base, experts, "a" * 64)),
        CommitOperationAdd("README.md", merge_card({"sms_spam": 0.5, "imdb": 0.75}))])
    api.create_tag("web/merged", tag="v1")
    api.create_commit("web/merged", commit_message="ties", operations=[
        CommitOperationAdd("hf_time.json", lineage("ties", {"density": 0.2}, base, experts, "b" * 64)),
        CommitOperationAdd("README.md", merge_card({"sms_spam": 0.625, "imdb": 0.75}))])
    api.create_tag("web/merged", tag="v2")
    yield server, api, facts
    server.stop()


def get(url: str, token: str | None = None) -> tuple[int, dict, str]:
    """``(status, headers, text)`` of a GET (redirects followed); errors are returned, not raised."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode("utf-8", "replace")


def page(server: HubServer, path: str, status: int = 200):
    """The parsed page at ``path``; checks its status and that it is HTML under the no-script policy."""
    code, headers, text = get(server.url + path)
    assert code == status, (path, code, text[:300])
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    doc = parse(text)
    assert active_content(doc) == [], path
    return doc


def hrefs(doc) -> set[str]:
    return {a.attrs["href"] for a in doc.find_all("a") if a.attrs.get("href")}


def test_index_lists_public_repos_newest_first_and_searches(web):
    server, _, _ = web
    doc = page(server, "/")
    listed = [li.attrs["data-repo"] for li in doc.find_all("li") if "data-repo" in li.attrs]
    assert set(listed) == {"web/base", "web/data", "web/alpha", "web/evil", "web/merged"}  # not web/secret
    assert listed[0] == "web/merged"  # the last commit of the fixture
    assert {"/web/alpha", "/datasets/web/data"} <= hrefs(doc)
    found = page(server, "/?search=ALP")
    assert [li.attrs["data-repo"] for li in found.find_all("li") if "data-repo" in li.attrs] == ["web/alpha"]
    datasets = page(server, "/?type=datasets")
    assert [li.attrs["data-repo"] for li in datasets.find_all("li") if "data-repo" in li.attrs] == ["web/data"]
    assert "No repository matches" in page(server, "/?search=nothing-like-this").text()


def test_repo_page_renders_the_card_with_metadata_images_and_links(web):
    server, _, facts = web
    sha = facts["alpha_second"]
    doc = page(server, "/web/alpha")
    meta = {tr.find_all("td")[0].text(): tr.find_all("td")[1] for tr in doc.one("table", cls="metadata").find_all("tr")[1:]}
    assert meta["license"].text() == "apache-2.0" and meta["tags"].text() == "hf_time, merge"
    assert [a.attrs["href"] for a in meta["base_model"].find_all("a")] == ["/web/base"]  # a repo on this server
    assert [a.attrs["href"] for a in meta["datasets"].find_all("a")] == ["/datasets/web/data"]
    assert "model-index" not in meta
    cells = [td.text() for td in doc.one("table", cls="results").find_all("td")]
    assert cells == ["sms_spam", "test", "accuracy", "0.875"]
    card = doc.one("article", cls="card")
    assert card.one("h1").text() == "Alpha model"
    img = card.one("img")
    assert img.attrs["src"] == f"/web/alpha/resolve/{sha}/plot.png" and img.attrs["alt"] == "the plot"
    status, headers, _ = get(server.url + img.attrs["src"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    links = hrefs(card)
    assert f"/web/alpha/blob/{sha}/docs/notes.md" in links and "/web/base/tree/main" in links
    for href in links:
        assert get(server.url + href)[0] == 200, href


def test_repo_page_lists_files_refs_and_commits(web):
    server, api, facts = web
    doc = page(server, "/web/alpha")
    files = [a.text() for a in doc.one("table", cls="files").find_all("a") if a.text() != "download"]
    assert files == [".gitattributes", "README.md", "config.json", "docs/", "page.html", "plot.png"]
    refs = {a.text(): a.attrs["href"] for a in doc.one("table", cls="refs").find_all("a") if "/tree/" in a.attrs["href"]}
    assert refs == {"main": "/web/alpha/tree/main", "release/v1": "/web/alpha/tree/release%2Fv1", "v1": "/web/alpha/tree/v1"}
    commits = [a.text() for a in doc.one("table", cls="commits").find_all("a") if "/commit/" in a.attrs["href"]]
    assert commits == [c.title for c in api.list_repo_commits("web/alpha")]
    assert doc.one("code", cls="rev").text() == "main"


def test_tree_pages_at_any_revision_and_folder(web):
    server, _, facts = web
    first = facts["alpha_first"]
    for rev in ("v1", "release%2Fv1", first, first[:7]):
        doc = page(server, f"/web/alpha/tree/{rev}")
        names = [a.text() for a in doc.one("table", cls="files").find_all("a")]
        assert "old.txt" in names, rev  # deleted by the second commit
        assert f"/web/alpha/commit/{first}" in hrefs(doc)
    doc = page(server, "/web/alpha/tree/main/docs")
    assert [a.attrs["href"] for a in doc.one("table", cls="files").find_all("a")] == [
        "/web/alpha/blob/main/docs/notes.md", "/web/alpha/resolve/main/docs/notes.md"]


def test_blob_pages_show_text_images_and_markdown(web):
    server, _, facts = web
    sha = facts["alpha_second"]
    doc = page(server, "/web/alpha/blob/v1/config.json")
    assert doc.one("pre").text() == '{"hidden_size": 16}'
    assert page(server, "/web/alpha/blob/main/plot.png").one("img").attrs["src"] == f"/web/alpha/resolve/{sha}/plot.png"
    notes = page(server, "/web/alpha/blob/main/docs/notes.md").one("article", cls="card")
    # Relative to the file's own folder: ../config.json is the repo's config.json.
    assert [a.attrs["href"] for a in notes.find_all("a")] == [f"/web/alpha/blob/{sha}/config.json"]
    assert notes.one("img").attrs["src"] == f"/web/alpha/resolve/{sha}/plot.png"
    html_file = page(server, "/web/alpha/blob/main/page.html")
    assert html_file.one("pre").text() == SCRIPT  # shown as text


def test_commit_pages(web):
    server, api, facts = web
    doc = page(server, urlsplit(facts["alpha_commit_url"]).path)  # the URL create_commit returned
    changes = [(tr.find_all("td")[0].text(), tr.find_all("td")[1].text()) for tr in doc.one("table", cls="changes").find_all("tr")[1:]]
    assert changes == [("modified", "config.json"), ("deleted", "old.txt")]
    assert f"/web/alpha/compare/{facts['alpha_first']}...{facts['alpha_second']}" in hrefs(doc)
    history = page(server, "/web/alpha/commits/v1")
    assert len(history.one("table", cls="commits").find_all("tr")) - 1 == len(api.list_repo_commits("web/alpha", revision="v1"))


def test_dataset_pages_have_their_own_prefix(web):
    server, _, _ = web
    doc = page(server, "/datasets/web/data")
    assert doc.one("article", cls="card").one("h1").text() == "The data"
    blob = page(server, "/datasets/web/data/blob/main/README.md")
    assert blob.one("article", cls="card").one("h1").text() == "The data"
    page(server, "/web/data", status=404)  # not a model


@pytest.mark.parametrize("path, code", [
    ("/web/nope", "RepoNotFound"), ("/web/nope/tree/main", "RepoNotFound"), ("/datasets/web/alpha", "RepoNotFound"),
    ("/web/alpha/tree/no-such-rev", "RevisionNotFound"), ("/web/alpha/commit/deadbeef", "RevisionNotFound"),
    ("/web/alpha/compare/v1...no-such-rev", "RevisionNotFound"), ("/web/alpha/blob/main/nope.txt", "EntryNotFound"),
    ("/web/alpha/tree/main/nope", "EntryNotFound"), ("/web/alpha/timeline", "RevisionNotFound"),
])
def test_unknown_repos_revisions_and_files_are_html_404s(web, path, code):
    server, _, _ = web
    status, headers, text = get(server.url + path)
    assert status == 404 and headers["X-Error-Code"] == code
    assert headers["Content-Type"] == "text/html; charset=utf-8" and "Content-Security-Policy" in headers
    assert parse(text).one("p", cls="error").text()


def test_private_repos_are_invisible_without_the_token(web):
    server, _, _ = web
    missing = get(server.url + "/web/never-created")
    for path in ("/web/secret", "/web/secret/tree/main", "/web/secret/resolve/main/README.md", "/web/secret/commits/main"):
        status, headers, text = get(server.url + path)
        assert status == 404 and headers["X-Error-Code"] == "RepoNotFound", path
        assert "secret" not in text.replace("web/secret", "") and "private" not in text.lower()
    assert missing[0] == 404
    assert "web/secret" not in get(server.url + "/?search=secret")[2]
    status, _, text = get(server.url + "/web/secret", token=TOKEN)  # a script with the token sees it
    assert status == 200 and parse(text).one("article", cls="card").text() == "secret"


def test_hostile_names_tags_titles_and_cards_stay_text(web):
    server, _, _ = web
    for path in ("/web/evil", "/web/evil/commits/main", "/", f"/?search={urllib.parse.quote(SCRIPT)}",
                 "/web/evil/compare/main...main"):
        status, _, text = get(server.url + path)
        assert status == 200, path
        assert "<script" not in text.lower(), path
        assert active_content(parse(text)) == [], path
    doc = page(server, "/web/evil")
    names = [a.text() for a in doc.one("table", cls="files").find_all("a")]
    assert f"{HOSTILE}.txt" in names
    assert 'x"onmouseover="alert(1)' in doc.one("table", cls="refs").text()
    card = doc.one("article", cls="card")
    assert SCRIPT in card.one("h1").text() and "<img src=x onerror=alert(1)>" in card.text()
    assert card.find_all("img") == []  # ![x](javascript:...) is not an image
    assert all(a.attrs.get("href") is None for a in card.find_all("a"))  # javascript: and data: links dropped
    assert doc.one("table", cls="metadata").find_all("td")[1].text() == SCRIPT
    assert SCRIPT in page(server, "/web/evil/commits/main").text()  # the commit title, as text
    search = page(server, f"/?search={urllib.parse.quote(SCRIPT)}")
    assert search.one("input").attrs["value"] == SCRIPT


def test_compare_two_merge_snapshots(web):
    server, _, facts = web
    doc = page(server, "/web/merged/compare/v1...v2")
    rows = {tr.one("th").text(): tr for tr in doc.one("table", id="compare-lineage").find_all("tr")[1:]}
    assert [td.text() for td in rows["method"].find_all("td")] == ["linear", "ties"]
    assert "differs" in rows["method"].attrs["class"] and "class" not in rows["kind"].attrs
    assert [td.text() for td in rows["parameter normalize"].find_all("td")] == ["True", "–"]
    assert [td.text() for td in rows["parameter density"].find_all("td")] == ["–", "0.2"]
    inputs = doc.one("table", id="compare-inputs")
    assert f"/web/base/tree/{facts['base_sha']}" in hrefs(inputs)
    assert "/web/expert-2/tree/" + "2" * 40 in hrefs(inputs) and "weight 0.5" in inputs.text()
    acc = {tr.one("th").text(): [td.text() for td in tr.find_all("td")]
           for tr in doc.one("table", id="compare-accuracy").find_all("tr")[1:]}
    assert acc == {"sms_spam": ["0.500", "0.625", "+0.125"], "imdb": ["0.750", "0.750", "+0.000"]}
    weights = [td.text() for td in doc.one("table", cls="weights").find_all("td")]
    assert weights == ["a" * 10, "b" * 10]


def test_compare_form_redirects_and_missing_lineage_is_said(web):
    server, _, _ = web
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc)
    conn.request("GET", "/web/merged/compare?a=v1&b=release/x")
    resp = conn.getresponse()
    assert resp.status == 303 and resp.headers["Location"] == "/web/merged/compare/v1...release%2Fx"
    conn.close()
    form = page(server, "/web/merged/compare")
    assert {o.attrs["value"] for o in form.find_all("option")} == {"main", "v1", "v2"}
    doc = page(server, "/web/alpha/compare/v1...main")
    notes = [p.text() for p in doc.find_all("p", cls="error")]
    assert notes == ["A: no hf_time.json at this revision", "B: no hf_time.json at this revision"]


def test_pages_refuse_a_foreign_host(web):
    server, _, _ = web
    with Conn(server.url) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n")
        assert conn.response().status == 421
    with Conn(server.url) as conn:
        conn.send(f"GET /web/alpha HTTP/1.1\r\nHost: {host_of(server.url)}\r\nConnection: close\r\n\r\n".encode())
        assert conn.response().status == 200


def test_resolve_serves_browser_safe_content_types(web):
    server, _, _ = web
    expected = {"plot.png": "image/png", "README.md": "text/plain; charset=utf-8", "config.json": "application/json",
                "page.html": "application/octet-stream"}
    for path, content_type in expected.items():
        status, headers, _ = get(f"{server.url}/web/alpha/resolve/main/{path}")
        assert status == 200 and headers["Content-Type"] == content_type, path
        assert headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in headers["Content-Security-Policy"]
