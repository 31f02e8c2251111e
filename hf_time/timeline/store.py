"""Where timeline nodes live: a local cache keyed by content, and their published copies on the Hub.

A node folder is a complete model folder whose lineage (``hf_time.json``) has a ``timeline`` section
naming the node: ``{"node": {"kind", "step", "key"}}``. The local cache (``CACHE/nodes/<label>-<key[:16]>``) is written atomically and may be
shared by several timelines (a grid reuses the experts of identical steps); the Hub copy is found by
tag (``step-t``) in the repos of :class:`Repos` and trusted only if its recorded key matches. Every
Hub call goes through :class:`hf_time.hub.Hub`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from hf_time.errors import ConfigError, RepoNotFoundError, RevisionNotFoundError
from hf_time.hub import MODEL_PATTERNS, Hub
from hf_time.lineage import Lineage
from hf_time.lineage import node_section as lineage_node_section
from hf_time.timeline.state import NodeRecord
from hf_time.timeline.strategies import Node

logger = logging.getLogger(__name__)

# What a node folder needs beyond MODEL_PATTERNS: PEFT adapters and sentence-transformers metadata.
NODE_PATTERNS = MODEL_PATTERNS + ["adapter_config.json", "adapter_model.safetensors", "1_Pooling/*"]


@dataclass(frozen=True)
class Repos:
    """The three repos of a timeline (see :mod:`hf_time.timeline.runner` for the layout)."""

    timeline: str
    experts: str
    running: str

    @classmethod
    def for_timeline(cls, repo_id: str) -> "Repos":
        return cls(repo_id, f"{repo_id}-experts", f"{repo_id}-running")

    def candidates(self, node: Node) -> list[tuple[str, str]]:
        """(repo, tag) pairs where a published copy of ``node`` may be, most likely first."""
        tag = f"step-{node.step}"
        if node.kind == "expert":
            return [(self.experts, tag)]
        return [(self.timeline, tag), (self.running, tag)]


def node_section(repo: str, node: Node) -> dict[str, Any]:
    """The ``timeline`` section of a node's lineage (:func:`hf_time.lineage.node_section`)."""
    return lineage_node_section(repo, node.kind, node.step, node.key)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no copy of gigabytes), copying across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(os.path.realpath(src), dst)
    except OSError:
        shutil.copyfile(src, dst)


def copy_tree(src: Path, dst: Path, *, skip: Iterable[str] = ()) -> list[str]:
    """Link every file of ``src`` into ``dst`` except the relative paths in ``skip``."""
    skip = set(skip)
    done = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if p.is_file() and rel not in skip and not rel.startswith("."):
            link_or_copy(p, dst / rel)
            done.append(rel)
    return done


class NodeStore:
    """Finds node folders locally or on the Hub and remembers their pinned Hub records.

    Args:
        hub: the Hub client.
        cache_dir: the local cache root (``nodes/`` below it).
        repos: the timeline's repos.
    """

    def __init__(self, hub: Hub, cache_dir: str | os.PathLike, repos: Repos):
        self.hub = hub
        self.root = Path(cache_dir) / "nodes"
        self.repos = repos
        self.folders: dict[str, Path] = {}
        self.records: dict[str, NodeRecord] = {}

    def path(self, node: Node, suffix: str = "") -> Path:
        return self.root / f"{node.label}-{node.key[:16]}{suffix}"

    def remember(self, node: Node, folder: Path | None = None, record: NodeRecord | None = None) -> None:
        if folder is not None:
            self.folders[node.key] = Path(folder)
        if record is not None:
            self.records[node.key] = record

    def local(self, node: Node) -> Path | None:
        """The cached folder of ``node`` (checked by key), or None."""
        if node.key in self.folders:
            return self.folders[node.key]
        folder = self.path(node)
        try:
            lineage = Lineage.load(folder)
        except ConfigError as e:  # a torn cache entry (killed mid-write elsewhere): recompute it
            logger.warning("ignoring cached %s: %s", node.label, e)
            return None
        if lineage is not None and lineage.node_key == node.key:
            self.folders[node.key] = folder
            return folder
        return None

    def find(self, node: Node) -> NodeRecord | None:
        """The pinned Hub record of ``node``: remembered, or looked up by tag and checked by key."""
        if node.key in self.records:
            return self.records[node.key]
        for repo, tag in self.repos.candidates(node):
            try:
                res = self.hub.resolve(f"{repo}@{tag}")
            except (RepoNotFoundError, RevisionNotFoundError):
                continue
            lineage = self.hub.read_lineage(res)
            if lineage is not None and lineage.node_key == node.key:
                record = NodeRecord(node.kind, node.step, node.key, repo, res.sha, tag)
                self.records[node.key] = record
                return record
            logger.info("%s@%s holds another %s (key differs); not reused", repo, tag, node.label)
        return None

    def download(self, record: NodeRecord) -> Path:
        """Download a published node at its pinned sha (into the HF cache) and return the folder."""
        folder = self.hub.download(self.hub.resolve(record.pinned), NODE_PATTERNS)
        logger.info("downloaded %s from %s", record.label, record.pinned)
        return folder

    def publish(self, node: Node, folder: Path, repo: str, *, message: str, private: bool = False) -> NodeRecord:
        """Publish ``folder`` as one commit of ``repo`` tagged ``step-t`` and remember the record."""
        tag = f"step-{node.step}"
        pub = self.hub.publish(folder, repo, tag=tag, private=private or None, commit_message=message)
        record = NodeRecord(node.kind, node.step, node.key, repo, pub.commit, tag)
        self.records[node.key] = record
        return record
