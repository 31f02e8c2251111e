"""The embedded Hub: a Hugging Face Hub-compatible HTTP server on loopback, standard library only.

It speaks the protocol of the real huggingface_hub client (shared/design/hub-protocol.md), so
``HfApi``, ``snapshot_download``, ``ModelCard`` and transformers/datasets ``push_to_hub`` work
against it unchanged (with ``HF_HUB_DISABLE_XET=1``). Layers, each usable alone:

* :mod:`.storage` / :mod:`.commits` / :mod:`.blobs`: repositories on disk, no HTTP;
* :mod:`.handler`: HTTP parsing, routing, auth, error mapping;
* :mod:`.api_repos` / :mod:`.api_files`: the endpoints;
* :mod:`.server`: :class:`HubServer`, the lifecycle;
* :mod:`.local`: :func:`use_embedded_hub`, a server plus this process's client pointed at it.
"""

from .local import use_embedded_hub
from .server import HubServer
from .storage import HubStorage

__all__ = ["HubServer", "HubStorage", "use_embedded_hub"]
