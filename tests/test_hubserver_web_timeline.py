"""The timeline and compare pages of a REAL timeline (3 steps, fake trainer), in HTML and in Chromium.

The timeline is run by :func:`hf_time.timeline.runner.run_timeline` on the session's embedded Hub,
so the pages read the snapshots hf_time actually publishes (``hf_time.json`` with its timeline
section, ``timeline_state.json``, ``plot.png``). Expected numbers come from the run's own state.

The browser test drives Debian's Chromium (``/usr/bin/chromium``, never a downloaded browser)
through playwright; it is skipped, saying why, when either is missing. Its screenshot is written
under the test's tmp dir, and also copied into ``$HF_TIME_BROWSER_ARTIFACTS`` when that is set
(how ``docs/embedded-hub-timeline.png`` was made).
"""

from __future__ import annotations

import os
import shutil
import struct
import urllib.request
from pathlib import Path

import pytest
from html_dom import active_content, parse
from huggingface_hub import HfApi
from test_timeline_common import fake_evaluator, fake_trainer, save_tiny_bert, timeline_dict

from hf_time.hub import Hub
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline

CHROMIUM = "/usr/bin/chromium"
# No sandbox: the tests run as root, where Chromium refuses its sandbox. The rest keeps it offline.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = "tests/web-timeline"


@pytest.fixture(scope="module")
def timeline(hub, tmp_path_factory):
    """``(hub, run, base publish result)`` of a 3-step timeline (tasks a, b, c; h held out)."""
    tmp = tmp_path_factory.mktemp("web-timeline")
    h = Hub(endpoint=hub.url)
    base = h.publish(save_tiny_bert(tmp / "base"), "tests/web-timeline-base", commit_message="tiny base")
    config = timeline_config_from_dict(timeline_dict(tmp, "tests/web-timeline-base", "web-timeline",
                                                     init="ema", deploy="ema"))
    assert config.repo_id == REPO
    run = run_timeline(config, hub=h, work_dir=tmp / "work", trainer=fake_trainer, evaluator=fake_evaluator,
                       progress=False)
    return hub, run, base


def fetch(url: str) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(url) as r:
        return r.status, dict(r.headers), r.read()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_tree_urls_hf_time_prints_are_pages(timeline):
    hub, run, base = timeline
    status, _, body = fetch(base.url)  # what `publish` printed: <endpoint>/tests/web-timeline-base/tree/<sha>
    assert status == 200 and base.commit[:10] in body.decode()
    tags = HfApi(endpoint=hub.url).list_repo_refs(REPO).tags
    assert len(tags) == len(run.state.steps)
    for tag in tags:
        doc = parse(fetch(f"{hub.url}/{REPO}/tree/{tag.target_commit}")[2].decode())
        assert "hf_time.json" in [a.text() for a in doc.one("table", cls="files").find_all("a")]
        assert tag.name in doc.one("p", cls="where").text()  # "at <sha> · commit … (also step-N)"


def test_timeline_page_shows_each_steps_accuracy_row(timeline):
    hub, run, _ = timeline
    state = run.state
    status, _, body = fetch(f"{hub.url}/{REPO}/timeline")
    doc = parse(body.decode())
    assert status == 200 and active_content(doc) == []
    matrix = doc.one("table", id="accuracy-matrix")
    heads = [th.text() for th in matrix.find_all("th") if "data-task" in th.attrs]
    assert heads == ["a", "b", "c", "h*"]  # adaptation tasks, then the held-out one, marked
    for task, value in state.base_accuracy.items():
        assert matrix.one("td", data_step="0", data_task=task).text() == f"{value:.3f}"
    metrics = {m["step"]: m for m in state.metrics()}
    for rec in state.steps:
        for task, value in rec.accuracy.items():
            assert matrix.one("td", data_step=str(rec.step), data_task=task).text() == f"{value:.3f}"
        assert matrix.one("td", data_step=str(rec.step), data_task="a_ka").text() == f"{metrics[rec.step]['a_ka']:.3f}"
        row = matrix.one("th", data_step=str(rec.step)).parent
        links = {a.text(): a.attrs["href"] for a in row.find_all("a")}
        assert links[f"step {rec.step}"] == f"/{REPO}/tree/step-{rec.step}"
        assert links[f"{REPO}-experts@step-{rec.step}"] == f"/{REPO}-experts/tree/{rec.expert.sha}"
        assert row.find_all("td")[0].text() == rec.task
        for href in links.values():
            assert fetch(hub.url + href)[0] == 200, href
    plot = doc.one("img", id="timeline-plot")
    status, headers, data = fetch(hub.url + plot.attrs["src"])
    assert headers["Content-Type"] == "image/png" and png_size(data)[0] > 100


