"""On-disk repositories: refs, commits and blobs under one root. No HTTP here.

Layout (everything JSON is written atomically, see :mod:`.blobs`)::

    <root>/repos/<models|datasets|spaces>/<namespace>/<name>/
        repo.json              {"createdAt", "private"}
        refs.json              {"branches": {name: oid}, "tags": {name: oid}, "prs": {"N": oid}}
        commits/<oid>.json     immutable commit records (:mod:`.commits`)
        blobs/sha1|sha256/...  content-addressed file contents

A commit writes its blobs, then its record, and only then moves the branch in ``refs.json``, so a
crash at any point leaves the repository at its previous head. One lock serialises every
read-modify-write of refs, which is what makes concurrent requests safe.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import commits as C
from .blobs import BlobStore, atomic_write_json, read_json
from .errors import AlreadyExists, BadRequest, RepoNotFound, RevisionNotFound, StaleParent
from .rules import DEFAULT_GITATTRIBUTES

REPO_TYPES = ("models", "datasets", "spaces")
# Temporary files of blobs.py (atomic writes, LFS uploads), and how old one must be to be garbage.
_TEMP_PATTERNS = (".tmp-*", ".upload-*")
STALE_TEMP_AGE_S = 300.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
# Top-level URL words that would make /{namespace}/... ambiguous with other routes.
_RESERVED_NAMESPACES = {"api", "datasets", "spaces", "models", "lfs-upload", "lfs-verify"}
# Patterns are used with .match and end in \Z: "$" would also match before a final newline, so
# "name\n" would pass (issue 9, defect 9). Ref names are at most 255 characters (see _split_revision).
_HEX40 = re.compile(r"[0-9a-f]{40}\Z")
_SHORT_SHA = re.compile(r"[0-9a-f]{4,39}\Z")
_REF_NAME = re.compile(r"(?!/)(?!.*//)(?!.*\.\.)[^\x00-\x20~^:?*\[\\]{1,255}(?<!/)(?<!\.lock)\Z")


@dataclass(frozen=True)
class CommitResult:
    """What a commit produced: its oid, and the pull-request number when one was opened."""

    oid: str
    pr_num: int | None = None
    created: bool = True  # False when the operations changed nothing and no commit was made


class Repo:
    """Handle on one existing repository. Obtain it with :meth:`HubStorage.repo`."""

    def __init__(self, path: Path, repo_type: str, repo_id: str, lock: threading.RLock):
        self.path = path
        self.repo_type = repo_type
        self.repo_id = repo_id
        self.blobs = BlobStore(path / "blobs")
        self._lock = lock

    # ---- reading -------------------------------------------------------------------------------
    def meta(self) -> dict:
        """``{"createdAt", "private"}`` as stored at creation."""
        return read_json(self.path / "repo.json")

    def refs(self) -> dict:
        """The current refs: ``{"branches": {...}, "tags": {...}, "prs": {...}}``."""
        return read_json(self.path / "refs.json")

    def blob_path(self, entry: dict) -> Path:
        """Where the content of a tree entry is stored."""
        if entry.get("lfs"):
            return self.blobs.lfs_path(entry["sha256"])
        return self.blobs.regular_path(entry["oid"])

    def read_text(self, entry: dict) -> str:
        """The content of a (small) tree entry as text."""
        return self.blob_path(entry).read_bytes().decode("utf-8", "replace")

    def has_commit(self, oid: str) -> bool:
        """Whether a commit record with this full oid exists."""
        return bool(_HEX40.match(oid)) and (self.path / "commits" / f"{oid}.json").is_file()

    def commit_record(self, oid: str) -> dict:
        """The immutable record of commit ``oid``."""
        if not self.has_commit(oid):
            raise RevisionNotFound(f"Invalid rev id: {oid}")
        return read_json(self.path / "commits" / f"{oid}.json")

    def resolve(self, revision: str | None, refs: dict | None = None) -> str:
        """Turn a revision (branch, tag, ``refs/...``, full or short sha) into a commit oid.

        Args:
            refs: the refs to look in (default: read them now); lets a caller trying many
                candidate names read ``refs.json`` once.

        Raises:
            RevisionNotFound: nothing of that name exists.
        """
        rev = revision or "main"
        refs = refs if refs is not None else self.refs()
        for prefix, kind in (("refs/heads/", "branches"), ("refs/tags/", "tags"), ("refs/pr/", "prs")):
            if rev.startswith(prefix) and rev[len(prefix):] in refs[kind]:
                return refs[kind][rev[len(prefix):]]
        for kind in ("branches", "tags"):
            if rev in refs[kind]:
                return refs[kind][rev]
        if self.has_commit(rev):
            return rev
        if _SHORT_SHA.match(rev):
            found = [p.stem for p in (self.path / "commits").glob(f"{rev}*.json")]
            if len(found) == 1:
                return found[0]
        raise RevisionNotFound(f"Invalid rev id: {rev}")

    def tree(self, revision: str | None) -> tuple[str, dict[str, dict]]:
        """``(commit oid, tree)`` at a revision."""
        oid = self.resolve(revision)
        return oid, self.commit_record(oid)["tree"]

    def history(self, revision: str | None) -> list[tuple[str, dict]]:
        """Every commit reachable from ``revision``, newest first, as ``(oid, record)``."""
        out = []
        oid: str | None = self.resolve(revision)
        while oid is not None:
            record = self.commit_record(oid)
            out.append((oid, record))
            oid = record["parent"]
        return out

    def last_changes(self, revision: str | None, paths: list[str]) -> dict[str, tuple[str, dict]]:
        """For each path (file or folder), the newest commit at or before ``revision`` that changed it."""
        found: dict[str, tuple[str, dict]] = {}
        history = self.history(revision)
        for i, (oid, record) in enumerate(history):
            parent_tree = history[i + 1][1]["tree"] if i + 1 < len(history) else {}
            for path in paths:
                if path not in found and _view(record["tree"], path) != _view(parent_tree, path):
                    found[path] = (oid, record)
            if len(found) == len(paths):
                break
        return found

    # ---- writing -------------------------------------------------------------------------------
    def commit(self, branch: str, ops: list[C.Operation], title: str, message: str = "", *,
               parent: str | None = None, create_pr: bool = False, author: str = "user") -> CommitResult:
        """Apply ``ops`` on top of ``branch`` (or open a pull request from it).

        Args:
            branch: the branch (or `refs/pr/N`) to commit to; it must exist. With ``create_pr`` it is
                the base of the new pull request.
            ops: operations, applied in order.
            title / message: the commit summary and description.
            parent: expected head (full or short oid); a mismatch is refused unless ``create_pr``,
                in which case the PR starts from that commit.
            create_pr: put the commit on a new ``refs/pr/N`` instead of moving the branch.
            author: recorded as the commit author.

        Raises:
            RevisionNotFound: unknown branch or parent.
            StaleParent: ``parent`` is not the branch head.
            EntryNotFound / BadRequest: an operation cannot be applied.
        """
        kind, name = _ref_slot(branch)
        with self._lock:
            refs = self.refs()
            head = refs[kind].get(name)
            if head is None:
                raise RevisionNotFound(f"Invalid rev id: {branch} (the branch does not exist)")
            base = head
            if parent:
                if create_pr:
                    base = self.resolve(parent)
                elif not head.startswith(parent.lower()):
                    raise StaleParent(f"A commit has happened since. Please refresh and try again "
                                      f"(parent {parent} is not the head {head} of {branch!r}).")
            old_tree = self.commit_record(base)["tree"]
            new_tree = C.apply_operations(old_tree, ops, self.blobs)
            if new_tree == old_tree and not create_pr:
                return CommitResult(oid=base, created=False)
            oid, record = C.make_commit(base, new_tree, title, message, author)
            atomic_write_json(self.path / "commits" / f"{oid}.json", record)
            pr_num = None
            if create_pr:
                pr_num = max((int(n) for n in refs["prs"]), default=0) + 1
                refs["prs"][str(pr_num)] = oid
            else:
                refs[kind][name] = oid
            atomic_write_json(self.path / "refs.json", refs)  # the commit becomes visible here
            return CommitResult(oid=oid, pr_num=pr_num)

    def create_ref(self, kind: str, name: str, revision: str | None) -> str:
        """Create a branch or tag ``name`` at ``revision``; return the target oid.

        Raises:
            AlreadyExists: a ref of that kind and name exists.
            BadRequest: the name is not a valid git ref name.
        """
        if not _REF_NAME.match(name) or name.startswith("refs/"):
            raise BadRequest(f"Invalid {'branch' if kind == 'branches' else 'tag'} name: {name!r}")
        with self._lock:
            refs = self.refs()
            if name in refs[kind]:
                raise AlreadyExists(f"Reference already exists: {name}")
            target = self.resolve(revision)
            refs[kind][name] = target
            atomic_write_json(self.path / "refs.json", refs)
            return target

    def delete_ref(self, kind: str, name: str) -> None:
        """Delete a branch or tag. ``main`` cannot be deleted.

        Raises:
            RevisionNotFound: no such ref.
            BadRequest: deleting ``main``.
        """
        if kind == "branches" and name == "main":
            raise BadRequest("The default branch 'main' cannot be deleted")
        with self._lock:
            refs = self.refs()
            if refs[kind].pop(name, None) is None:
                raise RevisionNotFound(f"Invalid rev id: {name}")
            atomic_write_json(self.path / "refs.json", refs)


def _ref_slot(branch: str) -> tuple[str, str]:
    """Where a commit target lives in refs.json: a branch, or an open pull request (``refs/pr/N``)."""
    if branch.startswith("refs/pr/"):
        return "prs", branch[len("refs/pr/"):]
    return "branches", branch.removeprefix("refs/heads/")


def _view(tree: dict[str, dict], path: str) -> object:
    """What a path looks like in a tree: its entry for a file, its sub-tree for a folder."""
    if path in tree:
        return tree[path]
    prefix = path + "/"
    return {p: e for p, e in tree.items() if p.startswith(prefix)}


class HubStorage:
    """All repositories under ``root``. Thread-safe; safe to reopen on the same root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def sweep_temp_files(self, older_than_s: float = STALE_TEMP_AGE_S) -> tuple[int, int]:
        """Delete temporary files that writers left behind when they were killed mid-write.

        Every write goes through a ``.tmp-*`` or ``.upload-*`` file that is renamed into place, so
        one left over is garbage; only old ones are removed, because another process may be
        writing a fresh one right now (a live upload touches its file at least every MiB).

        Returns:
            ``(files removed, bytes freed)``.
        """
        cutoff = time.time() - older_than_s
        count = size = 0
        for pattern in _TEMP_PATTERNS:
            for path in (self.root / "repos").rglob(pattern):
                try:
                    stat = path.stat()
                    if stat.st_mtime < cutoff and path.is_file():
                        path.unlink()
                        count, size = count + 1, size + stat.st_size
                except FileNotFoundError:  # renamed into place or removed meanwhile: not ours
                    continue
        return count, size

    def _path(self, repo_type: str, repo_id: str) -> Path:
        if repo_type not in REPO_TYPES:
            raise BadRequest(f"Unknown repo type {repo_type!r}; expected one of {REPO_TYPES}")
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(_NAME.match(p) for p in parts) or any(p.endswith(".git") for p in parts):
            raise RepoNotFound(f"Repository Not Found for {repo_type}/{repo_id}: invalid repo id")
        return self.root / "repos" / repo_type / parts[0] / parts[1]

    def repo_ids(self, repo_type: str) -> list[str]:
        """The ids (``namespace/name``) of every repository of one type, sorted; private ones included.

        Raises:
            BadRequest: unknown repository type.
        """
        if repo_type not in REPO_TYPES:
            raise BadRequest(f"Unknown repo type {repo_type!r}; expected one of {REPO_TYPES}")
        # refs.json is what makes a repository exist (create_repo writes it last, delete removes it first).
        found = (self.root / "repos" / repo_type).glob("*/*/refs.json")
        return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in found)

    def exists(self, repo_type: str, repo_id: str) -> bool:
        """Whether the repository exists."""
        try:
            return (self._path(repo_type, repo_id) / "refs.json").is_file()
        except (RepoNotFound, BadRequest):
            return False

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        """Open an existing repository.

        Raises:
            RepoNotFound: it does not exist.
        """
        path = self._path(repo_type, repo_id)
        if not (path / "refs.json").is_file():
            raise RepoNotFound(f"Repository Not Found for {repo_type}/{repo_id}")
        return Repo(path, repo_type, repo_id, self._lock)

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool = False, author: str = "user") -> Repo:
        """Create a repository whose ``main`` holds one initial commit with a ``.gitattributes``.

        Raises:
            AlreadyExists: the repository exists.
            RepoNotFound / BadRequest: the id or type is invalid.
        """
        path = self._path(repo_type, repo_id)
        if repo_id.split("/")[0].lower() in _RESERVED_NAMESPACES:
            raise BadRequest(f"{repo_id.split('/')[0]!r} is a reserved namespace")
        with self._lock:
            if (path / "refs.json").is_file():
                raise AlreadyExists(f"You already created this {repo_type[:-1]} repo: {repo_id}")
            repo = Repo(path, repo_type, repo_id, self._lock)
            ops = [C.AddFile(".gitattributes", DEFAULT_GITATTRIBUTES.encode())]
            tree = C.apply_operations({}, ops, repo.blobs)
            oid, record = C.make_commit(None, tree, "initial commit", "", author)
            atomic_write_json(path / "commits" / f"{oid}.json", record)
            atomic_write_json(path / "repo.json", {"createdAt": record["date"], "private": private})
            # refs.json last: its presence is what makes the repository exist.
            atomic_write_json(path / "refs.json", {"branches": {"main": oid}, "tags": {}, "prs": {}})
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        """Delete a repository and everything in it.

        Raises:
            RepoNotFound: it does not exist.
        """
        repo = self.repo(repo_type, repo_id)
        with self._lock:
            # Remove the marker first so the repository disappears atomically for readers.
            (repo.path / "refs.json").unlink()
            shutil.rmtree(repo.path, ignore_errors=True)
