"""HTML building blocks of the web pages: safe-by-construction fragments, the page layout, headers.

Every value put into a page goes through :func:`h` (a :class:`string.Template` whose values are
escaped unless they are already :class:`Html`), so a repo, file, tag or commit name can never
become markup. The pages carry a Content-Security-Policy without any script source: even markup
that slipped through could not run a script.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import string
from collections.abc import Callable, Iterable

from .. import errors as E
from ..messages import STATUS, Request, Response, error_response


class Html(str):
    """Text that is already HTML (built by :func:`h` or the markdown renderer): never escaped again."""

    __slots__ = ()


def esc(value: object) -> Html:
    """``value`` as HTML: escaped text, or itself when it already is :class:`Html`."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def h(template: str, **values: object) -> Html:
    """Fill a ``$name`` template; every value is escaped unless it is :class:`Html`.

    Raises:
        KeyError: a placeholder of the template has no value (a bug in the page code).
    """
    return Html(string.Template(template).substitute({k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[object], sep: str = "") -> Html:
    """Concatenate fragments, escaping the plain-text ones."""
    return Html(esc(sep).join(esc(p) for p in parts))


def link(href: str, text: object, cls: str = "") -> Html:
    """``<a>``; ``href`` must be a URL the page built (it is escaped as an attribute, not checked)."""
    if cls:
        return h('<a class="$cls" href="$href">$text</a>', cls=cls, href=href, text=text)
    return h('<a href="$href">$text</a>', href=href, text=text)


class Cell(Html):
    """A complete ``<td>``/``<th>`` element (made by :func:`cell`), placed in a row as it is."""

    __slots__ = ()


def cell(content: object, *, tag: str = "td", attrs: Html = Html("")) -> Cell:
    """A table cell with attributes (``attrs`` built with :func:`h`)."""
    return Cell(h(f"<{tag} $attrs>$content</{tag}>", attrs=attrs, content=content))


def table(head: Iterable[object], rows: Iterable[Iterable[object]], *, attrs: Html = Html("")) -> Html:
    """A ``<table>`` with one header row; a cell is text, :class:`Html` content or a whole :class:`Cell`."""
    head_html = join(c if isinstance(c, Cell) else h("<th>$c</th>", c=c) for c in head)
    body = join(h("<tr>$cells</tr>", cells=join(c if isinstance(c, Cell) else h("<td>$c</td>", c=c) for c in row))
                for row in rows)
    return h("<table $attrs><thead><tr>$head</tr></thead><tbody>$body</tbody></table>",
             attrs=attrs, head=head_html, body=body)


def short(oid: str) -> str:
    """The 10-character form of a commit id shown in pages."""
    return oid[:10]


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; background: #fff; }
header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.5em; background: #f6f8fa;
         border-bottom: 1px solid #d0d7de; }
header .home { font-weight: 600; color: #1f2328; text-decoration: none; }
header input { padding: .3em .5em; width: 22em; }
main { padding: 1em 1.5em 3em; max-width: 1100px; }
footer { padding: 1em 1.5em; color: #656d76; font-size: 13px; border-top: 1px solid #d0d7de; }
a { color: #0969da; }
h1 { font-size: 1.5em; margin: .3em 0; word-break: break-all; }
h2 { font-size: 1.15em; margin: 1.4em 0 .5em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.differs td { background: #fff8c5; }
td.better { color: #1a7f37; } td.worse { color: #cf222e; }
code, pre { font: 13px ui-monospace, monospace; }
pre { background: #f6f8fa; padding: .7em; overflow-x: auto; }
.badge { display: inline-block; padding: 0 .5em; border-radius: 1em; background: #ddf4ff; font-size: 12px; }
.muted { color: #656d76; }
.tabs a { margin-right: 1em; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .5em 1.2em; margin: 1em 0; }
.card img, .plot img { max-width: 100%; }
.error { border-left: 4px solid #cf222e; padding: .3em 1em; background: #ffebe9; }
.repos li { margin: .35em 0; list-style: none; }
.repos { padding-left: 0; }
form.inline { display: inline; }
"""

# The one stylesheet is inline; the policy allows exactly it by hash, and no script at all.
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (f"default-src 'none'; img-src 'self' data:; style-src 'sha256-{_STYLE_HASH}'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_LAYOUT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · embedded Hub</title>
<style>$style</style>
</head>
<body>
<header><a class="home" href="/">embedded Hub</a>
<form action="/" method="get" role="search"><input type="search" name="search" value="$search"
 placeholder="Search models and datasets" aria-label="Search repositories"></form></header>
<main>
$body
</main>
<footer>hf_time embedded Hub: a read-only view of the repositories on this server.</footer>
</body>
</html>
"""


def page(title: str, body: Html, *, status: int = 200, search: str = "",
         headers: dict[str, str] | None = None) -> Response:
    """A complete HTML page response with the security headers."""
    text = h(_LAYOUT, title=title, style=Html(STYLE), body=body, search=search)
    return Response(status, {**HEADERS, **(headers or {})}, text.encode("utf-8"))


def redirect(location: str) -> Response:
    """A 303 to ``location`` (a path this module built; the browser then GETs it)."""
    return Response(303, {"Location": location, "Content-Type": "text/plain; charset=utf-8"}, b"")


PageFn = Callable[..., Response]
_REASONS = {400: "Bad request", 404: "Not found", 409: "Conflict", 413: "Too large", 414: "URL too long"}


def html_errors(fn: PageFn) -> PageFn:
    """Turn the :class:`HubError` of a page route into an HTML error page with the same status.

    The ``X-Error-Code`` / ``X-Error-Message`` headers stay, so scripts and tests can tell a
    missing repo from a missing revision exactly as with the API.
    """

    @functools.wraps(fn)
    def wrapper(ctx, req: Request, match) -> Response:
        try:
            return fn(ctx, req, match)
        except E.HubError as err:
            api = error_response(err)
            status = STATUS.get(err.code, 400)
            body = h('<h1>$status</h1><p class="error">$message</p><p><a href="/">All repositories</a></p>',
                     status=f"{status} {_REASONS.get(status, 'Error')}", message=err.message)
            extra = {k: v for k, v in api.headers.items() if k.startswith("X-")}
            return page(f"{status}", body, status=status, headers=extra)

    return wrapper