def test_compare_first_and_last_step(timeline):
    hub, run, _ = timeline
    first, last = run.state.steps[0], run.state.steps[-1]
    doc = parse(fetch(f"{hub.url}/{REPO}/compare/step-1...step-3")[2].decode())
    acc = {tr.one("th").text(): [td.text() for td in tr.find_all("td")]
           for tr in doc.one("table", id="compare-accuracy").find_all("tr")[1:]}
    assert list(acc) == ["a", "b", "c", "h (held out)"]
    for task, (a, b, delta) in acc.items():
        task = task.split(" ")[0]
        assert (a, b) == (f"{first.accuracy[task]:.3f}", f"{last.accuracy[task]:.3f}")
        assert delta == f"{last.accuracy[task] - first.accuracy[task]:+.3f}"
    lineage = {tr.one("th").text(): [td.text() for td in tr.find_all("td")]
               for tr in doc.one("table", id="compare-lineage").find_all("tr")[1:]}
    assert lineage["method"] == ["linear", "linear"] and lineage["timeline step"] == ["1", "3"]
    inputs = doc.one("table", id="compare-inputs")
    # step 3 merged expert 3 into the running merge of step 2, pinned by sha
    assert f"/{REPO}-experts/tree/{last.expert.sha}" in {a.attrs["href"] for a in inputs.find_all("a")}


def test_timeline_page_in_a_real_browser(timeline, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no browser: {CHROMIUM} is missing (Debian: apt-get install chromium; `make install` tries)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    hub, run, _ = timeline
    state = run.state
    shot = tmp_path / "embedded-hub-timeline.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            response = page.goto(f"{hub.url}/{REPO}/timeline", wait_until="load")
            assert response is not None and response.status == 200
            # The DOM as Chromium built it: every cell of the matrix, as the state says.
            cells = page.eval_on_selector_all(
                "#accuracy-matrix td[data-task]", "els => els.map(e => [e.dataset.step, e.dataset.task, e.textContent])")
            shown = {(int(s), t): text for s, t, text in cells}
            for rec in state.steps:
                for task, value in rec.accuracy.items():
                    assert shown[(rec.step, task)] == f"{value:.3f}"
            # The plot was fetched and decoded: its natural size is the PNG's.
            plot = page.eval_on_selector("#timeline-plot", "img => [img.complete, img.naturalWidth, img.naturalHeight]")
            png = fetch(hub.url + page.get_attribute("#timeline-plot", "src"))[2]
            assert plot == [True, *png_size(png)]
            # The stylesheet applied (its CSP hash matches) and the policy reported nothing.
            head = page.eval_on_selector("#accuracy-matrix th", "th => getComputedStyle(th).backgroundColor")
            assert head == "rgb(246, 248, 250)"
            assert [m for m in console if "Content Security Policy" in m] == []
            page.screenshot(path=str(shot), full_page=True)
            # A step's link leads to that snapshot's tree view.
            page.click("#accuracy-matrix th[data-step='2'] a")
            page.wait_for_url(f"**/{REPO}/tree/step-2")
            assert page.inner_text("code.rev") == "step-2"
            assert page.locator("table.files a", has_text="plot.png").count() == 1
        finally:
            browser.close()
    width, height = png_size(shot.read_bytes())
    assert width == 1200 and height >= 900
    artifacts = os.environ.get("HF_TIME_BROWSER_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(artifacts) / shot.name)
