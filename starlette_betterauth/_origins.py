"""Cross-site checks for ambient credentials (cookies): where a request comes from.

A browser sends cookies with any request to the site, whoever started it, so a
request authenticated by a cookie must show it comes from a trusted page: unsafe
methods (anything but GET, HEAD, OPTIONS, TRACE) and websocket handshakes need an
``Origin`` (or, without one, a ``Referer``) whose origin is trusted. Bearer
credentials are never sent by the browser on its own and need no such check.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import Scope

from ._headers import Presented
from ._settings import check_http_url
from .errors import ConfigurationError, CrossSiteRequestError

__all__ = ["SAFE_METHODS", "TrustedOrigins", "origin_of"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, lower-cased; None otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    default = 443 if scheme == "https" else 80
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


class TrustedOrigins:
    """The origins whose pages may send cookie-authenticated unsafe requests.

    Raises:
        ConfigurationError: an entry that is not an http(s) origin.
    """

    __slots__ = ("origins",)

    def __init__(self, origins: Iterable[str]) -> None:
        found = set()
        for entry in origins:
            check_http_url("trusted_origins", entry)
            origin = origin_of(entry)
            if origin is None:  # pragma: no cover - check_http_url refused it already
                raise ConfigurationError(f"trusted_origins: {entry!r} is not an origin")
            found.add(origin)
        if not found:
            raise ConfigurationError("trusted_origins needs at least one origin")
        self.origins = frozenset(found)

    def check(self, scope: Scope, presented: Presented) -> None:
        """Refuse a cookie-authenticated unsafe request from an untrusted origin.

        Raises:
            CrossSiteRequestError: the request needs a trusted origin and has none.
        """
        websocket = scope["type"] == "websocket"
        if not websocket and scope.get("method", "GET") in SAFE_METHODS:
            return
        claimed = presented.origin
        if claimed is None or claimed == "null":
            # Browsers send Origin with unsafe requests; Referer is the fallback
            # for the few that strip it. Neither: not a request a page made.
            claimed = presented.referer if claimed is None else None
        origin = origin_of(claimed) if claimed else None
        if origin is not None and origin in self.origins:
            return
        what = "websocket" if websocket else f"{scope.get('method')} request"
        if origin is None:
            raise CrossSiteRequestError(
                f"a cookie-authenticated {what} needs an Origin header from a trusted origin"
            )
        raise CrossSiteRequestError(
            f"a cookie-authenticated {what} from an untrusted origin is refused "
            "(add the page's origin to trusted_origins if it is yours)"
        )
