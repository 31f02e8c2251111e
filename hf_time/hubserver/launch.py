"""What ``hf-time hub serve`` needs besides the server: where the token comes from and what to print.

A token on the command line shows in ``ps`` and in shell history, so the preferred sources are the
``HF_TIME_HUB_TOKEN`` environment variable or a ``--token-file``; ``--token`` still works. Without
any, the server generates a token and the banner shows it once (like Jupyter). The CLI only parses
arguments and prints what these functions return.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hf_time.errors import ConfigError

from .security import exposure_warnings

TOKEN_ENV = "HF_TIME_HUB_TOKEN"

GENERATED = "generated"
ANY = "any"


def resolve_token(token: str | None, token_file: str | None, insecure_any_token: bool,
                  environ: Mapping[str, str] = os.environ) -> tuple[str | None, str]:
    """Pick the write token of ``hf-time hub serve`` from its options and the environment.

    Precedence: ``--token`` or ``--token-file`` (at most one), then ``$HF_TIME_HUB_TOKEN``, then
    none (the server generates one).

    Returns:
        ``(token or None, source)``; source is ``"--token"``, ``"--token-file"``,
        ``"$HF_TIME_HUB_TOKEN"``, :data:`GENERATED` or :data:`ANY`.

    Raises:
        ConfigError: conflicting options, or an unreadable or empty token file.
    """
    if token is not None and token_file is not None:
        raise ConfigError("Pass either --token or --token-file, not both")
    if insecure_any_token and (token is not None or token_file is not None):
        raise ConfigError("--insecure-any-token accepts any token; it cannot be combined with --token/--token-file")
    if token_file is not None:
        try:
            value = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"Cannot read --token-file {token_file}: {exc.strerror or exc}") from None
        if not value:
            raise ConfigError(f"--token-file {token_file} is empty; put the token on its first line")
        return value, "--token-file"
    if token is not None:
        if not token.strip():
            raise ConfigError("--token must not be empty")
        return token.strip(), "--token"
    if insecure_any_token:
        return None, ANY
    if environ.get(TOKEN_ENV, "").strip():
        return environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    return None, GENERATED


def banner(root: str, url: str, token: str | None, source: str) -> list[str]:
    """Lines for stdout once the server is bound. A generated token appears here, and only here."""
    lines = [f"embedded Hub serving {root} at {url}", f"  browse the repos, their cards and timelines at {url}/"]
    if source == GENERATED:
        shown = token
        lines.append("  a write token was generated for this run; it is shown once, here:")
    elif source == ANY:
        shown = "<any-non-empty-token>"
    else:
        shown = f"<the token from {source}>"
    lines.append(f"  export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1 HF_TOKEN={shown}")
    return lines


def warnings(host: str, source: str) -> list[str]:
    """Lines for stderr: loud ones when the server is exposed beyond loopback or accepts any token."""
    return exposure_warnings(host, token_given=source not in (GENERATED, ANY), insecure_any_token=source == ANY)
