"""Every network call hf_time makes goes through this module.

:class:`Hub` wraps one ``HfApi`` (endpoint + token) and offers the few operations the rest of the
library needs: resolve a reference to a commit sha, read configs and safetensors headers *without
downloading weights*, download selected files at a pinned sha, and publish a folder as ONE commit
(optionally tagged). Local folders are accepted everywhere a Hub reference is, so callers never
branch on where a model lives.

Tokens are passed through to huggingface_hub and never logged or put in messages.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import urlparse

from hf_time import hub_retry
from hf_time.hashing import git_blob_sha1, known_sha256, sha256_file
from hf_time.errors import (
    CorruptCheckpointError, HubConnectionError, HubRequestError, InvalidReferenceError, MissingWeightsError,
    PublishError, RepoNotFoundError, RevisionNotFoundError,
)
from hf_time.hub_retry import redact
from hf_time.io import TensorInfo, read_safetensors_header, weight_files
from hf_time.lineage import LINEAGE_FILE, Lineage
from hf_time.refs import ModelRef, ResolvedRef, parse_ref

logger = logging.getLogger(__name__)

# What a merge needs from a model repo: configs, weights and tokenizer files — never the whole repo.
MODEL_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "vocab.*", "merges.txt", "*.jinja"]
PICKLE_PATTERNS = ["pytorch_model*.bin"]


def _is_loopback(endpoint: str | None) -> bool:
    host = urlparse(endpoint or "").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :meth:`Hub.publish`.

    Attributes:
        repo_id: the target repository.
        commit: the commit sha that holds the published content.
        url: a browsable URL of that commit's tree.
        tag: the tag that points at ``commit`` (None if none was asked for).
        changed: False when the content was already there (no new commit was made).
    """

    repo_id: str
    commit: str
    url: str
    tag: str | None
    changed: bool


