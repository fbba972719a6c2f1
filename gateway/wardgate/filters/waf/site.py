"""Where a request says it comes from: the ``Referer`` host against the ``Host`` it asks for.

Session-fixation rules need this relation (a session id handed over in a link from another
site, or with no referring page at all), which no pattern over one value can express. Plain
string operations only: no regular expressions on request data.
"""

from __future__ import annotations

from collections.abc import Mapping

NONE = "none"
"""No (or an empty) ``Referer``."""
SAME = "same"
"""The ``Referer`` host is the requested host."""
CROSS = "cross"
"""The ``Referer`` names another host, or none that can be read."""


def _host_of(authority: str) -> str:
    """The lower-case host of ``host[:port]``, ``user@host`` or ``[v6]:port``."""
    authority = authority.rpartition("@")[2].strip().lower()
    if authority.startswith("["):
        return authority.partition("]")[0] + "]"
    return authority.partition(":")[0].rstrip(".")


def referer_site(headers: Mapping[str, str]) -> str:
    """:data:`NONE`, :data:`SAME` or :data:`CROSS` for these request headers."""
    referer = headers.get("referer", "").strip()
    if not referer:
        return NONE
    scheme, sep, rest = referer.partition("://")
    if not sep or not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
        return CROSS
    authority = rest
    for stop in "/?#\\":
        authority = authority.partition(stop)[0]
    host = headers.get("host", "")
    referer_host = _host_of(authority)
    return SAME if referer_host and referer_host == _host_of(host) else CROSS
