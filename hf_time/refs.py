"""Model references: ``org/name[@revision]`` on the Hub, or a local folder.

A reference is parsed once here and carried as a typed value; it becomes *pinned* when
:mod:`hf_time.hub` resolves it to a commit sha (:class:`ResolvedRef`), and that sha is what every
later download and every lineage record uses.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hf_time.errors import InvalidReferenceError, RepoNotFoundError

# Hub repo ids: optional namespace, then name; letters, digits, '-', '_', '.'.
# \Z, not $: "$" also matches before a trailing newline, and "org/name\n" is not a repo id.
_REPO_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")
_SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")
_REVISION_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,200}\Z")  # a branch, tag or sha: no whitespace or control bytes


@dataclass(frozen=True)
class ModelRef:
    """A model on the Hub (``repo_id`` + optional ``revision``) or in a local folder (``path``)."""

    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def is_pinned(self) -> bool:
        """True for local folders and for Hub refs whose revision is a full commit sha."""
        return self.is_local or bool(self.revision and _SHA_RE.match(self.revision))

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)


@dataclass(frozen=True)
class ResolvedRef:
    """A reference pinned to what was actually read: a commit sha on the Hub, or a local folder.

    Attributes:
        ref: the reference as the user wrote it.
        sha: the commit sha (None for local folders).
    """

    ref: ModelRef
    sha: str | None

    @property
    def pinned(self) -> str:
        """``org/name@<sha>`` for Hub refs, the absolute path for local folders."""
        if self.ref.is_local:
            return str(self.ref.path)
        return f"{self.ref.repo_id}@{self.sha}"

    def __str__(self) -> str:
        return self.pinned


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..") or os.sep in text.split("@")[0] and os.path.exists(text)


def parse_ref(text: str | os.PathLike | ModelRef) -> ModelRef:
    """Parse ``org/name[@revision]`` or a local path into a :class:`ModelRef`.

    An existing local directory wins over a Hub id with the same spelling (as transformers does).

    Raises:
        InvalidReferenceError: the text is neither a valid repo id nor an existing path.
        RepoNotFoundError: the text is clearly a path (starts with /, ./, ~) but does not exist.
    """
    if isinstance(text, ModelRef):
        return text
    if not isinstance(text, (str, os.PathLike)):
        raise InvalidReferenceError(f"model reference {text!r} is not text; expected 'org/name[@revision]' or a local folder")
    raw = os.fspath(text)
    raw = raw.strip() if isinstance(raw, str) else os.fsdecode(raw).strip()
    if not raw:
        raise InvalidReferenceError("empty model reference; expected 'org/name[@revision]' or a local folder")
    if "\x00" in raw:
        raise InvalidReferenceError(f"model reference {raw!r} contains a NUL byte")
    if os.path.isdir(os.path.expanduser(raw)):
        return ModelRef(path=Path(os.path.expanduser(raw)).resolve())
    if _looks_like_path(raw):
        raise RepoNotFoundError(f"local model folder {raw!r} does not exist; check the path")
    repo_id, sep, revision = raw.partition("@")
    if sep and not revision:
        raise InvalidReferenceError(f"model reference {raw!r} has an empty revision after '@'; write 'org/name@<branch|tag|sha>'")
    if sep and not _REVISION_RE.match(revision):
        raise InvalidReferenceError(f"model reference {raw!r}: the revision after '@' must be a branch, tag or commit sha "
                                    "without spaces or control characters")
    if not _REPO_RE.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise InvalidReferenceError(
            f"invalid model reference {raw!r}: expected a Hub id 'org/name[@revision]' or an existing local folder"
        )
    return ModelRef(repo_id=repo_id, revision=revision or None)