class Hub:
    """A Hub client bound to one endpoint and token.

    Args:
        endpoint: Hub URL; None means ``HF_ENDPOINT`` or huggingface.co.
        token: a token, False for anonymous, None for the ambient one (``HF_TOKEN`` / login).
    """

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None):
        from huggingface_hub import HfApi, constants

        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        if _is_loopback(self.endpoint):
            # The embedded Hub speaks plain LFS, and huggingface_hub >= 1.20 would otherwise push every
            # LFS file through Xet without asking the server (hub-protocol.md §3.8).
            constants.HF_HUB_DISABLE_XET = True
        self.api = HfApi(endpoint=self.endpoint, token=token)
        self._token = token
        self.display = redact(self.endpoint)  # what messages show: never credentials in the URL

    def _net(self, what: str, fn):
        """One network call with bounded retries and typed errors (:mod:`hf_time.hub_retry`)."""
        return hub_retry.call(fn, what=what, endpoint=self.endpoint)

    # -- resolving --------------------------------------------------------------------------------
    def resolve(self, ref: str | ModelRef) -> ResolvedRef:
        """Pin a reference: a Hub ref to the commit sha its revision points at now; a folder as is.

        Raises:
            RepoNotFoundError, RevisionNotFoundError: with the repo/revision named.
        """
        ref = parse_ref(ref)
        if ref.is_local:
            return ResolvedRef(ref, None)
        info = self._call(ref, lambda: self.api.model_info(ref.repo_id, revision=ref.revision))
        return ResolvedRef(ref, info.sha)

    def _call(self, ref: ModelRef, fn, what: str | None = None):
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        try:
            return self._net(what or f"reading {ref}", fn)
        except HfRevisionNotFound:
            raise RevisionNotFoundError(
                f"revision {ref.revision!r} not found in {ref.repo_id} on {self.display}; "
                "use an existing branch, tag or commit sha"
            ) from None
        except RepositoryNotFoundError:
            raise RepoNotFoundError(
                f"repository {ref.repo_id!r} not found on {self.display}; check the id, "
                "or set HF_TOKEN to a token that can read it"
            ) from None

    # -- metadata without weights -----------------------------------------------------------------
    def list_files(self, res: ResolvedRef) -> list[str]:
        """Paths of all files of the model at the pinned revision."""
        if res.ref.is_local:
            root = res.ref.path
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        return self._call(res.ref, lambda: self.api.list_repo_files(res.ref.repo_id, revision=res.sha))

    def read_json(self, res: ResolvedRef, filename: str) -> dict | None:
        """A JSON object file of the model (e.g. ``config.json``), or None if it does not exist.

        Raises:
            CorruptCheckpointError: the file is not a JSON object (named with its reference).
        """
        if res.ref.is_local:
            path = res.ref.path / filename
            if not path.is_file():
                return None
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = Path(self._call(res.ref, lambda: hf_hub_download(
                    res.ref.repo_id, filename, revision=res.sha, endpoint=self.endpoint, token=self._token),
                    what=f"reading {filename} of {res.ref}"))
            except EntryNotFoundError:
                return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptCheckpointError(f"{filename} of {res.ref} is not valid JSON ({e}); fix or re-upload it") from None
        if not isinstance(data, dict):
            raise CorruptCheckpointError(f"{filename} of {res.ref} is a JSON {type(data).__name__}, not an object")
        return data

    def read_lineage(self, res: ResolvedRef) -> Lineage | None:
        """The model's ``hf_time.json`` as a :class:`~hf_time.lineage.Lineage`, or None if it has none.

        Raises:
            ConfigError: the file is not an hf_time lineage (named with its reference).
        """
        data = self.read_json(res, LINEAGE_FILE)
        return None if data is None else Lineage.from_dict(data, f"{res.ref}/{LINEAGE_FILE}")

    def tensor_infos(self, res: ResolvedRef) -> dict[str, TensorInfo] | None:
        """Names, dtypes and shapes of all weights, read from safetensors headers only.

        On the Hub this uses HTTP range requests for the headers, so no weight is downloaded.
        Returns None when the model has no safetensors weights (pickle-only or no weights at all).
        """
        if res.ref.is_local:
            files, is_pickle = weight_files(res.ref.path)
            if is_pickle:
                return None
            infos: dict[str, TensorInfo] = {}
            for f in files:
                infos.update(read_safetensors_header(res.ref.path / f))
            return infos
        from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError

        try:
            meta = self._call(res.ref, lambda: self.api.get_safetensors_metadata(res.ref.repo_id, revision=res.sha),
                              what=f"reading the safetensors headers of {res.ref}")
        except NotASafetensorsRepoError:
            return None
        except SafetensorsParsingError as e:
            raise CorruptCheckpointError(f"the safetensors headers of {res.ref} cannot be parsed ({str(e)[:200]}); "
                                         "the files are corrupt or not safetensors") from None
        infos = {}
        for fmeta in meta.files_metadata.values():
            for name, t in fmeta.tensors.items():
                infos[name] = TensorInfo(name, t.dtype, tuple(t.shape))
        return infos

    def safetensors_file(self, res: ResolvedRef, filename: str) -> tuple[dict[str, str], dict[str, TensorInfo]] | None:
        """Metadata and tensor infos of one safetensors file of the model (header only); None if it has no such file."""
        if res.ref.is_local:
            path = res.ref.path / filename
            if not path.is_file():
                return None
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return dict(f.metadata() or {}), read_safetensors_header(path)
        if filename not in self.list_files(res):
            return None
        meta = self._call(res.ref, lambda: self.api.parse_safetensors_file_metadata(res.ref.repo_id, filename,
                                                                                  revision=res.sha),
                          what=f"reading the header of {filename} of {res.ref}")
        return dict(meta.metadata or {}), {n: TensorInfo(n, t.dtype, tuple(t.shape)) for n, t in meta.tensors.items()}

    def file_hashes(self, res: ResolvedRef, files: list[str]) -> dict[str, dict[str, str]]:
        """Content ids of ``files`` without downloading them: ``sha256`` (LFS files, local files) and/or git ``blob`` ids."""
        if res.ref.is_local:
            return {f: {"sha256": sha256_file(res.ref.path / f), "blob": git_blob_sha1(res.ref.path / f)} for f in files}
        from huggingface_hub.hf_api import RepoFile

        tree = {e.path: e for e in self._call(res.ref, lambda: list(self.api.list_repo_tree(
            res.ref.repo_id, revision=res.sha, recursive=True)), what=f"listing {res.ref}") if isinstance(e, RepoFile)}
        return {f: ({"sha256": tree[f].lfs.sha256} if tree[f].lfs is not None else {"blob": tree[f].blob_id})
                for f in files if f in tree}

    def add_files(self, repo_id: str, files: dict[str, Path], *, commit_message: str, commit_description: str = "",
                  branch: str = "main") -> PublishResult:
        """Add (or replace) ``files`` (path in repo -> local file) in ``repo_id@branch`` as ONE commit, keeping the rest."""
        head = self._net(f"reading {repo_id}@{branch}", lambda: self.api.model_info(repo_id, revision=branch).sha)
        ops = _additions(sorted(files.items()))
        commit = self._net(f"committing to {repo_id}", lambda: self.api.create_commit(
            repo_id, operations=ops, commit_message=commit_message, commit_description=commit_description,
            revision=branch, parent_commit=head)).oid
        return PublishResult(repo_id, commit, f"{self.display}/{repo_id}/tree/{commit}", None, commit != head)

    # -- downloading ------------------------------------------------------------------------------
    def download(self, res: ResolvedRef, allow_patterns: list[str] | None = None) -> Path:
        """Download the selected files at the pinned sha (a no-op for local folders).

        Returns the local folder holding them (inside the HF cache).
        """
        if res.ref.is_local:
            return res.ref.path
        from huggingface_hub import snapshot_download

        path = self._call(res.ref, lambda: snapshot_download(
            res.ref.repo_id, revision=res.sha, allow_patterns=allow_patterns or MODEL_PATTERNS, endpoint=self.endpoint,
            token=self._token), what=f"downloading {res.pinned}")
        return Path(path)

    def download_dataset(self, ref: str) -> tuple[Path, str]:
        """Pin a Hub dataset ``org/name[@rev]`` to its commit sha and download its files there.

        Returns:
            (local folder, commit sha).

        Raises:
            RepoNotFoundError: the dataset or revision does not exist (or is not readable).
        """
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        repo_id, _, revision = ref.partition("@")
        try:
            sha = self._net(f"resolving dataset {ref}", lambda: self.api.dataset_info(repo_id, revision=revision or None).sha)
            folder = self._net(f"downloading dataset {repo_id}@{sha}", lambda: snapshot_download(
                repo_id, repo_type="dataset", revision=sha, endpoint=self.endpoint, token=self._token))
        except (RepositoryNotFoundError, HfRevisionNotFound):
            raise RepoNotFoundError(f"dataset {ref!r} not found on {self.display}; check the id and revision, "
                                    "or set HF_TOKEN to a token that can read it") from None
        return Path(folder), sha

    def list_tags(self, repo_id: str) -> dict[str, str] | None:
        """Tag name -> commit sha of a model repo, or None when the repo does not exist."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            refs = self._net(f"listing the tags of {repo_id}", lambda: self.api.list_repo_refs(repo_id))
        except RepositoryNotFoundError:
            return None
        return {t.name: t.target_commit for t in refs.tags}

    # -- publishing -------------------------------------------------------------------------------
    def check_publish(self, repo_id: str) -> None:
        """Everything about publishing to ``repo_id`` that can be known before any work: a valid repo
        id, and a token the Hub accepts and that may write. Called before anything is downloaded.

        Raises:
            InvalidReferenceError: not a repo id (``org/name``).
            PublishError: no token, a refused token, or a read-only token (each with the fix).
        """
        from huggingface_hub.errors import LocalTokenNotFoundError

        ref = parse_ref(repo_id)
        if ref.is_local or ref.revision or "/" not in repo_id:
            raise InvalidReferenceError(f"--push-to {repo_id!r} is not a repo id; write 'namespace/name'")
        try:
            if self._token is False:
                raise LocalTokenNotFoundError("anonymous client")
            info = self._net(f"checking the token for {repo_id}", lambda: self.api.whoami())
        except LocalTokenNotFoundError:
            raise PublishError(f"publishing to {repo_id} needs a token: set HF_TOKEN or run `hf auth login`") from None
        except HubRequestError as e:
            raise PublishError(f"publishing to {repo_id}: {e}") from None
        role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            raise PublishError(f"publishing to {repo_id}: the token is read-only; use a token with write access")

    def tag_lineage(self, repo_id: str, tag: str) -> tuple[str, Lineage | None] | None:
        """(commit, lineage) of an existing ``repo_id@tag``, or None when the repo or the tag does not exist."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            target = self._tag_target(repo_id, tag)
        except RepositoryNotFoundError:
            return None
        if target is None:
            return None
        return target, self.read_lineage(ResolvedRef(parse_ref(f"{repo_id}@{target}"), target))

    def publish(
        self,
        folder: str | os.PathLike,
        repo_id: str,
        *,
        commit_message: str,
        commit_description: str = "",
        tag: str | None = None,
        private: bool | None = None,
        branch: str = "main",
    ) -> PublishResult:
        """Make ``repo_id@branch`` hold exactly the files of ``folder``, as ONE commit.

        Files of the repo that are not in ``folder`` (other than ``.gitattributes``) are deleted in
        the same commit, so a snapshot never mixes shards of two merges. Publishing identical content
        makes no commit. With ``tag``, the tag is created on the resulting commit; an existing tag is
        accepted only if it already points at that commit.

        Raises:
            PublishError: the tag exists and points at another commit.
        """
        from huggingface_hub import CommitOperationDelete

        folder = Path(folder)
        local = sorted(str(p.relative_to(folder)).replace(os.sep, "/") for p in folder.rglob("*") if p.is_file())
        self._net(f"creating {repo_id}", lambda: self.api.create_repo(repo_id, exist_ok=True, private=private))
        if tag is not None:
            self._check_tag_free(repo_id, tag, folder, local)
        head_before = self._net(f"reading {repo_id}@{branch}", lambda: self.api.model_info(repo_id, revision=branch).sha)
        if self._same_content(repo_id, head_before, folder, local):  # re-publish: nothing to commit
            if tag is not None:
                self._tag(repo_id, tag, head_before)
            logger.info("%s@%s already holds this content; no commit made", repo_id, head_before[:10])
            return PublishResult(repo_id, head_before, f"{self.display}/{repo_id}/tree/{head_before}", tag, False)
        remote = set(self._net(f"listing {repo_id}@{branch}", lambda: self.api.list_repo_files(repo_id, revision=branch)))
        ops: list = _additions((p, folder / p) for p in local)
        ops += [CommitOperationDelete(path_in_repo=p) for p in sorted(remote - set(local) - {".gitattributes"})]
        # parent_commit makes a retried or concurrent commit fail instead of landing twice or on top of
        # someone else's: the branch moves only from the head this publish compared against.
        try:
            commit = self._net(f"committing to {repo_id}", lambda: self.api.create_commit(
                repo_id, operations=ops, commit_message=commit_message, commit_description=commit_description,
                revision=branch, parent_commit=head_before)).oid
        except (HubConnectionError, HubRequestError) as e:
            commit = self._landed(repo_id, branch, head_before, folder, local, e)
        changed = commit != head_before
        if tag is not None:
            self._tag(repo_id, tag, commit)
        url = f"{self.display}/{repo_id}/tree/{commit}"
        logger.info("published %s@%s (%s)", repo_id, commit[:10], "new commit" if changed else "unchanged")
        return PublishResult(repo_id=repo_id, commit=commit, url=url, tag=tag, changed=changed)

    def preupload(self, folder: str | os.PathLike, repo_id: str, *, patterns: Sequence[str] = ("*.safetensors",),
                  private: bool | None = None) -> list[str]:
        """Upload the large files of ``folder`` matching ``patterns`` to ``repo_id``'s LFS storage, without
        committing anything, ahead of a :meth:`publish` of the same bytes.

        Nothing becomes visible: LFS objects enter a repo only through a commit. The later publish
        then finds them on the Hub and sends only the small files, so a caller can upload the weights
        while it does other work (the timeline, while it evaluates the model it is about to publish).
        Files the Hub stores as regular git blobs are left to the publish.

        Returns:
            The paths (relative to ``folder``) that were offered for upload.
        """
        folder = Path(folder)
        paths = sorted({p.relative_to(folder).as_posix() for pattern in patterns for p in folder.glob(pattern)
                        if p.is_file()})
        if not paths:
            return []
        self._net(f"creating {repo_id}", lambda: self.api.create_repo(repo_id, exist_ok=True, private=private))
        ops = _additions((p, folder / p) for p in paths)
        self._net(f"uploading the weights of {folder.name} to {repo_id}",
                  lambda: self.api.preupload_lfs_files(repo_id, additions=ops))
        return paths

    def _landed(self, repo_id: str, branch: str, head_before: str, folder: Path, local: list[str],
                error: Exception) -> str:
        """After a failed commit call: the new head if our commit landed anyway (its answer was lost),
        else a PublishError saying what happened (the branch moved, or the Hub failed)."""
        try:
            head = self._net(f"reading {repo_id}@{branch}", lambda: self.api.model_info(repo_id, revision=branch).sha)
        except (HubConnectionError, HubRequestError):
            raise error from None
        if head != head_before and self._same_content(repo_id, head, folder, local):
            logger.info("the commit to %s landed although its answer was lost", repo_id)
            return head
        if head != head_before:
            raise PublishError(f"{repo_id}@{branch} moved to {head[:10]} while publishing (another writer committed); "
                               "nothing was committed: publish again on top of it") from None
        raise error from None

    def _tag_target(self, repo_id: str, tag: str) -> str | None:
        refs = self._net(f"listing the tags of {repo_id}", lambda: self.api.list_repo_refs(repo_id))
        return next((t.target_commit for t in refs.tags if t.name == tag), None)

    def _check_tag_free(self, repo_id: str, tag: str, folder: Path, local: list[str]) -> None:
        # Checked before committing so that a clash leaves the branch untouched: an existing tag is
        # fine only if the commit it points at already holds exactly this content (a re-publish).
        target = self._tag_target(repo_id, tag)
        if target is not None and not self._same_content(repo_id, target, folder, local):
            raise PublishError(
                f"tag {tag!r} already exists in {repo_id} at commit {target[:10]} with other content; "
                "choose another tag or delete the old one"
            )

    def _same_content(self, repo_id: str, revision: str, folder: Path, local: list[str]) -> bool:
        """Whether ``repo_id@revision`` holds exactly the files of ``folder`` (by git / LFS oids)."""
        from huggingface_hub.hf_api import RepoFile

        remote = {
            e.path: e
            for e in self._net(f"listing {repo_id}@{revision[:10]}",
                               lambda: list(self.api.list_repo_tree(repo_id, revision=revision, recursive=True)))
            # The Hub makes its own .gitattributes: it counts only when the folder has one too (a model
            # folder copied from the Hub does, and re-publishing it must not make an empty commit).
            if isinstance(e, RepoFile) and (e.path != ".gitattributes" or ".gitattributes" in local)
        }
        if set(remote) != set(local):
            return False
        for path in local:
            entry, data_path = remote[path], folder / path
            if entry.lfs is not None:
                if entry.lfs.sha256 != sha256_file(data_path):
                    return False
            elif entry.blob_id != git_blob_sha1(data_path):
                return False
        return True

    def _tag(self, repo_id: str, tag: str, commit: str) -> None:
        target = self._tag_target(repo_id, tag)
        if target == commit:
            return
        if target is not None:
            raise PublishError(
                f"tag {tag!r} already exists in {repo_id} at commit {target[:10]} with other content; "
                "choose another tag or delete the old one"
            )
        self._net(f"tagging {repo_id}@{commit[:10]} as {tag}", lambda: self.api.create_tag(repo_id, tag=tag, revision=commit))


