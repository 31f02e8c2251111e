"""benchmarks/gpu_check.sh (issues 8 and 13): its shell parses, refuses unknown arguments, and its CPU
fallback (tiny sizes) runs every section and writes the JSON figures with sane values. The GPU figures
themselves need a GPU machine; this is what CI can check of the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return env


def test_the_script_parses_and_refuses_unknown_arguments_in_one_line():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    out = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True, check=False, env=_env())
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown argument '--gpu'; use --out DIR, --cpu, --only SECTIONS or --prepare"


@pytest.mark.slow
def test_the_cpu_fallback_writes_every_figure(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT), "--cpu", "--out", str(tmp_path)], capture_output=True, text=True,
                         check=False, env=_env(), timeout=400)
    log = (tmp_path / "gpu_check.log").read_text() if (tmp_path / "gpu_check.log").is_file() else ""
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:] + log[-3000:]
    names = {p.name for p in tmp_path.iterdir()}
    # What comes back from a device run: at most 8 files, flat.
    assert names == {"env.json", "train.json", "merges.json", "profile.json", "devices.json", "timeline.json",
                     "gpu_check.json", "gpu_check.log"}
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["missing"] == []
    env, train, merges = figures["env"], figures["train"], figures["merges"]
    assert env["mode"] == "cpu" and env["h2d_gbps"] > 0 and env["matmul"]["tflops"] > 0
    for mode in ("full", "lora"):
        run = train["runs"][mode]
        assert run["tokens"] > 0 and run["tokens_per_s"] > 0 and run["precision"] == "fp32"
        assert 0 < run["mfu"] < 1 and run["flops_per_token"] > 4 * train["parameters"]
    assert train["runs"]["lora"]["trainable_parameters"] < train["runs"]["full"]["trainable_parameters"]
    assert merges["scale"] == "tiny" and merges["devices"]["cpu"]["task_arithmetic"]["wall_s"] > 0
    assert merges["bytes_moved_per_merge"] > 0 and merges["devices"]["cpu"]["task_arithmetic"]["gbps"] > 0
    profile = figures["profile"]
    assert set(profile["runs"]) == {"task_arithmetic cpu", "ties cpu"} and profile["import_s"] > 0
    for run in profile["runs"].values():
        assert len(run["wall_s"]) == 2 and min(run["wall_s"]) > 0
        assert run["top_own_time"] and all(row["calls"] > 0 for row in run["top_own_time"])
    assert figures["devices"]["returncode"] == 0 and figures["devices"]["passed"] >= 2
    assert figures["devices"]["failed"] == 0
    timeline = figures["timeline"]
    assert timeline["steps_done"] == 2 and timeline["tags"] == ["step-1", "step-2"]
    assert [s["step"] for s in timeline["steps"]] == [1, 2] and all(s["tokens"] > 0 for s in timeline["steps"])
    assert set(timeline["accuracy"]) == {"reviews", "sft"}
    assert "train full" in out.stdout and "timeline step 2" in out.stdout and "profile ties cpu" in out.stdout


def test_only_runs_the_sections_named(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT), "--cpu", "--only", "env", "--out", str(tmp_path)], capture_output=True,
                         text=True, check=False, env=_env(), timeout=200)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert {p.name for p in tmp_path.iterdir()} == {"env.json", "gpu_check.json", "gpu_check.log"}
    assert json.loads((tmp_path / "gpu_check.json").read_text())["missing"] == ["devices", "merges", "profile", "timeline",
                                                                                 "train"]
