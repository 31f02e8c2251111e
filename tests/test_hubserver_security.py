"""Who may talk to the embedded Hub: the Host header (DNS rebinding) and the write token.

Issue 9, defect 4: the Host header was not checked, so any web page whose domain resolves to
127.0.0.1 could drive the Hub from a browser; and a server started without ``--token`` accepted any
non-empty token, so such a page could create, commit and delete.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from hub_raw import request

from hf_time.hubserver import HubServer

pytestmark = pytest.mark.probe("Hub probes")


@pytest.mark.parametrize("host", ["evil.example:{port}", "attacker.localhost.evil:{port}", "127.0.0.1:1",
                                  "localhost", "127.0.0.1.nip.io:{port}", ""])
def test_foreign_host_headers_are_refused(hub, host):
    host = host.format(port=hub.port)
    for method, path in (("GET", "/api/models/none/none"), ("POST", "/api/repos/create")):
        resp = request(hub.url, method, path, host=host, body=b'{"name": "x"}' if method == "POST" else b"",
                       headers={"Authorization": "Bearer x", "Content-Type": "application/json"})
        assert resp.status in (400, 421), (host, resp)
        assert "host" in resp.message.lower()


def test_a_missing_host_header_is_refused(hub):
    # HTTP/1.1 requires Host (RFC 9112 §3.2); without one the origin cannot be checked.
    resp = request(hub.url, "GET", "/api/models/none/none", host=None)
    assert resp.status == 400


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}"])
def test_loopback_host_headers_are_served(hub, host):
    resp = request(hub.url, "GET", "/api/models/none/none", host=host.format(port=hub.port))
    assert resp.status == 404 and resp.headers["x-error-code"] == "RepoNotFound"


def test_the_bound_host_is_accepted_when_it_is_not_loopback():
    from hf_time.hubserver.security import allowed_hosts, host_allowed

    lan = allowed_hosts("192.0.2.7", 8765)
    assert host_allowed("192.0.2.7:8765", lan) and host_allowed("localhost:8765", lan)
    assert not host_allowed("192.0.2.7:8766", lan) and not host_allowed("evil.example:8765", lan)
    loop = allowed_hosts("127.0.0.1", 8765)
    assert not host_allowed("192.0.2.7:8765", loop)  # a loopback server has no other name
    assert host_allowed("box.internal:8765", allowed_hosts("127.0.0.1", 8765, extra=["box.internal"]))
    assert host_allowed("127.0.0.1", allowed_hosts("127.0.0.1", 80))  # port 80 may be left out


def test_a_server_without_a_token_generates_one(tmp_path):
    with HubServer(tmp_path / "hub") as server:
        assert isinstance(server.token, str) and len(server.token) >= 32
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=server.url, token="any-non-empty-token").create_repo("me/m")
        assert err.value.response.status_code == 401
        assert not server.storage.exists("models", "me/m")
        assert HfApi(endpoint=server.url, token=server.token).create_repo("me/m").repo_id == "me/m"
    with HubServer(tmp_path / "hub2") as other:
        assert other.token != server.token  # random per start


def test_insecure_any_token_is_an_explicit_choice(tmp_path):
    with HubServer(tmp_path / "hub", insecure_any_token=True) as server:
        assert server.token is None
        assert HfApi(endpoint=server.url, token="whatever").create_repo("me/m").repo_id == "me/m"
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=server.url, token=False).create_repo("me/n")
        assert err.value.response.status_code == 401  # still no anonymous writes
    with pytest.raises(ValueError, match="insecure_any_token"):
        HubServer(tmp_path / "hub", token="t", insecure_any_token=True)


def test_repr_and_logs_do_not_show_the_token(tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="hf_time.hubserver")
    with HubServer(tmp_path / "hub") as server:
        HfApi(endpoint=server.url, token=server.token).create_repo("me/m")
        assert server.token not in repr(server)
    assert server.token not in caplog.text


def test_use_embedded_hub_sets_hf_token_to_its_generated_token(tmp_path):
    code = (
        "import os\n"
        "from hf_time.hubserver import use_embedded_hub\n"
        f"server = use_embedded_hub({str(tmp_path / 'hub')!r}, hf_home={str(tmp_path / 'home')!r})\n"
        "assert server.token and os.environ['HF_TOKEN'] == server.token, 'HF_TOKEN is not the server token'\n"
        "from huggingface_hub import HfApi\n"
        "from huggingface_hub.errors import HfHubHTTPError\n"
        "HfApi().create_repo('local/model')\n"
        "try:\n"
        "    HfApi(token='users-real-token').create_repo('local/other')\n"
        "except HfHubHTTPError as e:\n"
        "    print('other token refused', e.response.status_code)\n"
        "server.stop()\n"
    )
    # A token already in the environment (the user's real one) must not be the one sent here.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")}, "HF_TOKEN": "users-real-token"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "other token refused 401" in out.stdout
