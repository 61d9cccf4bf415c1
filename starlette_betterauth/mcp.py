"""MCP servers that trust Better Auth: a token verifier for the official Python SDK (``mcp``).

The SDK's ``FastMCP`` (``mcp.server.fastmcp``; ``MCPServer`` in mcp 2) takes a
``token_verifier`` and ``AuthSettings``; it then serves the protected resource
metadata (RFC 9728) and answers 401 with ``WWW-Authenticate: Bearer
resource_metadata="..."`` by itself. :class:`BetterAuthTokenVerifier` verifies
Better Auth's OAuth access tokens there exactly as
:class:`~starlette_betterauth.credentials.AccessToken` does in the middleware::

    from mcp.server.fastmcp import FastMCP
    from starlette_betterauth.mcp import BetterAuthTokenVerifier

    verifier = BetterAuthTokenVerifier(
        base_url="https://auth.example.com", resource="https://mcp.example.com/mcp"
    )
    server = FastMCP(
        "reports",
        token_verifier=verifier,
        auth=verifier.auth_settings(required_scopes=["reports:read"]),
    )

Install with ``pip install starlette-betterauth[mcp]``. FastMCP 2 (the
``fastmcp`` package) takes the same verifier through its ``TokenVerifier``
interface: wrap :meth:`BetterAuthTokenVerifier.verify_token` in a subclass.

The SDK's interface passes the bearer token alone, so DPoP-bound tokens (which
need the request for their proof) are refused here: put
:class:`~starlette_betterauth.BetterAuthMiddleware` with ``AccessToken`` in front
of the MCP app to accept them. Likewise the SDK can only answer 401, so when
Better Auth cannot be reached the token is refused (and a warning logged)
instead of a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

try:
    from mcp.server.auth.provider import AccessToken as MCPAccessToken
    from mcp.server.auth.settings import AuthSettings
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "starlette_betterauth.mcp needs the MCP Python SDK: pip install starlette-betterauth[mcp]"
    ) from exc

from ._access_tokens import bind_standalone
from ._headers import Presented
from ._settings import DEFAULT_LEEWAY, KeySetOptions, VerifierSettings, resolve_settings
from ._user import RoleSource
from .credentials import AccessToken, Introspection
from .errors import BetterAuthError, ServiceUnavailableError

__all__ = ["BetterAuthTokenVerifier"]

logger = logging.getLogger("starlette_betterauth")


class BetterAuthTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` for Better Auth's OAuth access tokens.

    ``verify_token(token)`` returns the SDK's ``AccessToken`` (``client_id``,
    ``scopes``, ``expires_at``, ``resource``, and with SDKs that have them
    ``subject`` and ``claims``) for a token the
    :class:`~starlette_betterauth.credentials.AccessToken` kind accepts, and
    None otherwise (the refusal's reason is logged at INFO, never the token).

    Args:
        resource: the MCP server's resource identifier (its URL, e.g.
            ``https://mcp.example.com/mcp``): tokens must name it in ``aud``.
        base_url: Better Auth's ``baseURL`` (default: ``BETTER_AUTH_URL``).
        issuer, discovery_url, introspection: as for ``AccessToken``.
        jwks_url: the key set's URL (default ``{base_url}/api/auth/jwks``).
        algorithms, leeway, key_set: as for the middleware.
        roles: where roles come from (as for the middleware).
        token_cache_size, token_cache_ttl: the verified-token cache.
        http_client: an ``httpx.AsyncClient`` for key-set, metadata and
            introspection calls.

    Raises:
        ConfigurationError: a missing or invalid setting, named.
    """

    def __init__(
        self,
        *,
        resource: str,
        base_url: str | None = None,
        issuer: str | None = None,
        discovery_url: str | None = None,
        introspection: Introspection | None = None,
        jwks_url: str | None = None,
        algorithms: Sequence[str] | None = None,
        leeway: float = DEFAULT_LEEWAY,
        key_set: KeySetOptions | None = None,
        roles: RoleSource = "role",
        token_cache_size: int = 10_000,
        token_cache_ttl: float = 300.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        # Only the key set's settings: the session-JWT issuer and audience play no part.
        settings: VerifierSettings = {
            "base_url": base_url,
            "jwks_url": jwks_url,
            "algorithms": algorithms,
            "leeway": leeway,
            "verify_issuer": False,
            "verify_audience": False,
        }
        if key_set is not None:
            settings["key_set"] = key_set
        self.resource = resource
        kind = AccessToken(
            resource=resource,
            issuer=issuer,
            discovery_url=discovery_url,
            introspection=introspection,
            dpop=False,
            resource_metadata=False,
        )
        self._kind = bind_standalone(
            kind,
            resolve_settings(settings),
            roles=roles,
            token_cache_size=token_cache_size,
            token_cache_ttl=token_cache_ttl,
            http_client=http_client,
        )
        #: The authorization server's issuer (Better Auth's baseURL + basePath).
        self.issuer = self._kind.issuer
        self._fields = set(MCPAccessToken.model_fields)

    def auth_settings(self, *, required_scopes: Sequence[str] | None = None) -> AuthSettings:
        """The SDK's ``AuthSettings`` for this verifier: Better Auth as the authorization
        server, this resource, and the scopes every request needs."""
        options: dict[str, Any] = {
            "issuer_url": self.issuer,
            "resource_server_url": self.resource,
            "required_scopes": list(required_scopes) if required_scopes is not None else None,
        }
        if "validate_token_resource" in AuthSettings.model_fields:
            options["validate_token_resource"] = True
        return AuthSettings(**options)

    async def verify_token(self, token: str) -> MCPAccessToken | None:
        """The SDK's ``AccessToken`` for ``token``, or None when it is refused."""
        kind = self._kind
        presented = Presented(token, None, None, None)
        try:
            principal = kind.cached(token) or await kind.authenticate(token, presented)
        except ServiceUnavailableError as exc:
            logger.warning("MCP token refused, Better Auth unavailable: %s", exc.message)
            return None
        except BetterAuthError as exc:
            logger.info("MCP token refused: %s: %s", type(exc).__name__, exc.message)
            return None
        user = principal[0]
        if user.dpop_jkt is not None:
            logger.info("MCP token refused: a DPoP-bound token cannot be used as a Bearer token")
            return None
        values: dict[str, Any] = {
            "token": token,
            "client_id": user.client_id or user.id,
            "scopes": sorted(user.scopes),
            "expires_at": int(user.expires_at) if user.expires_at is not None else None,
            "resource": self.resource,
            "subject": user.id,
            "claims": dict(user.claims),
        }
        return MCPAccessToken(**{name: v for name, v in values.items() if name in self._fields})

    async def aclose(self) -> None:
        """Close the HTTP clients the verifier opened (key set, metadata, introspection)."""
        await self._kind.aclose()
        await self._kind.shared_jwks.aclose()
