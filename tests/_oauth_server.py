"""Better Auth's OAuth provider for the integration tests (``oauth-server.mjs``).

``examples/better-auth-server/oauth-server.mjs`` runs better-auth 1.7.25 with
``@better-auth/oauth-provider`` 1.7.5 (in-memory). ``oauth_server_fixture(name, **env)``
makes a module-scoped fixture that starts it on a free loopback port and stops it by
its PID. :class:`OAuthAPI` drives it over HTTP as a client application would: sign-up,
client registration (through the server's development-only endpoint), the
authorization-code flow with PKCE, the client_credentials grant and DPoP-bound tokens.
:func:`mcp_example` runs ``examples/mcp_server.py`` as a process.

Without Node or the server's ``node_modules`` the fixtures skip, saying why (they fail
with ``BETTER_AUTH_REQUIRE_SERVER=1``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from _better_auth import (
    PASSWORD,
    _tail,
    _wait_for_line,
    module_fixture,
    node_server,
    require_server,
    stop_process,
    unique_email,
    unverified_part,
)

from starlette_betterauth.testing import DPoPKey

__all__ = [
    "REDIRECT_URI",
    "ClientApp",
    "OAuthAPI",
    "OAuthServer",
    "TokenResponse",
    "free_port",
    "mcp_example",
    "oauth_server_fixture",
    "unverified_part",
]

ROOT = Path(__file__).resolve().parent.parent
#: Web clients must use https redirect URIs on a public host; nothing is served there.
REDIRECT_URI = "https://app.example.com/callback"


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a server whose URL must be known before it starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- the server process ------------------------------------------------------------------------


class OAuthServer:
    """One running ``node oauth-server.mjs``; ``ready`` is the JSON line it printed."""

    def __init__(self, process: subprocess.Popen[bytes], ready: Mapping[str, Any]) -> None:
        self.process = process
        self.ready = ready
        self.url: str = ready["url"]
        self.issuer: str = ready["issuer"]
        self.jwks_url: str = ready["jwksUrl"]
        self.discovery_url: str = ready["discoveryUrl"]
        self.resources: list[str] = ready["resources"]

    def api_url(self, path: str) -> str:
        """The URL of a Better Auth endpoint, e.g. ``api_url("/oauth2/token")``."""
        return self.issuer + path


@contextmanager
def running_oauth_server(**env: str) -> Iterator[OAuthServer]:
    """Start ``node oauth-server.mjs`` with ``env`` on a free 127.0.0.1 port; stop it on exit."""
    require_server("@better-auth/oauth-provider")
    with node_server("oauth-server.mjs", "the OAuth server", {"DEV_ENDPOINTS": "1", **env}) as (
        process,
        ready,
    ):
        yield OAuthServer(process, ready)


def oauth_server_fixture(name: str, **env: str) -> Any:
    """A module-scoped fixture called ``name`` yielding an OAuth server started with ``env``."""
    return module_fixture(name, lambda: running_oauth_server(**env))


# -- the server's HTTP API ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientApp:
    """A registered OAuth client."""

    client_id: str
    client_secret: str
    registration: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A token endpoint answer."""

    access_token: str
    token_type: str
    scope: str | None
    refresh_token: str | None
    id_token: str | None
    document: Mapping[str, Any]


