"""A small DOM built with the standard library's html.parser, to assert on the embedded Hub's pages.

Enough for tests: elements with attributes, children and text; lookup by tag, id, class and
attribute; and the list of every ``<script>`` and event-handler attribute, which must stay empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    """One element: its tag, attributes, children (elements and text) and parent."""

    tag: str
    attrs: dict[str, str | None]
    children: list = field(default_factory=list)
    parent: Element | None = None

    def text(self) -> str:
        """All text below this element, whitespace collapsed."""
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join("".join(parts).split())

    def iter(self):
        """This element and every element below it, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, *, id: str | None = None, cls: str | None = None,  # noqa: A002
                 **attrs: str) -> list[Element]:
        """Elements matching every given condition (``data_step="2"`` matches ``data-step``)."""
        out = []
        for el in self.iter():
            if tag is not None and el.tag != tag:
                continue
            if id is not None and el.attrs.get("id") != id:
                continue
            if cls is not None and cls not in (el.attrs.get("class") or "").split():
                continue
            if any(el.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append(el)
        return out

    def one(self, tag: str | None = None, **conditions: str) -> Element:
        """The single element matching; fails the test when there is none or several."""
        found = self.find_all(tag, **conditions)
        assert len(found) == 1, f"expected one <{tag or '*'} {conditions}>, found {len(found)}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        el = Element(tag, dict(attrs), parent=self.current)
        self.current.children.append(el)
        if tag not in _VOID:
            self.current = el

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, dict(attrs), parent=self.current))

    def handle_endtag(self, tag):
        el = self.current
        while el is not None and el.tag != tag:
            el = el.parent
        if el is not None and el.parent is not None:  # a stray end tag is ignored, as a browser would
            self.current = el.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str) -> Element:
    """The document element of ``html``."""
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def active_content(doc: Element) -> list[str]:
    """Every script element, event-handler attribute and ``javascript:`` URL in the document."""
    found = [f"<{el.tag}>" for el in doc.iter() if el.tag in ("script", "iframe", "object", "embed")]
    for el in doc.iter():
        for name, value in el.attrs.items():
            if name.startswith("on"):
                found.append(f"{el.tag} {name}")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(("javascript:", "data:text")):
                found.append(f"{el.tag} {name}={value}")
    return found
