"""Litestar: a plugin that runs one BetterAuthMiddleware for the whole app, and guards.

Litestar builds its middleware once per route handler, so
``DefineMiddleware(BetterAuthMiddleware, ...)`` makes one verifier, one
key-set cache and one token cache per route, and the middleware never sees
the app's lifespan (no ``warm_on_startup``). :class:`BetterAuthPlugin` makes
one middleware and puts it in front of every route; it warms the key set at
startup when asked and closes its clients at shutdown::

    from litestar import Litestar, Request, get
    from starlette_betterauth import BetterAuthUser
    from starlette_betterauth.litestar import BetterAuthPlugin, require_role

    @get("/me")
    async def me(request: Request[BetterAuthUser, Any, Any]) -> dict[str, str]:
        return {"id": request.user.id}

    @get("/admin", guards=[require_role("admin")])
    async def admin() -> str: ...

    app = Litestar(
        [me, admin],
        plugins=[BetterAuthPlugin(base_url="https://auth.example.com", warm_on_startup=True)],
    )

The guards refuse by raising :class:`BetterAuthException`; the plugin
registers :func:`exception_handler`, which answers as the middleware does
(status, ``WWW-Authenticate`` header and JSON body). A refused websocket is
closed before accept (the server answers the handshake with 403).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, cast, overload

try:
    from litestar import Response
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection
    from litestar.enums import ScopeType
    from litestar.exceptions import HTTPException, WebSocketException
    from litestar.handlers.base import BaseRouteHandler
    from litestar.plugins import InitPlugin
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError("starlette_betterauth.litestar needs Litestar: pip install litestar") from exc
from starlette.types import ASGIApp, Receive, Scope, Send

from ._observability import logger
from ._requirements import MISSING, Refusal, Requirement, user_in
from ._responses import BODY_HEADERS, ErrorResponse, header_dict, send_websocket_denial
from ._user import BetterAuthUser
from .errors import BetterAuthError, KeySetError
from .middleware import BetterAuthMiddleware

__all__ = [
    "BetterAuthException",
    "BetterAuthPlugin",
    "Guard",
    "exception_handler",
    "require_role",
    "require_scope",
    "require_user",
]

#: A Litestar guard: ``(connection, route_handler) -> None``, raising to refuse.
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]

# Litestar sets these from the content it is given.


def _response(prepared: ErrorResponse) -> Response[bytes]:
    status, headers, body = prepared
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers=header_dict(headers, omit=BODY_HEADERS),
    )


class BetterAuthException(HTTPException):
    """A refusal by a guard: the middleware's status and headers, the reason as detail.

    Attributes:
        error: the :class:`~starlette_betterauth.errors.BetterAuthError` behind it.
    """

    def __init__(self, refusal: Refusal) -> None:
        status, headers, _ = refusal.response
        super().__init__(
            detail=refusal.error.message,
            status_code=status,
            headers=header_dict(headers, omit=BODY_HEADERS),
        )
        self.error: BetterAuthError = refusal.error
        self._refusal = refusal

    def response(self) -> Response[bytes]:
        """The answer the middleware would give: status, headers and JSON body."""
        return _response(self._refusal.response)


def exception_handler(request: Any, exc: Exception) -> Response[Any]:
    """Answer a :class:`BetterAuthException` exactly as the middleware answers refusals.

    Registered by :class:`BetterAuthPlugin`; without the plugin:
    ``Litestar(..., exception_handlers={BetterAuthException: exception_handler})``.
    """
    if not isinstance(exc, BetterAuthException):
        raise TypeError(f"exception_handler answers BetterAuthException, not {type(exc).__name__}")
    return exc.response()


def _guard(requirement: Requirement | None, where: str) -> Guard:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user = user_in(connection.scope, where)
        outcome: BetterAuthUser | Refusal
        if requirement is None:
            outcome = MISSING if user is None else user
        else:
            outcome = requirement.check(user)
        if isinstance(outcome, Refusal):
            if connection.scope["type"] == ScopeType.WEBSOCKET:
                raise WebSocketException(detail=outcome.error.message, code=1008)
            raise BetterAuthException(outcome)

    guard.__qualname__ = guard.__name__ = where
    return guard


def require_user() -> Guard:
    """A guard letting any signed-in user through: 401 for anonymous callers.

    Useful with ``optional=True`` or public routes, where the middleware lets
    anonymous callers reach the app: ``@get("/me", guards=[require_user()])``.
    """
    return _guard(None, "require_user")


@overload
def require_role(role: str, /) -> Guard: ...
@overload
def require_role(*, any_of: Iterable[str]) -> Guard: ...
@overload
def require_role(*, all_of: Iterable[str]) -> Guard: ...
def require_role(
    *roles: str,
    any_of: Iterable[str] | None = None,
    all_of: Iterable[str] | None = None,
) -> Guard:
    """A guard letting through users with a role, spelled like ``requires_role``.

    ``require_role("admin")``, ``require_role(any_of=("admin", "editor"))``
    (either) or ``require_role(all_of=("staff", "auditor"))`` (both); use it on
    a handler, controller, router or the app::

        @get("/admin", guards=[require_role("admin")])
        async def admin() -> str: ...

    Raises:
        ConfigurationError: at import time, for an ambiguous or empty spelling.
        BetterAuthException: per request: 401 anonymous, 403 without the role.
    """
    return _guard(Requirement("role", "require_role", roles, any_of, all_of), "require_role")


@overload
def require_scope(scope: str, /) -> Guard: ...
@overload
def require_scope(*, any_of: Iterable[str]) -> Guard: ...
@overload
def require_scope(*, all_of: Iterable[str]) -> Guard: ...
def require_scope(
    *scopes: str,
    any_of: Iterable[str] | None = None,
    all_of: Iterable[str] | None = None,
) -> Guard:
    """A guard letting through OAuth access tokens granting a scope; spelled like
    :func:`require_role`.

    Raises:
        ConfigurationError: at import time, for an ambiguous or empty spelling.
        BetterAuthException: per request: 401 anonymous, 403 without the scope.
    """
    return _guard(Requirement("scope", "require_scope", scopes, any_of, all_of), "require_scope")


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("BetterAuthPlugin's middleware runs in front of the app's routes only")


class BetterAuthPlugin(InitPlugin):
    """Authenticate every route of a Litestar app with one shared BetterAuthMiddleware.

    Takes the keyword options of :class:`~starlette_betterauth.BetterAuthMiddleware`
    (``base_url=``, ``public=``, ``optional=``, ``accept=``, ``warm_on_startup=``...).
    One verifier, key-set cache and token cache serve every route: ten routes
    cost one key-set fetch. With ``warm_on_startup=True`` the key set is
    fetched in the app's startup; the clients are closed at its shutdown.

    Attributes:
        middleware: the shared middleware (its ``verifier.jwks`` for readiness checks).

    Raises:
        ConfigurationError: at construction, for a missing or invalid setting.
    """

    def __init__(self, **options: Any) -> None:
        self.middleware = BetterAuthMiddleware(_no_app, **options)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Put the middleware in front of every route and hook startup and shutdown."""
        app_config.middleware.insert(0, cast(Any, self._in_front_of))
        app_config.exception_handlers.setdefault(BetterAuthException, exception_handler)
        app_config.on_startup.append(self._startup)
        app_config.on_shutdown.append(self.middleware.aclose)
        return app_config

    def _in_front_of(self, app: ASGIApp) -> BetterAuthMiddleware:
        # Litestar asks for one middleware per route: each is a shallow copy
        # sharing the verifier, the credential kinds and the caches.
        route = copy.copy(self.middleware)
        route.app = app
        return route

    async def _startup(self) -> None:
        if not self.middleware.warm_on_startup:
            return
        try:
            await self.middleware.verifier.jwks.refresh()
        except KeySetError as exc:
            logger.warning("key set not loaded at startup: %s", exc.message)


class _LitestarAdapter:
    """Litestar handlers return a ``Response``; websockets are refused before accept."""

    types: tuple[type, ...] = (ASGIConnection,)
    request_hint: type | None = ASGIConnection

    def answer(self, connection: Any, prepared: ErrorResponse) -> Response[bytes]:
        return _response(prepared)

    async def deny_websocket(self, connection: Any, prepared: ErrorResponse) -> None:
        extensions = connection.scope.get("extensions")
        await send_websocket_denial(extensions, connection.receive, connection.send, prepared)

    def current(self) -> None:
        return None


#: The guards' adapter for Litestar handlers.
ADAPTER = _LitestarAdapter()
