"""What ``hf-time`` commands share: the publishing options, the published line, start-up imports without the
garbage collector.

A module of its own so that sub-command modules (``hf_time.lowrank.cli``, ``hf_time.moe.cli``) use
them without importing :mod:`hf_time.cli`, which imports them (no import circle).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from collections.abc import Iterator


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


@contextlib.contextmanager
def startup_imports() -> Iterator[None]:
    """A command's heavy imports (torch, transformers, datasets) with the cyclic garbage collector paused,
    then what they made moved to the permanent generation (:func:`gc.freeze`).

    Importing torch and hf_time makes a few hundred thousand objects that live as long as the process
    (modules, classes, functions). The collector walks them again and again while they are made (three
    full collections during ``import hf_time.api``), and every later full collection walks them too,
    for nothing: none of them is garbage. For ``hf-time merge`` at 271M that was ~0.6 s of a 4 s command
    (``benchmarks/issue13_fifth_pass.log``). Only the CLI does this: the library never touches the
    collector of a process it is imported into.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
