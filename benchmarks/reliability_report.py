"""Run the reliability probes of the test suite and print one table (issue 9's fault hunt, kept).

    .venv/bin/python benchmarks/reliability_report.py [--json benchmarks/reliability.json]

Every probe is a test that tries something hostile or careless and asserts the outcome the project
promises (tests/probes.py records each one while ``HF_TIME_PROBE_LOG`` is set):

* bad input — a corrupt file, a malformed config, an impossible option, fuzzed data: one clear line
  (CLI) or a typed hf_time error (API), never a traceback;
* partial outputs — after each failed command, is anything left at ``--out`` or beside it?
* faults — the embedded Hub made to fail (5xx, 429, dropped connections, moved branches, a full
  disk): survived, or ended in one line;
* kill points — a run killed at a step boundary or mid-write: resumed to identical files;
* Hub probes — hostile or malformed requests to the embedded Hub: refused correctly, never a 500.

The table goes to stdout (and, with ``--json``, the raw counts to a file); docs/reliability.md quotes it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/test_reliability.py", "tests/test_fuzz_inputs.py", "tests/test_pipeline.py", "tests/test_hub_client_faults.py",
    "tests/test_hubserver_bodies.py", "tests/test_hubserver_payloads.py", "tests/test_hubserver_security.py",
    "tests/test_hubserver_robustness.py", "tests/test_hubserver_faults.py", "tests/test_hubserver_fuzz.py",
    "tests/test_timeline_resume.py",
]
ROWS = [  # (category, what was tried, what "held" means)
    ("bad input", "bad inputs tried", "clear one-line / typed errors"),
    ("partial outputs", "failed commands checked", "with nothing left behind"),
    ("faults", "faults injected", "survived or one clear line"),
    ("kill points", "kill points", "resumed identically"),
    ("Hub probes", "Hub probes tried", "refused correctly (no 500)"),
]


def run(python: str) -> tuple[list[dict], int]:
    """Run the probe tests with a probe log; returns (probe records, pytest's exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "probes.jsonl"
        env = {**os.environ, "HF_TIME_PROBE_LOG": str(log)}
        proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:], file=sys.stderr)
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return records, proc.returncode


def table(records: list[dict]) -> tuple[str, dict]:
    counts = collections.defaultdict(lambda: [0, 0])
    for r in records:
        counts[r["category"]][0] += 1
        counts[r["category"]][1] += bool(r["ok"])
    lines = ["| probes | tried | held | not held |", "|---|---|---|---|"]
    summary = {}
    for category, tried, held in ROWS:
        n, ok = counts[category]
        lines.append(f"| {tried} / {held} | {n} | {ok} | {n - ok} |")
        summary[category] = {"tried": n, "held": ok}
    total, held = sum(v[0] for v in counts.values()), sum(v[1] for v in counts.values())
    lines.append(f"| **all** | **{total}** | **{held}** | **{total - held}** |")
    summary["all"] = {"tried": total, "held": held}
    return "\n".join(lines), summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, help="also write the counts and every failed probe here")
    p.add_argument("--python", default=sys.executable, help="the interpreter with hf_time and the test extras")
    args = p.parse_args()
    records, code = run(args.python)
    text, summary = table(records)
    print(text)
    failed = [r for r in records if not r["ok"]]
    for r in failed:
        print(f"NOT HELD [{r['category']}] {r['name']}: {r['detail']}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "failed": failed, "pytest_exit": code}, indent=2) + "\n")
    return 0 if code == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
