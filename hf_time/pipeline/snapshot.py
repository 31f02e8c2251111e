"""The snapshot stage: the one writer of a model folder's metadata files.

A snapshot is an artifact's folder (weights and carried base files, written by an executor) plus, written
here and nowhere else: ``hf_time.json`` (from the :class:`~hf_time.lineage.Lineage` only),
``merge_config.yaml`` (derived from that lineage: the pinned, reproducible config of a merge or
fold), the card ``README.md`` (rendered once by the caller) and any extra files a timeline adds
(its state, its plot). Publishing the folder is then one commit (:meth:`hf_time.hub.Hub.publish`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import yaml

from hf_time.lineage import Lineage

if TYPE_CHECKING:
    from hf_time.hub import Hub, PublishResult

MERGE_CONFIG_FILE = "merge_config.yaml"
CARD_FILE = "README.md"


def write_snapshot(folder: str | Path, lineage: Lineage, *, card: str | None,
                   extra: Mapping[str, str | bytes] | None = None) -> Path:
    """Write the metadata files of a snapshot into ``folder`` (which already holds its weights).

    Args:
        folder: the snapshot folder (normally the temporary folder of an atomic output).
        lineage: what was done; becomes ``hf_time.json`` and, for merges, ``merge_config.yaml``.
        card: the rendered ``README.md`` (None: no card, e.g. a timeline's local node cache).
        extra: further files by name (text or bytes).

    Returns:
        The folder.
    """
    folder = Path(folder)
    lineage.save(folder)
    config = lineage.merge_config()
    if config is not None:
        (folder / MERGE_CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    if card is not None:
        (folder / CARD_FILE).write_text(card)
    for name, content in (extra or {}).items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


def publish_snapshot(hub: Hub, folder: str | Path, repo_id: str | None, lineage: Lineage, *, message: str,
                     tag: str | None = None, private: bool | None = None) -> PublishResult | None:
    """Publish a written snapshot as one commit whose description pins its inputs (None without ``repo_id``)."""
    if not repo_id:
        return None
    return hub.publish(folder, repo_id, tag=tag, private=private, commit_message=message,
                       commit_description="Inputs: " + ", ".join(r.pinned for r in lineage.inputs()))
