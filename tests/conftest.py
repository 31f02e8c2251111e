"""Test set-up: everything offline, the real huggingface_hub client pointed at the embedded Hub.

The environment must be set before huggingface_hub (or transformers/peft/datasets) is imported,
because the client reads its endpoint and Xet switch at import time (shared/design/hub-protocol.md §2).
"""

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SESSION_DIR = Path(tempfile.mkdtemp(prefix="hf_time_tests_"))
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)  # the session's Hub and HF cache go with it
HUB_PORT = _free_port()
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"
HUB_TOKEN = "hf_time_test_token_do_not_print"
os.environ.update(
    HF_ENDPOINT=HUB_URL,
    HF_HUB_DISABLE_XET="1",
    HF_TOKEN=HUB_TOKEN,
    HF_HOME=str(_SESSION_DIR / "hf_home"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_EVALUATE_OFFLINE="1",
    NO_PROXY="127.0.0.1,localhost",
    no_proxy="127.0.0.1,localhost",
    TOKENIZERS_PARALLELISM="false",
)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("TRANSFORMERS_OFFLINE", None)

import pytest  # noqa: E402

from hf_time.hubserver import HubServer  # noqa: E402


@pytest.fixture(scope="session")
def hub():
    """The embedded Hub, running on loopback for the whole session. Yields the server."""
    import huggingface_hub.constants as c

    # A mis-ordered import would silently talk to huggingface.co: fail loudly instead.
    assert c.ENDPOINT == HUB_URL, f"huggingface_hub was imported before conftest set HF_ENDPOINT ({c.ENDPOINT})"
    assert c.HF_HUB_DISABLE_XET
    server = HubServer(root=_SESSION_DIR / "hub", host="127.0.0.1", port=HUB_PORT, token=HUB_TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(hub):
    """An HfApi bound to the embedded Hub with the test token."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=HUB_TOKEN)


@pytest.fixture
def repo_name(request):
    """A repo id unique to the calling test."""
    import re

    slug = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-").lower()[:60]
    return f"tests/{slug}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Tests marked ``@pytest.mark.probe(CATEGORY)`` count as one probe each in the reliability report
    (tests/probes.py): a passing test is a probe that held."""
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("probe")
    if marker is not None and (report.when == "call" or (report.when == "setup" and report.failed)):
        from probes import record

        record(marker.args[0], item.nodeid, ok=report.passed, detail=str(report.longrepr)[:200] if report.failed else "")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run ~10x faster on one torch thread when the 2 cores are shared (thread-sync
    overhead); a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
