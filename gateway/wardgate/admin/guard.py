"""Keeping browsers out of the admin port.

The admin port can stop the gateway and fail its health checks. Bound to localhost it is out
of reach of the network, but not of a browser on the same machine: a page can POST to
``http://127.0.0.1:9901/quitquitquit`` (a "simple" cross-origin request needs no preflight),
or rebind its own DNS name to 127.0.0.1 and then talk to the port as same-origin (DNS
rebinding). Envoy's admin has the same exposure.

So a request that changes something (anything but GET/HEAD) is refused with 403 when:

- its ``Host`` names the port by a DNS name: only an IP literal or ``localhost`` may be used
  (a rebinding attack always arrives with the attacker's name in ``Host``); when the port is
  bound to one address, it must be that address (or a loopback name for a loopback bind);
- it carries an ``Origin`` other than the ``Host`` it was sent to (or ``Origin: null``);
- its ``Sec-Fetch-Site`` says a browser sent it from another site.

The port in ``Host`` is not checked: ``kubectl port-forward`` and SSH tunnels legitimately
reach the admin port under another port number.

Scripts (curl, kubelet hooks, Envoy tooling) send none of the browser headers and use an IP
or ``localhost``, so they are unaffected; read-only GETs stay open as before."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping

log = logging.getLogger("wardgate.admin")

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a bind
_SAFE_FETCH_SITES = frozenset({"same-origin", "none"})


def _hostname(authority: str) -> str:
    """The host of ``host[:port]`` or ``[v6][:port]``, lower case, brackets removed."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else ""
    if authority.count(":") > 1:
        return authority  # a bare IPv6 literal, no port
    return authority.partition(":")[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


def host_allowed(host: str, bind_host: str) -> bool:
    """Whether a ``Host`` hostname may address an admin port bound to ``bind_host``."""
    bind = _hostname(bind_host) if bind_host.startswith("[") else bind_host.lower()
    if host == bind and (_is_ip(host) or host == "localhost"):
        return True
    if bind in _WILDCARDS:
        return _is_ip(host) or host == "localhost"
    return _is_loopback(bind) and host in _LOOPBACK_NAMES


def refusal(method: str, headers: Mapping[str, str], bind_host: str) -> str | None:
    """Why a request to the admin port must be refused, or ``None`` to let it through."""
    if method in ("GET", "HEAD"):
        return None
    host_header = headers.get("host")
    if host_header is not None and not host_allowed(_hostname(host_header), bind_host):
        return "the Host header does not name the admin address"
    origin = headers.get("origin")
    if origin is not None:
        scheme, sep, authority = origin.strip().lower().partition("://")
        if (
            not sep
            or scheme not in ("http", "https")
            or host_header is None
            or authority.rstrip("/") != host_header.strip().lower()
        ):
            return "cross-origin requests are refused"
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in _SAFE_FETCH_SITES:
        return "cross-site requests are refused"
    return None


def warn_if_exposed(host: str) -> None:
    """Log a warning when the admin port is bound to anything but a loopback address: it
    can stop the gateway and has no authentication."""
    if not _is_loopback(host.strip("[]").lower()):
        log.warning(
            "the admin port is reachable from the network: it can stop the gateway and has "
            "no authentication; bind it to 127.0.0.1 unless something else protects it",
            extra={"wardgate": {"admin_host": host}},
        )
