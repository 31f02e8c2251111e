"""What every ``hf-time`` command that writes a model shares: the publishing options and the published line.

A module of its own so that sub-command modules (``hf_time.lowrank.cli``, ``hf_time.moe.cli``) use
them without importing :mod:`hf_time.cli`, which imports them (no import circle).
"""

from __future__ import annotations

import argparse


def add_publish_args(p: argparse.ArgumentParser) -> None:
    """The options every command that writes a model shares: where to publish it, and quiet."""
    p.add_argument("--push-to", metavar="REPO_ID", help="publish the result to this Hub repo as one commit")
    p.add_argument("--tag", help="tag the published commit")
    p.add_argument("--private", action="store_true", default=None, help="create the Hub repo private")
    p.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def print_published(pub) -> None:
    """One line per published commit (never the token)."""
    if pub is None:
        return
    state = "new commit" if pub.changed else "unchanged, no new commit"
    print(f"published -> {pub.repo_id}@{pub.commit} ({state}){' tag ' + pub.tag if pub.tag else ''}")
    print(f"  {pub.url}")
