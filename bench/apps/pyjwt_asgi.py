"""A pure-ASGI middleware written the straightforward way on PyJWT.

What a developer writes by hand: read the header, let ``PyJWKClient`` find the
key by the token's ``kid`` (key set and keys cached), ``jwt.decode`` with the
algorithms, audience and issuer, refuse with 401 otherwise.
"""

from __future__ import annotations

import os

import jwt
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .noauth import hello

_UNAUTHORIZED_HEADERS = [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]


class PyJWTMiddleware:
    """Verifies ``Authorization: Bearer`` JWTs with PyJWT; the claims go to ``scope["user"]``."""

    def __init__(self, app: ASGIApp, *, base_url: str, algorithms: list[str]) -> None:
        self.app = app
        self.base_url = base_url
        self.algorithms = algorithms
        self.jwks = jwt.PyJWKClient(f"{base_url}/api/auth/jwks", cache_keys=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise jwt.InvalidTokenError("no bearer token")
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.base_url,
                issuer=self.base_url,
            )
        except jwt.PyJWTError:
            await send(
                {"type": "http.response.start", "status": 401, "headers": _UNAUTHORIZED_HEADERS}
            )
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        scope["user"] = claims
        await self.app(scope, receive, send)


app = PyJWTMiddleware(
    Starlette(routes=[Route("/hello", hello)]),
    base_url=os.environ["BENCH_BASE_URL"],
    algorithms=["EdDSA", "RS256"],
)
