"""An MCP server whose tools need a Better Auth OAuth access token.

Built with the official MCP Python SDK (``FastMCP``), streamable HTTP at
``/mcp``. Tokens come from Better Auth's OAuth provider
(``@better-auth/oauth-provider``; see ``examples/better-auth-server/oauth-server.mjs``),
asked for with ``resource=<this server's URL>``; every call needs the
``reports:read`` scope. Without a token the server answers 401 with
``WWW-Authenticate: Bearer ... resource_metadata="..."`` and describes itself at
``/.well-known/oauth-protected-resource/mcp`` (RFC 9728), so an MCP client can
find Better Auth and sign the user in.

Run it (``pip install starlette-betterauth[mcp] uvicorn``)::

    BETTER_AUTH_URL=http://127.0.0.1:3000 python examples/mcp_server.py

Environment:
    BETTER_AUTH_URL  Better Auth's baseURL (default http://127.0.0.1:3000).
    PORT             port on 127.0.0.1 (default 8000).
    MCP_RESOURCE     this server's resource identifier (default http://127.0.0.1:PORT/mcp).
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.fastmcp import FastMCP
from starlette.applications import Starlette

from starlette_betterauth.mcp import BetterAuthTokenVerifier

PORT = int(os.environ.get("PORT", "8000"))
RESOURCE = os.environ.get("MCP_RESOURCE", f"http://127.0.0.1:{PORT}/mcp")
SCOPE = "reports:read"

verifier = BetterAuthTokenVerifier(
    base_url=os.environ.get("BETTER_AUTH_URL", "http://127.0.0.1:3000"), resource=RESOURCE
)
server = FastMCP(
    "reports",
    token_verifier=verifier,
    auth=verifier.auth_settings(required_scopes=[SCOPE]),
    host="127.0.0.1",
    port=PORT,
    stateless_http=True,
    json_response=True,
)

REPORTS = {"q1": 1250, "q2": 1730}


@server.tool()
def whoami() -> dict[str, Any]:
    """Who the access token belongs to: the user (or the client, for a machine token)."""
    token = get_access_token()
    assert token is not None  # the SDK calls tools only with a verified token
    claims = getattr(token, "claims", None) or {}
    return {
        "subject": getattr(token, "subject", None),
        "client_id": token.client_id,
        "scopes": token.scopes,
        "machine": claims.get("sub") == token.client_id and "sid" not in claims,
    }


@server.tool()
def report(quarter: str) -> int:
    """The revenue of a quarter (``q1`` or ``q2``)."""
    return REPORTS[quarter]


app: Starlette = server.streamable_http_app()


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT)
