"""A repo card as HTML: the markdown body, its YAML metadata as a table, its evaluation results.

The body goes through markdown-it-py (CommonMark plus tables) with raw HTML **disabled**: a ``<script>``
or ``<img onerror=...>`` in a card is shown as text, never parsed as markup. Relative links and
images are rewritten against the revision being shown, as the Hub does: ``plot.png`` becomes the
file's ``/resolve`` URL at that commit (so the image is the one of that snapshot), ``other.md`` its
file page. Links with a scheme other than http(s)/mailto are dropped.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..rules import card_metadata, split_front_matter
from . import urls
from .html import Html, esc, h, join, link, table

_LINK_SCHEMES = ("http", "https", "mailto")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclass(frozen=True)
class Where:
    """Where a markdown file lives, to resolve its relative links: repo, commit and folder."""

    repo_type: str
    repo_id: str
    oid: str
    folder: str = ""

    def target(self, url: str, image: bool) -> str | None:
        """The URL to use in the page for ``url`` as written in the card (None: drop it)."""
        parts = urlsplit(url)
        if parts.scheme or url.startswith("//"):
            return url if image or parts.scheme.lower() in _LINK_SCHEMES else None
        if not parts.path or url.startswith("/"):
            return url  # "#anchor", "?q" or an endpoint-relative link such as /org/name/tree/<sha>
        path = posixpath.normpath(posixpath.join(self.folder, unquote(parts.path)))
        if path.startswith("../") or path == "..":
            return None  # above the repository root: nothing to point at
        build = urls.resolve if image else urls.blob
        tail = (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
        return build(self.repo_type, self.repo_id, self.oid, path) + tail


@functools.lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt  # a declared dependency; only the pages need it

    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def _rewrite(tokens, where: Where) -> None:
    for token in tokens:
        if token.children:
            _rewrite(token.children, where)
        attr = "href" if token.type == "link_open" else "src" if token.type == "image" else None
        if attr is None or token.attrGet(attr) is None:
            continue
        target = where.target(str(token.attrGet(attr)), image=attr == "src")
        if target is None:
            del token.attrs[attr]
        else:
            token.attrSet(attr, target)


def render_markdown(text: str, where: Where) -> Html:
    """Markdown (without front matter) to HTML: raw HTML escaped, links rewritten for ``where``."""
    md = _parser()
    env: dict = {}
    tokens = md.parse(text, env)
    _rewrite(tokens, where)
    return Html(md.renderer.render(tokens, md.options, env))


def body_of(text: str) -> str:
    """The card's markdown after its ``---`` front matter (all of it when there is none)."""
    if split_front_matter(text) is None:
        return text
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    closing = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
    return "".join(lines[closing + 1:])


def _value(key: str, value: Any, exists: Callable[[str, str], bool]) -> Html:
    """One metadata value: scalars as text, lists as links to known repos, the rest as YAML."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        values = [value]
    elif isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        values = value
    else:
        import yaml  # a declared dependency, imported when needed as in rules.py

        return h("<pre>$y</pre>", y=yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
    kind = {"base_model": "models", "datasets": "datasets"}.get(key)
    out = []
    for v in values:
        text = str(v)
        if kind and _REPO_ID.match(text) and exists(kind, text):
            out.append(link(urls.repo(kind, text), text))
        else:
            out.append(esc(text))
    return join(out, ", ")


def metadata_table(card: dict, exists: Callable[[str, str], bool]) -> Html:
    """The YAML metadata as a key/value table (``model-index`` goes to :func:`results_table`)."""
    rows = [[h("<code>$k</code>", k=k), _value(str(k), v, exists)] for k, v in card.items() if k != "model-index"]
    return table(["key", "value"], rows, attrs=Html('class="metadata"')) if rows else Html("")


def results_table(card: dict) -> Html:
    """``model-index`` results as a table: dataset, split, metric, value (empty without any)."""
    rows = []
    for model in card.get("model-index") or []:
        if not isinstance(model, dict):
            continue
        for result in model.get("results") or []:
            if not isinstance(result, dict):
                continue
            dataset = result.get("dataset") or {}
            for metric in result.get("metrics") or []:
                if isinstance(metric, dict):
                    rows.append([dataset.get("name", ""), dataset.get("split", ""),
                                 metric.get("name") or metric.get("type", ""), metric.get("value", "")])
    return table(["dataset", "split", "metric", "value"], rows, attrs=Html('class="results"')) if rows else Html("")


def render_card(text: str, where: Where, exists: Callable[[str, str], bool]) -> Html:
    """A whole README: metadata table, evaluation results, then the body.

    Args:
        text: the README's content.
        where: the repo, commit and folder it was read at.
        exists: ``exists(repo_type, repo_id)``: whether a repo named in the metadata is on this
            server (only those become links).
    """
    card, problems = card_metadata(text)
    parts = []
    if problems:
        parts.append(h('<p class="error">The metadata block cannot be read: $p</p>', p="; ".join(problems)))
    if card:
        parts.append(h("<details open><summary>Metadata</summary>$t</details>", t=metadata_table(card, exists)))
        results = results_table(card)
        if results:
            parts.append(h("<h3>Evaluation results</h3>$t", t=results))
    parts.append(render_markdown(body_of(text), where))
    return h('<article class="card">$c</article>', c=join(parts))
