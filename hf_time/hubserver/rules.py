"""The Hub's content rules: which files go to LFS, which are ignored, what a card's metadata is.

Pure functions over bytes and strings, shared by the storage and HTTP layers.
"""

from __future__ import annotations

import fnmatch

# The Hub stores anything this big through LFS, whatever its name (10 MB, as huggingface.co).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

_LFS_SUFFIX = " filter=lfs diff=lfs merge=lfs -text"
_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    "*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif", "*.mp3", "*.wav", "*.flac", "*.ogg", "*.mp4",
)
# Every new repository starts with this file in its initial commit, as on the Hub.
DEFAULT_GITATTRIBUTES = "".join(f"{p}{_LFS_SUFFIX}\n" for p in _LFS_PATTERNS)


def _matches(pattern: str, path: str) -> bool:
    """Approximate git's wildmatch: a slash-free pattern matches any basename, else the full path."""
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):  # a directory pattern matches everything below such a directory
        return any(_matches(pattern.rstrip("/"), d) for d in _parents(path))
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.replace("**/", "*").replace("/**", "/*"))


def _parents(path: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def lfs_patterns(gitattributes: str) -> list[str]:
    """Patterns marked ``filter=lfs`` in a ``.gitattributes`` text (later lines do not unset them)."""
    out = []
    for line in gitattributes.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            out.append(fields[0])
    return out


def upload_mode(path: str, size: int, sample: bytes, patterns: list[str]) -> str:
    """Decide ``"lfs"`` or ``"regular"`` for a file about to be uploaded, like the Hub's preupload.

    LFS when the path matches a ``filter=lfs`` pattern, when the file is 10 MB or more, or when its
    first bytes contain a NUL (git's own binary heuristic). Empty files are always regular: the
    client forces that too, because an empty object cannot go through LFS.
    """
    if size == 0:
        return "regular"
    if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
        return "lfs"
    return "lfs" if any(_matches(p, path) for p in patterns) else "regular"


def is_ignored(path: str, gitignore: str | None) -> bool:
    """Whether ``path`` is ignored by a ``.gitignore`` text (last matching line wins, ``!`` negates)."""
    if not gitignore:
        return False
    ignored = False
    for raw in gitignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        # Ignoring a folder ignores what is inside it, so test the path and each of its parents.
        if any(_matches(pattern, p) for p in (*_parents(path), path)):
            ignored = not negate
    return ignored


def split_front_matter(text: str) -> str | None:
    """Return the YAML between the leading ``---`` fences of a card, or None when there is none."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:i])
    return None


def card_metadata(text: str) -> tuple[dict | None, list[str]]:
    """Parse a README's YAML front matter.

    Returns:
        ``(metadata, errors)``: the mapping (None when there is no front matter or it is invalid)
        and the problems found, each a human-readable sentence.
    """
    block = split_front_matter(text)
    if block is None:
        return None, []
    try:
        import yaml  # a declared dependency of hf_time; imported lazily to keep the server start cheap
    except ImportError:  # pragma: no cover - pyyaml ships with the project
        return None, []
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        return None, [f"Invalid YAML in the metadata block: {exc}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return None, [f"The metadata block must be a YAML mapping, got {type(data).__name__}"]
    return data, []
