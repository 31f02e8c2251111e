import json

import pytest

from hf_time.cli import main
from hf_time.lineage import Lineage
from hf_time.merges import list_methods
from tiny import save_tiny_llama


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_models")
    base = save_tiny_llama(d / "base", 0)
    return base, save_tiny_llama(d / "e1", 1, base=base), save_tiny_llama(d / "e2", 2, base=base)


def test_ls_lists_every_registered_method(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for spec in list_methods():
        assert spec.name in out
    assert main(["ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {s.name for s in list_methods()}
    ties = next(r for r in rows if r["name"] == "ties")
    assert {p["name"] for p in ties["parameters"]} >= {"density", "lambda", "normalize"}


def test_merge_command(models, tmp_path, capsys):
    base, e1, e2 = models
    out = tmp_path / "m"
    code = main(["merge", "--base", str(base), "--expert", str(e1), "--expert", str(e2), "--method", "ties",
                 "--param", "density=0.5", "--weight", "0.3", "--weight", "0.7", "--out", str(out), "--quiet"])
    assert code == 0
    assert f"merged -> {out}" in capsys.readouterr().out
    lineage = Lineage.load(out)
    assert lineage.method.parameters["density"] == 0.5
    assert [e.weight for e in lineage.experts] == [0.3, 0.7]


def test_merge_from_yaml_reproduces_lineage(models, tmp_path):
    base, e1, e2 = models
    first = tmp_path / "first"
    assert main(["merge", "--base", str(base), "--expert", str(e1), "--expert", str(e2), "--method",
                 "task_arithmetic", "--param", "lambda=0.3", "--out", str(first), "--quiet"]) == 0
    # the merge_config.yaml written beside the weights reproduces the merge bit for bit
    second = tmp_path / "second"
    assert main(["merge", str(first / "merge_config.yaml"), "--out", str(second), "--quiet"]) == 0
    a, b = Lineage.load(first), Lineage.load(second)
    assert a.output.files == b.output.files and a.method == b.method


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--method", "nope"], "unknown merge method 'nope'; valid methods:"),
        (["--method", "ties", "--param", "density=2"], "must be <= 1.0"),
        (["--method", "ties", "--param", "bogus=1"], "unknown parameter 'bogus'"),
        (["--method", "ties", "--weight", "1", "--weight", "2", "--weight", "3"], "--weight"),
    ],
)
def test_bad_input_is_one_line_error(models, tmp_path, capsys, args, needle):
    base, e1, e2 = models
    code = main(["merge", "--base", str(base), "--expert", str(e1), "--expert", str(e2), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_arguments(capsys):
    assert main(["merge", "--base", "x"]) == 2
    assert "missing --expert, --method" in capsys.readouterr().err


def test_readme_method_table_matches_registry():
    from pathlib import Path

    from hf_time.cli import methods_markdown

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("<!-- methods:start")
    table = readme[readme.index("\n", start) + 1 : readme.index("<!-- methods:end -->")].strip()
    assert table == methods_markdown(list_methods()), "README table is stale: paste `hf-time ls --markdown`"


def test_hub_serve_command(tmp_path):
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "hf_time.cli", "hub", "serve", "--root", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.strip().split(" at ")[-1]
        assert url.startswith("http://127.0.0.1:")
        answer = None
        for _ in range(50):  # the server prints its URL before it accepts: poll until it answers
            try:
                with urllib.request.urlopen(url + "/api/models/none/none") as r:
                    answer = (r.status, None)
            except urllib.error.HTTPError as e:
                answer = (e.code, e.headers["X-Error-Code"])
                break
            except OSError:
                time.sleep(0.1)
        assert answer == (404, "RepoNotFound"), answer
    finally:
        proc.terminate()
        proc.wait(10)


def test_mergekit_yaml_end_to_end(models, tmp_path):
    """A mergekit config (base listed among the models, per-model density/weight, int8_mask) runs as is."""
    import torch

    from hf_time.io import Checkpoint

    base, e1, e2 = models
    cfg = tmp_path / "mergekit.yaml"
    cfg.write_text(f"""
models:
  - model: {base}
  - model: {e1}
    parameters: {{density: 1.0, weight: 0.5}}
  - model: {e2}
    parameters: {{density: 1.0, weight: 0.5}}
merge_method: ties
base_model: {base}
parameters:
  normalize: false
  int8_mask: true
dtype: float32
""")
    out = tmp_path / "out"
    assert main(["merge", str(cfg), "--out", str(out), "--quiet"]) == 0
    b, x1, x2, m = (Checkpoint(p) for p in (base, e1, e2, out))
    name = "model.layers.0.mlp.down_proj.weight"
    t1, t2 = x1.get(name) - b.get(name), x2.get(name) - b.get(name)
    # density 1 keeps everything; TIES still drops the entries disagreeing with the elected sign
    s = 0.5 * t1 + 0.5 * t2
    agree1, agree2 = (t1 * s > 0), (t2 * s > 0)
    expected = b.get(name) + 0.5 * t1 * agree1 + 0.5 * t2 * agree2
    torch.testing.assert_close(m.get(name), expected, rtol=0, atol=1e-6)


def test_quiet_is_quiet_on_hub_refs(hub, tmp_path):
    """--quiet silences hf_time's bars and huggingface_hub's download bars ("Fetching N files") alike."""
    import subprocess
    import sys

    from conftest import HUB_TOKEN
    from hf_time.hub import Hub

    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    base = save_tiny_llama(tmp_path / "b", 0)
    h.publish(base, "quiet/base", commit_message="b")
    h.publish(save_tiny_llama(tmp_path / "e", 1, base=base), "quiet/e1", commit_message="e")
    env = {k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env["HF_HOME"] = str(tmp_path / "fresh_home")  # a cold cache: downloads happen
    proc = subprocess.run([sys.executable, "-m", "hf_time.cli", "merge", "--base", "quiet/base", "--expert", "quiet/e1",
                           "--method", "ties", "--out", str(tmp_path / "m"), "--endpoint", hub.url, "--quiet"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.strip().splitlines() == [f"merged -> {tmp_path / 'm'}"]


def test_startup_imports_pause_the_collector_then_freeze_what_they_made():
    import gc

    from hf_time.cli_common import startup_imports

    frozen = gc.get_freeze_count()
    try:
        with startup_imports():
            assert not gc.isenabled()
            made = [[] for _ in range(1000)]  # stands for the objects an import makes
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(made)
        gc.disable()  # a caller that had the collector off keeps it off
        with startup_imports():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_command_leaves_the_collector_running():
    import gc

    gc.unfreeze()
    try:
        assert main(["ls"]) == 0
        assert gc.isenabled() and gc.get_freeze_count() > 0  # its imports' objects are frozen
    finally:
        gc.unfreeze()
