"""Who may talk to the embedded Hub: the ``Host`` allow-list and the write token.

Two attacks shape this module (issue 9, defect 4):

* **DNS rebinding.** A web page on ``evil.example`` re-resolves its own name to 127.0.0.1 and then
  calls the Hub from the victim's browser, as same-origin. The browser still sends
  ``Host: evil.example:PORT``, so refusing every Host that is not a name of this server stops it.
* **Any token writes.** A server that accepts any non-empty bearer token lets that same page write.
  So a server started without a token generates a random one (printed once, like Jupyter); accepting
  any token is an explicit, insecure opt-in for throwaway test servers.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Iterable

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("0.0.0.0", "", "::")


def generate_token() -> str:
    """A fresh random write token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or name) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def allowed_hosts(bound_host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values (``name:port``, lower-case) this server answers to.

    Loopback names always; the bound address when it is not loopback; for a wildcard bind
    (``0.0.0.0``) this machine's host names too. ``extra`` adds names such as a reverse proxy's.

    Args:
        bound_host: the address the socket is bound to.
        port: the bound port.
        extra: more host names (without port) to accept.
    """
    names = {*_LOOPBACK_NAMES, *(e.lower() for e in extra)}
    if not is_loopback(bound_host):
        if bound_host in _WILDCARDS:
            # A wildcard bind is reached through any local name; these are the ones we can know.
            hostname = socket.gethostname()
            names.update({hostname.lower(), socket.getfqdn(hostname).lower()})
        else:
            names.add(f"[{bound_host}]" if ":" in bound_host else bound_host.lower())
    out = {f"{name}:{port}" for name in names}
    if port == 80:  # the port may be left out of Host when it is the default one
        out.update(names)
    return frozenset(out)


def host_allowed(header: str | None, allowed: frozenset[str], *, any_ip_literal: bool = False) -> bool:
    """Whether a request's ``Host`` header names this server.

    Args:
        header: the ``Host`` header value (None when absent).
        allowed: :func:`allowed_hosts` of the server.
        any_ip_literal: also accept any IP address with the right port. Safe against DNS
            rebinding (which needs a domain name) and used for wildcard binds, whose addresses on
            every interface cannot all be listed.
    """
    if not header:
        return False
    value = header.strip().lower()
    if value in allowed:
        return True
    if any_ip_literal:
        name, _, port = value.rpartition(":")
        return _ip_literal(name) and any(a.endswith(f":{port}") for a in allowed)
    return False


def exposure_warnings(host: str, *, token_given: bool, insecure_any_token: bool) -> list[str]:
    """What to tell a user who serves the Hub beyond loopback (empty for a loopback bind).

    Args:
        host: the bind address asked for.
        token_given: the user chose the token (else one was generated).
        insecure_any_token: any non-empty token may write.
    """
    if is_loopback(host):
        if insecure_any_token:
            return ["WARNING: --insecure-any-token: any program or web page on this machine that "
                    "sends any token can create, commit to and delete repos."]
        return []
    lines = [f"WARNING: serving on {host or '0.0.0.0'}, not loopback: anyone who can reach this port "
             "can read every public repo, and the token travels in clear text (no TLS)."]
    if insecure_any_token:
        lines.insert(0, "DANGER: --insecure-any-token on a non-loopback address: ANYONE on the network "
                        "can create, commit to and delete repos. Do not do this on a shared machine.")
    elif not token_given:
        lines.append("WARNING: no token was given; writes need the generated token printed above.")
    return lines
