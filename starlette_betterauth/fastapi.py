"""FastAPI dependencies for the user BetterAuthMiddleware authenticated.

Needs the ``fastapi`` extra (``pip install 'starlette-betterauth[fastapi]'``).
The dependencies never verify a token: the middleware has done so and put the
user in ``request.state.user``; they read it, check roles or scopes, and
declare the bearer scheme so the OpenAPI docs page offers its Authorize
button::

    from fastapi import Depends, FastAPI
    from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser
    from starlette_betterauth.fastapi import (
        BetterAuthHTTPException, CurrentUser, error_handler, require_role,
    )

    app = FastAPI()
    app.add_middleware(BetterAuthMiddleware, base_url="https://auth.example.com")
    app.add_exception_handler(BetterAuthHTTPException, error_handler)

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"id": user.id}

    @app.get("/admin")
    async def admin(user: Annotated[BetterAuthUser, Depends(require_role("admin"))]) -> str:
        return user.id

A refusal raises :class:`BetterAuthHTTPException` (an ``HTTPException``): its
status and ``WWW-Authenticate`` header are the middleware's; with
:func:`error_handler` registered its JSON body is too, without it FastAPI
answers ``{"detail": "<reason>"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Annotated, Any, overload

try:
    from fastapi import Depends, HTTPException, Security
    from fastapi.security import HTTPBearer
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "starlette_betterauth.fastapi needs FastAPI: pip install 'starlette-betterauth[fastapi]'"
    ) from exc
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ._requirements import MISSING, Refusal, Requirement, http_response, user_in
from ._user import BetterAuthUser

__all__ = [
    "BetterAuthHTTPException",
    "CurrentUser",
    "OptionalUser",
    "bearer_scheme",
    "current_user",
    "error_handler",
    "optional_user",
    "require_role",
    "require_scope",
]

_RESPONSE_OWN_HEADERS = frozenset({b"content-type", b"content-length"})

UserDependency = Callable[[HTTPConnection, None], Coroutine[Any, Any, BetterAuthUser]]


class _BearerDeclaration(HTTPBearer):
    """The bearer scheme as OpenAPI sees it; reads nothing, the middleware verified the token."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


#: Declares ``Authorization: Bearer <JWT>`` in the OpenAPI schema. Every
#: dependency here uses it; add ``Security(bearer_scheme)`` to a route or app's
#: ``dependencies=`` to mark other operations as needing the token.
bearer_scheme = _BearerDeclaration(
    scheme_name="BetterAuth",
    bearerFormat="JWT",
    description="A JWT from Better Auth (GET /api/auth/token, or the set-auth-jwt header).",
    auto_error=False,
)


class BetterAuthHTTPException(HTTPException):
    """A refusal by a dependency: the middleware's status and headers, the reason as detail.

    Attributes:
        error: the :class:`~starlette_betterauth.errors.BetterAuthError` behind it.
    """

    def __init__(self, refusal: Refusal) -> None:
        status, headers, _ = refusal.response
        super().__init__(
            status_code=status,
            detail=refusal.error.message,
            headers={
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in headers
                if name not in _RESPONSE_OWN_HEADERS
            },
        )
        self.error = refusal.error
        self._refusal = refusal

    def response(self) -> Response:
        """The answer the middleware would give: status, headers and JSON body."""
        return http_response(self._refusal.response)


async def error_handler(request: Request, exc: Exception) -> Response:
    """Answer a :class:`BetterAuthHTTPException` exactly as the middleware answers refusals.

    ``app.add_exception_handler(BetterAuthHTTPException, error_handler)``; on a
    websocket route the answer is sent as the handshake's denial response.
    """
    if not isinstance(exc, BetterAuthHTTPException):
        raise TypeError(f"error_handler answers BetterAuthHTTPException, not {type(exc).__name__}")
    return exc.response()


async def optional_user(
    connection: HTTPConnection, _: Annotated[None, Security(bearer_scheme)]
) -> BetterAuthUser | None:
    """The signed-in user, or None for an anonymous caller (public route, ``optional=True``)."""
    return user_in(connection.scope, "optional_user")


async def current_user(
    connection: HTTPConnection, _: Annotated[None, Security(bearer_scheme)]
) -> BetterAuthUser:
    """The signed-in user; an anonymous caller is refused with 401.

    Raises:
        BetterAuthHTTPException: 401, ``WWW-Authenticate: Bearer``.
    """
    user = user_in(connection.scope, "current_user")
    if user is None:
        raise BetterAuthHTTPException(MISSING)
    return user


#: ``user: CurrentUser`` in a path operation: the signed-in user, else 401.
CurrentUser = Annotated[BetterAuthUser, Depends(current_user)]
#: ``user: OptionalUser`` in a path operation: the signed-in user or None.
OptionalUser = Annotated[BetterAuthUser | None, Depends(optional_user)]


def _dependency(requirement: Requirement, where: str) -> UserDependency:
    async def dependency(
        connection: HTTPConnection, _: Annotated[None, Security(bearer_scheme)]
    ) -> BetterAuthUser:
        outcome = requirement.check(user_in(connection.scope, where))
        if isinstance(outcome, Refusal):
            raise BetterAuthHTTPException(outcome)
        return outcome

    return dependency


@overload
def require_role(role: str, /) -> UserDependency: ...
@overload
def require_role(*, any_of: Iterable[str]) -> UserDependency: ...
@overload
def require_role(*, all_of: Iterable[str]) -> UserDependency: ...
def require_role(
    *roles: str,
    any_of: Iterable[str] | None = None,
    all_of: Iterable[str] | None = None,
) -> UserDependency:
    """A dependency giving the signed-in user if they have a role, spelled like ``requires_role``.

    ``require_role("admin")``, ``require_role(any_of=("admin", "editor"))``
    (either) or ``require_role(all_of=("staff", "auditor"))`` (both)::

        Admin = Annotated[BetterAuthUser, Depends(require_role("admin"))]

        @app.delete("/users/{user_id}")
        async def delete_user(user_id: str, admin: Admin) -> None: ...

    It is a dependency, not a decorator: the decorator for endpoints is
    :func:`starlette_betterauth.requires_role` (with an ``s``), and
    ``@require_role("admin")`` above a function fails at import with a TypeError.

    Raises:
        ConfigurationError: at import time, for an ambiguous or empty spelling.
        BetterAuthHTTPException: per request: 401 anonymous, 403 without the role.
    """
    return _dependency(Requirement("role", "require_role", roles, any_of, all_of), "require_role")


@overload
def require_scope(scope: str, /) -> UserDependency: ...
@overload
def require_scope(*, any_of: Iterable[str]) -> UserDependency: ...
@overload
def require_scope(*, all_of: Iterable[str]) -> UserDependency: ...
def require_scope(
    *scopes: str,
    any_of: Iterable[str] | None = None,
    all_of: Iterable[str] | None = None,
) -> UserDependency:
    """A dependency giving the caller if their OAuth access token grants a scope.

    Spelled like :func:`require_role`: ``require_scope("reports:read")``,
    ``any_of=(...)`` or ``all_of=(...)``.

    Raises:
        ConfigurationError: at import time, for an ambiguous or empty spelling.
        BetterAuthHTTPException: per request: 401 anonymous, 403 without the scope.
    """
    return _dependency(
        Requirement("scope", "require_scope", scopes, any_of, all_of), "require_scope"
    )
