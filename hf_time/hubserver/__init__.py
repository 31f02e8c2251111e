"""The embedded Hub: a Hugging Face Hub-compatible HTTP server on loopback, standard library only.

It speaks the protocol of the real huggingface_hub client (shared/design/hub-protocol.md), so
``HfApi``, ``snapshot_download``, ``ModelCard`` and transformers/datasets ``push_to_hub`` work
against it unchanged (with ``HF_HUB_DISABLE_XET=1``). Layers, each usable alone:

* :mod:`.storage` / :mod:`.commits` / :mod:`.blobs`: repositories on disk, no HTTP;
* :mod:`.framing` / :mod:`.limits`: where a request body ends, and how much of it may be read;
* :mod:`.security`: the ``Host`` allow-list and the write token;
* :mod:`.messages` / :mod:`.context` / :mod:`.handler`: requests, responses, routing, auth, error mapping;
* :mod:`.api_repos` / :mod:`.api_files`: the endpoints;
* :mod:`.web`: the web pages (repo list, cards, files, commits, compare, timeline) and the
  ``/api/models``, ``/api/datasets`` listings;
* :mod:`.payload`: typed reading of JSON bodies (a wrong type is a 400 naming the field);
* :mod:`.server`: :class:`HubServer`, the lifecycle;
* :mod:`.local`: :func:`use_embedded_hub`, a server plus this process's client pointed at it, and
  :func:`hub_endpoint`, a script's Hub: the one it names or an embedded one;
* :mod:`.launch`: token and banner of ``hf-time hub serve``;
* :mod:`.faults`: test-only fault injection (5xx, 429, dropped connections, delays, moved branches).
"""

from .limits import Limits
from .local import hub_endpoint, use_embedded_hub
from .server import HubServer
from .storage import HubStorage

__all__ = ["HubServer", "HubStorage", "Limits", "hub_endpoint", "use_embedded_hub"]
