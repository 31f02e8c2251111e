"""``hf-time hub serve``: where the write token comes from, what is printed, what is warned about.

Issue 9, defect 4: without ``--token`` any non-empty token could write, and ``--token`` showed the
token in ``ps``. Now a token is generated and printed once, or read from ``$HF_TIME_HUB_TOKEN`` or
``--token-file``; ``--insecure-any-token`` is the explicit way back, and exposure is warned about.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hf_time.hubserver.launch import resolve_token, warnings


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, list[str]]:
    """Start ``hf-time hub serve`` on a free port; return the process and its banner lines."""
    clean = {k: v for k, v in os.environ.items() if k != "HF_TIME_HUB_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "hf_time.cli", "hub", "serve", "--root", str(tmp_path / "hub"),
                             "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**clean, **(env or {})})
    lines = []
    while not lines or "export HF_ENDPOINT=" not in lines[-1]:
        line = proc.stdout.readline()
        if not line:
            proc.wait(10)
            raise AssertionError(f"hub serve exited with {proc.returncode}: {proc.stderr.read()}")
        lines.append(line.rstrip("\n"))
    return proc, lines


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    return out, err


def _export(lines: list[str]) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


def test_a_generated_token_is_printed_once_and_is_the_only_one_that_writes(tmp_path):
    proc, lines = _serve(tmp_path)
    try:
        env = _export(lines)
        url, token = env["HF_ENDPOINT"], env["HF_TOKEN"]
        assert len(token) >= 32 and "\n".join(lines).count(token) == 1
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=url, token="any-non-empty-token").create_repo("me/m")
        assert err.value.response.status_code == 401
        assert HfApi(endpoint=url, token=token).create_repo("me/m").repo_id == "me/m"
    finally:
        out, err_text = _stop(proc)
    assert token not in out + err_text  # shown once, never logged afterwards


@pytest.mark.parametrize("how", ["env", "file"])
def test_a_given_token_is_neither_printed_nor_in_the_command_line(tmp_path, how):
    secret = "s3cret-token-for-" + how
    if how == "env":
        proc, lines = _serve(tmp_path, env={"HF_TIME_HUB_TOKEN": secret})
    else:
        (tmp_path / "token").write_text(secret + "\n")
        proc, lines = _serve(tmp_path, "--token-file", str(tmp_path / "token"))
    try:
        url = _export(lines)["HF_ENDPOINT"]
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert secret not in cmdline  # what `ps` shows
        assert HfApi(endpoint=url, token=secret).create_repo("me/m").repo_id == "me/m"
        with pytest.raises(HfHubHTTPError):
            HfApi(endpoint=url, token="other").create_repo("me/n")
    finally:
        out, err_text = _stop(proc)
    assert secret not in "\n".join(lines) + out + err_text


def test_insecure_any_token_is_warned_about(tmp_path):
    proc, lines = _serve(tmp_path, "--insecure-any-token")
    try:
        url = _export(lines)["HF_ENDPOINT"]
        assert HfApi(endpoint=url, token="whatever").create_repo("me/m").repo_id == "me/m"
    finally:
        _, err_text = _stop(proc)
    assert "WARNING: --insecure-any-token" in err_text


@pytest.mark.parametrize("args, message", [
    (["--token", "a", "--insecure-any-token"], "cannot be combined"),
    (["--token", "a", "--token-file", "x"], "either --token or --token-file"),
    (["--token-file", "{tmp}/missing"], "Cannot read --token-file"),
    (["--token-file", "{tmp}/empty"], "is empty"),
])
def test_bad_token_options_end_in_one_line_and_exit_2(tmp_path, capsys, args, message):
    from hf_time.cli import main

    (tmp_path / "empty").write_text("\n")
    code = main(["hub", "serve", "--root", str(tmp_path / "hub"), "--port", "0", *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_exposure_beyond_loopback_is_warned_about_loudly():
    assert warnings("127.0.0.1", "generated") == []
    assert warnings("localhost", "--token-file") == []
    lan = warnings("0.0.0.0", "generated")
    assert lan and lan[0].startswith("WARNING: serving on 0.0.0.0") and "clear text" in lan[0]
    assert any("generated token" in line for line in lan)
    danger = warnings("192.0.2.7", "any")
    assert danger[0].startswith("DANGER") and "ANYONE on the network" in danger[0]
    assert warnings("192.0.2.7", "$HF_TIME_HUB_TOKEN")[0].startswith("WARNING: serving on 192.0.2.7")


def test_token_precedence():
    env = {"HF_TIME_HUB_TOKEN": " from-env \n"}
    assert resolve_token(None, None, False, env) == ("from-env", "$HF_TIME_HUB_TOKEN")
    assert resolve_token("cli", None, False, env) == ("cli", "--token")
    assert resolve_token(None, None, True, env) == (None, "any")
    assert resolve_token(None, None, False, {}) == (None, "generated")


@pytest.mark.parametrize("extra, first_line", [([], "WARNING: serving on 0.0.0.0"),
                                                (["--insecure-any-token"], "DANGER: --insecure-any-token")])
def test_serving_beyond_loopback_prints_the_warnings(monkeypatch, capsys, tmp_path, extra, first_line):
    import hf_time.hubserver as hubserver
    from hf_time.cli import main

    class Bound:  # stands in for HubServer: nothing is bound on 0.0.0.0 by this test
        def __init__(self, root, host, port, token, insecure_any_token):
            self.url, self.token = f"http://127.0.0.1:{port}", None if insecure_any_token else "generated-123"

        def serve_forever(self):
            return None

    monkeypatch.setattr(hubserver, "HubServer", Bound)
    assert main(["hub", "serve", "--root", str(tmp_path), "--host", "0.0.0.0", "--port", "8765", *extra]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(first_line)
    assert out.startswith(f"embedded Hub serving {tmp_path} at http://127.0.0.1:8765")
    assert ("generated-123" in out) == (not extra) and "generated-123" not in err


def test_a_port_in_use_is_one_line_with_the_fix_and_exit_code_2(tmp_path, capsys):
    """Issue 10.2: `Address already in use` said nothing about --port."""
    import socket

    from hf_time.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["hub", "serve", "--root", str(tmp_path / "hub"), "--port", str(port), "--insecure-any-token"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (f"error: port {port} on 127.0.0.1 is already in use (another `hf-time hub serve`?); "
                       "pick another with --port N, or --port 0 for any free one")
