"""The embedded Hub's web pages and repo listings, served by the same server as the API.

Server-rendered HTML (standard library templates; card markdown through markdown-it-py with raw HTML
off), no JavaScript: pages carry a Content-Security-Policy that allows no script at all. Reads
follow the API's rules: the same ``Host`` check (in the handler, before any route), private repos
are 404 without an accepted token.

Pages (``{repo}`` is ``ns/name``, ``datasets/ns/name`` or ``spaces/ns/name``):

* ``/`` — every repo, newest first; ``?search=``, ``?type=``, ``?author=``;
* ``/{repo}`` and ``/{repo}/tree/{rev}[/{folder}]`` — card, files, branches and tags, recent commits;
* ``/{repo}/blob/{rev}/{path}`` — one file; ``/{repo}/resolve/{rev}/{path}`` (the API) gives its bytes;
* ``/{repo}/commits/{rev}`` and ``/{repo}/commit/{sha}`` — history and one commit's changes;
* ``/{repo}/compare/{a}...{b}`` — two snapshots' lineage, inputs, accuracy and metrics;
* ``/{repo}/timeline`` — the ``step-1 … step-t`` tags and their accuracy matrix.

Listings: ``GET /api/models``, ``/api/datasets``, ``/api/spaces`` (:mod:`.api_list`).

Modules: :mod:`.html` (escaping, layout, headers), :mod:`.urls`, :mod:`.listing`, :mod:`.card`
(markdown), :mod:`.snapshots` (hf_time.json, timeline_state.json), :mod:`.nav` and one module per
page kind.
"""

from __future__ import annotations

from ..messages import route
from . import api_list, pages_compare, pages_history, pages_index, pages_repo, pages_timeline

_REPO = r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"

# After the API routes (server.py): the repo patterns here would also match API-looking paths.
ROUTES = [
    *api_list.ROUTES,
    route("GET HEAD", r"^/\Z", pages_index.index_page),
    route("GET HEAD", _REPO + r"\Z", pages_repo.tree_page),
    route("GET HEAD", _REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?\Z", pages_repo.tree_page),
    route("GET HEAD", _REPO + r"/blob/(?P<rev>[^/]+)/(?P<path>.+)\Z", pages_repo.blob_page),
    route("GET HEAD", _REPO + r"/commits(?:/(?P<rev>[^/]+))?\Z", pages_history.commits_page),
    route("GET HEAD", _REPO + r"/commit/(?P<sha>[0-9a-f]{4,40})\Z", pages_history.commit_page),
    route("GET HEAD", _REPO + r"/compare\Z", pages_compare.compare_form),
    route("GET HEAD", _REPO + r"/compare/(?P<spec>[^/]+)\Z", pages_compare.compare_page),
    route("GET HEAD", _REPO + r"/timeline\Z", pages_timeline.timeline_page),
]

__all__ = ["ROUTES"]
