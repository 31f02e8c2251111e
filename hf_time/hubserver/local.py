"""Point this process's huggingface_hub client at an embedded Hub.

The client reads its endpoint and Xet switch at import time (shared/design/hub-protocol.md §2), so
:func:`use_embedded_hub` must run before huggingface_hub, transformers, peft or datasets is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from .server import HubServer


def use_embedded_hub(root: str | os.PathLike, *, hf_home: str | os.PathLike | None = None, port: int = 0) -> HubServer:
    """Start an embedded Hub storing its repos under ``root`` and point this process's client at it.

    Sets ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1`` (the embedded Hub speaks plain LFS),
    ``HF_HUB_DISABLE_TELEMETRY``, ``NO_PROXY`` for loopback and ``HF_TOKEN`` to the server's own
    random write token. A token already in ``HF_TOKEN`` (the user's real one) is replaced for this
    process: it would not be accepted, and it should not be sent to a local server anyway.

    Args:
        root: folder of the repos (created if missing; reused across runs).
        hf_home: a separate ``HF_HOME`` (download cache), so the user's own cache stays untouched.
        port: port to listen on (0 picks a free one).

    Returns:
        The running server (``.url``; call ``.stop()`` when done).

    Raises:
        RuntimeError: huggingface_hub was already imported, so it would keep its old endpoint.
    """
    import sys

    if "huggingface_hub" in sys.modules:
        raise RuntimeError("use_embedded_hub() must run before huggingface_hub (or transformers, peft, datasets) "
                           "is imported: the client reads HF_ENDPOINT at import time")
    server = HubServer(root=root, port=port).start()  # no token given: it generates one
    os.environ.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                      NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", HF_TOKEN=server.token)
    if hf_home is not None:
        os.environ["HF_HOME"] = str(Path(hf_home).absolute())
    return server


def hub_endpoint(endpoint: str | None, root: str | os.PathLike, *, hf_home: str | os.PathLike | None = None) -> str:
    """The Hub a script talks to, set up before huggingface_hub is imported (as recipes start).

    ``endpoint`` when given: ``HF_ENDPOINT`` is set to it and the token comes from ``HF_TOKEN`` as usual.
    Otherwise an embedded Hub storing its repos under ``root`` (:func:`use_embedded_hub`), with
    huggingface_hub's own progress bars off (loopback transfers are instant; hf_time's bars say what runs).

    Returns:
        The endpoint's URL.
    """
    if endpoint is not None:
        os.environ["HF_ENDPOINT"] = endpoint
        return endpoint
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    return use_embedded_hub(root, hf_home=hf_home).url
