"""Verify Better Auth JWTs in any ASGI app (Starlette, FastAPI, ...).

Example::

    from starlette.applications import Starlette
    from starlette_betterauth import BetterAuthMiddleware

    app = Starlette(routes=routes)
    app.add_middleware(BetterAuthMiddleware, base_url="https://auth.example.com")
"""

from __future__ import annotations

from ._jwks import JWKSCache, KeySetStatus
from ._settings import KeySetOptions, RedisStore, VerifierSettings
from ._sync import SyncTokenVerifier
from ._user import BetterAuthUser
from ._verifier import TokenVerifier, VerifiedToken
from .guards import requires_role, requires_scope
from .middleware import BetterAuthMiddleware

__version__ = "0.1.0"

__all__ = [
    "BetterAuthMiddleware",
    "BetterAuthUser",
    "JWKSCache",
    "KeySetOptions",
    "KeySetStatus",
    "RedisStore",
    "SyncTokenVerifier",
    "TokenVerifier",
    "VerifiedToken",
    "VerifierSettings",
    "__version__",
    "requires_role",
    "requires_scope",
]