class OAuthAPI:
    """Drives a running OAuth server as a client application and a browser would.

    Keeps no cookies: each user's session cookie is passed explicitly, so Better Auth's
    origin check (which applies to cookie-carrying form posts) never sees one on the token
    endpoint.
    """

    def __init__(self, server: OAuthServer) -> None:
        self.server = server
        refuse_all = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self.http = httpx.AsyncClient(timeout=15.0, cookies=refuse_all)

    async def __aenter__(self) -> OAuthAPI:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()

    async def sign_up(self, email: str | None = None) -> tuple[str, str]:
        """A new user: ``(session token, session cookie header value)``."""
        response = await self.http.post(
            self.server.api_url("/sign-up/email"),
            json={"email": email or unique_email("oauth"), "password": PASSWORD, "name": "User"},
        )
        assert response.status_code == 200, response.text
        cookie = "; ".join(f"{name}={value}" for name, value in response.cookies.items())
        return response.headers["set-auth-token"], cookie

    async def register_client(self, **metadata: Any) -> ClientApp:
        """A confidential client (``client_secret_basic``) owned by a fresh user."""
        owner, _ = await self.sign_up()
        body: dict[str, Any] = {
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_basic",
            "skip_consent": True,
            "scope": "openid profile email offline_access reports:read reports:write",
            "client_credentials_scopes": ["reports:read"],
            **metadata,
        }
        response = await self.http.post(
            f"{self.server.url}/dev/oauth-clients",
            headers={"authorization": f"Bearer {owner}"},
            json=body,
        )
        assert response.status_code == 200, response.text
        document = response.json()
        return ClientApp(document["client_id"], document["client_secret"], document)

    async def _token(
        self, client: ClientApp, form: dict[str, str], dpop_key: DPoPKey | None
    ) -> TokenResponse:
        url = self.server.api_url("/oauth2/token")
        headers = {"dpop": dpop_key.proof("POST", url)} if dpop_key is not None else {}
        response = await self.http.post(
            url, data=form, auth=(client.client_id, client.client_secret), headers=headers
        )
        assert response.status_code == 200, response.text
        document = response.json()
        return TokenResponse(
            access_token=document["access_token"],
            token_type=document["token_type"],
            scope=document.get("scope"),
            refresh_token=document.get("refresh_token"),
            id_token=document.get("id_token"),
            document=document,
        )

    async def authorization_code(
        self,
        client: ClientApp,
        *,
        cookie: str,
        scope: str,
        resource: str | None,
        dpop_key: DPoPKey | None = None,
    ) -> TokenResponse:
        """The authorization-code flow with PKCE (S256) for the user whose session ``cookie``
        is given, as the browser and the client application drive it over HTTP."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        state = secrets.token_urlsafe(8)
        query = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": state,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "nonce": secrets.token_urlsafe(8),
        }
        if resource is not None:
            query["resource"] = resource
        authorize = await self.http.get(
            self.server.api_url("/oauth2/authorize"),
            params=query,
            headers={"cookie": cookie},
            follow_redirects=False,
        )
        assert authorize.status_code == 302, authorize.text
        location = authorize.headers["location"]
        assert location.startswith(REDIRECT_URI), location
        returned = parse_qs(urlsplit(location).query)
        assert returned["state"] == [state]
        form = {
            "grant_type": "authorization_code",
            "code": returned["code"][0],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
        if resource is not None:
            form["resource"] = resource
        return await self._token(client, form, dpop_key)

    async def client_credentials(
        self,
        client: ClientApp,
        *,
        scope: str,
        resource: str | None,
        dpop_key: DPoPKey | None = None,
    ) -> TokenResponse:
        """The client_credentials grant: a token for the client itself."""
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            form["resource"] = resource
        return await self._token(client, form, dpop_key)


# -- the example MCP server ------------------------------------------------------------------


@contextmanager
def mcp_example(better_auth_url: str, resource: str, port: int) -> Iterator[str]:
    """Run ``examples/mcp_server.py`` on ``port``; yield its MCP endpoint's URL."""
    with tempfile.TemporaryDirectory(prefix="mcp-example-") as tmp:
        log = Path(tmp, "log")
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / "mcp_server.py")],
                env={
                    **os.environ,
                    "BETTER_AUTH_URL": better_auth_url,
                    "MCP_RESOURCE": resource,
                    "PORT": str(port),
                    "PYTHONPATH": str(ROOT),
                },
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            try:
                _wait_for_line(
                    process, log, re.compile(r"Uvicorn running on http://127\.0\.0\.1"), "MCP"
                )
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its output:\n{_tail(log)}") from None
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            stop_process(process)
