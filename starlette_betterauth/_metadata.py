"""OAuth 2.0 Protected Resource Metadata (RFC 9728): where a client learns who issues tokens.

An API that accepts Better Auth's access tokens describes itself at
``/.well-known/oauth-protected-resource`` followed by its resource's path
(``https://api.example.com/mcp`` is described at
``https://api.example.com/.well-known/oauth-protected-resource/mcp``), and names
that URL in the ``resource_metadata`` parameter of its 401 challenges: this is
how an MCP client finds the authorization server. Built from the configuration,
once; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["WELL_KNOWN_PATH", "ResourceMetadata", "metadata_location"]

#: The well-known path RFC 9728 registers.
WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"


def metadata_location(resource: str) -> tuple[str, str] | None:
    """``(path, url)`` of the metadata of an http(s) ``resource``, or None for another URI.

    The path is the well-known path followed by the resource's own path (its
    trailing slash dropped); the URL puts it on the resource's origin.
    """
    parts = urlsplit(resource)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return None
    path = WELL_KNOWN_PATH + parts.path.rstrip("/")
    return path, f"{parts.scheme}://{parts.netloc}{path}"


@dataclass(frozen=True, slots=True)
class ResourceMetadata:
    """The metadata document of one protected resource.

    Attributes:
        resource: the resource identifier (the ``aud`` its tokens carry).
        path: where the document is served on this app.
        url: the document's URL, for the ``resource_metadata`` challenge parameter.
        body: the JSON document, encoded once.
    """

    resource: str
    path: str
    url: str
    body: bytes

    @classmethod
    def build(
        cls,
        resource: str,
        *,
        authorization_server: str,
        scopes_supported: Sequence[str] | None = None,
        dpop_algs: Sequence[str] | None = None,
        dpop_required: bool = False,
        resource_name: str | None = None,
    ) -> ResourceMetadata | None:
        """The document for ``resource``, or None when it is not an http(s) URL."""
        location = metadata_location(resource)
        if location is None:
            return None
        document: dict[str, object] = {
            "resource": resource,
            "authorization_servers": [authorization_server],
            "bearer_methods_supported": ["header"],
        }
        if scopes_supported is not None:
            document["scopes_supported"] = list(scopes_supported)
        if resource_name is not None:
            document["resource_name"] = resource_name
        if dpop_algs is not None:
            document["dpop_signing_alg_values_supported"] = list(dpop_algs)
            document["dpop_bound_access_tokens_required"] = dpop_required
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        return cls(resource=resource, path=location[0], url=location[1], body=body)

    def response(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of the answer to ``GET`` at :attr:`path`."""
        return (
            200,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode("ascii")),
                (b"cache-control", b"public, max-age=3600"),
                # A public document that browser-based MCP clients read cross-origin.
                (b"access-control-allow-origin", b"*"),
            ],
            self.body,
        )
