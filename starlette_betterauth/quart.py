"""Quart: the user BetterAuthMiddleware authenticated, and guards for Quart views.

Quart views take no request argument, so the user is read from Quart's
``request`` or ``websocket`` context::

    from quart import Quart
    from starlette_betterauth import BetterAuthMiddleware, requires_role
    from starlette_betterauth.quart import current_user

    app = Quart(__name__)

    @app.get("/me")
    async def me():
        user = current_user()              # None when anonymous
        return {"id": user.id}

    @app.get("/admin")
    @requires_role("admin")                # below the route decorator
    async def admin():
        ...

    app.asgi_app = BetterAuthMiddleware(app.asgi_app, base_url="https://auth.example.com")

Wrapping ``app.asgi_app`` keeps ``app`` a Quart app (``app.run``, ``app.test_client``).
A refusal by :func:`~starlette_betterauth.requires_role` is a Quart
``Response`` with the middleware's status, ``WWW-Authenticate`` header and
JSON body; on a websocket route, the handshake's denial response.
"""

from __future__ import annotations

from typing import Any, cast

try:
    from quart import Response, has_request_context, has_websocket_context, request, websocket
    from quart.wrappers import BaseRequestWebsocket
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError("starlette_betterauth.quart needs Quart: pip install quart") from exc

from ._requirements import user_in
from ._responses import ErrorResponse, header_dict
from ._user import BetterAuthUser

__all__ = ["current_user"]


def current_user() -> BetterAuthUser | None:
    """The user of the request or websocket being handled; None when anonymous.

    Raises:
        RuntimeError: called outside a request or websocket context, or the
            app is not behind BetterAuthMiddleware.
    """
    connection = ADAPTER.current()
    if connection is None:
        raise RuntimeError("current_user() is called inside a Quart request or websocket")
    return user_in(connection.scope, "current_user()")


class _QuartAdapter:
    """Quart views return their response; a websocket view's response denies the handshake."""

    types: tuple[type, ...] = (BaseRequestWebsocket,)
    request_hint: type | None = None

    def answer(self, connection: Any, prepared: ErrorResponse) -> Response:
        status, headers, body = prepared
        return Response(
            body,
            status=status,
            headers=header_dict(headers),
        )

    async def deny_websocket(self, connection: Any, prepared: ErrorResponse) -> Response:
        return self.answer(connection, prepared)

    def current(self) -> BaseRequestWebsocket | None:
        connection: BaseRequestWebsocket | None = None
        if has_request_context():
            connection = cast(Any, request)._get_current_object()
        elif has_websocket_context():
            connection = cast(Any, websocket)._get_current_object()
        return connection


#: The guards' adapter for Quart views.
ADAPTER = _QuartAdapter()