def _additions(files: Iterable[tuple[str, Path]]) -> list:
    """A ``CommitOperationAdd`` per (path in the repo, local file), each handed the sha256 this process
    already knows for the file (its lineage hashed it when the snapshot was written), so that
    huggingface_hub does not read and hash hundreds of megabytes again before uploading them. Files
    whose digest is unknown are hashed by huggingface_hub as before."""
    from huggingface_hub import CommitOperationAdd

    ops = []
    for path_in_repo, local in files:
        op = CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=str(local))
        info, digest = getattr(op, "upload_info", None), known_sha256(local)
        # huggingface_hub versions that hash lazily say so with is_hashed; older ones have hashed already
        if digest is not None and info is not None and not getattr(info, "is_hashed", True):
            info.sha256 = bytes.fromhex(digest)
        ops.append(op)
    return ops


def require_weights(infos: dict[str, TensorInfo] | None, res: ResolvedRef, allow_pickle: bool, files: list[str]) -> None:
    """Raise the right error when a model has no safetensors weights.

    Raises:
        UnsafeCheckpointError: only pickle weights and ``allow_pickle`` is False.
        MissingWeightsError: no weights at all.
    """
    if infos is not None:
        return
    from hf_time.errors import UnsafeCheckpointError

    if any(f.endswith(".bin") for f in files):
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{res.ref} only has pickle weights (.bin); pickle can run arbitrary code. "
                "Convert it to safetensors, or pass --allow-pickle (loads with torch.load(weights_only=True))"
            )
        return
    raise MissingWeightsError(f"{res.ref} has no model weights (no *.safetensors or pytorch_model*.bin files)")
