"""How much a single request may make the embedded Hub read, hold or parse.

Every bound exists because an unbounded one was exploited (issue 9, defects 3 and 9): a 400 MB body
to ``/api/validate-yaml`` grew the server to 1.2 GB, and a 60 KB ``/resolve`` URL cost seconds of CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Size limits of one embedded Hub. Defaults fit the real client's largest legitimate requests.

    Attributes:
        max_json_bytes: a JSON or form body (create, preupload, LFS batch, paths-info...). The client
            batches preupload and paths-info, so a few MB is far above what it sends.
        max_commit_line_bytes: one NDJSON line of a commit. The largest is a regular file inline in
            base64: files of 10 MB or more always go through LFS, so 10 MB * 4/3 fits in 16 MiB.
        max_commit_bytes: a whole commit body. Lines are stored as they arrive, so this bounds
            disk use per request, not memory.
        max_url_bytes: the request target (path and query). Longer ones are answered 414.
        drain_bytes: after refusing a request whose body was not read, how much more is read and
            discarded before closing, so the client sees the answer rather than a reset.
        max_page_items: most repositories one page of ``/api/models`` (and the web index) returns;
            a larger ``limit`` is cut to this and the rest follows through the ``Link`` header, as on
            huggingface.co (which caps pages at 1000).
    """

    max_json_bytes: int = 8 * MiB
    max_commit_line_bytes: int = 16 * MiB
    max_commit_bytes: int = 2048 * MiB
    max_url_bytes: int = 8192
    drain_bytes: int = 1 * MiB
    max_page_items: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_json_bytes", "max_commit_line_bytes", "max_commit_bytes", "max_url_bytes",
                     "max_page_items"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive")
