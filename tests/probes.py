"""Probe records for the reliability report (benchmarks/reliability_report.py).

Tests that try a fault — a bad input, an injected Hub fault, a kill point, a hostile request — call
:func:`record` with its outcome. Nothing is recorded unless ``HF_TIME_PROBE_LOG`` names a file: then
each call appends one JSON line, and the report counts them per category. The tests assert the same
outcomes themselves, so a recorded failure is also a failing test.
"""

from __future__ import annotations

import json
import os

CATEGORIES = ("bad input", "partial outputs", "faults", "kill points", "Hub probes")


def record(category: str, name: str, *, ok: bool, detail: str = "") -> None:
    """Append one probe outcome to the log named by ``HF_TIME_PROBE_LOG`` (no-op without it)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown probe category {category!r}; one of {CATEGORIES}")
    path = os.environ.get("HF_TIME_PROBE_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"category": category, "name": name, "ok": bool(ok), "detail": detail}) + "\n")
