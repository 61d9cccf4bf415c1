"""Role and scope guards for endpoints: where authorization runs, once per endpoint.

:class:`~starlette_betterauth.BetterAuthMiddleware` decides *who* the caller is;
these decorators decide whether that caller may use one endpoint::

    from starlette_betterauth import requires_role, requires_scope

    @requires_role("admin")
    async def dashboard(request: Request) -> Response: ...

    @requires_role(any_of=("admin", "editor"))      # either role
    async def edit(request: Request) -> Response: ...

    @requires_role(all_of=("staff", "auditor"))     # both roles
    async def audit(request: Request) -> Response: ...

    @requires_scope("reports:read")                 # OAuth access tokens
    async def reports(request: Request) -> Response: ...

They guard Starlette function endpoints (async and sync), ``HTTPEndpoint`` and
``WebSocketEndpoint`` methods, websocket endpoints and FastAPI path operations.
The answers are those of the middleware: 401 with ``WWW-Authenticate: Bearer``
for an anonymous caller (``optional=True`` or a public route), 403 with
``WWW-Authenticate: Bearer error="insufficient_scope"`` and a short JSON reason
for a caller without the role or scope; a websocket is refused before accept.
Stacked guards must all pass. Put the guard *below* a route decorator such as
``@app.get(...)``, which registers the function it is given. They are not
FastAPI dependencies: ``Depends(requires_role("admin"))`` fails when the route
is defined, naming :func:`starlette_betterauth.fastapi.require_role`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar, cast, overload

from starlette.requests import HTTPConnection
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

from ._requirements import Refusal, Requirement, describe, http_response, user_in
from ._responses import ErrorResponse, send_websocket_denial
from .errors import ConfigurationError

__all__ = ["requires_role", "requires_scope"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The keyword under which a guard that found no request parameter receives the
#: connection (declared in the wrapper's signature, so FastAPI passes it).
_CONNECTION_PARAMETER: Final = "betterauth_connection"
_CONNECTION_NAMES: Final = frozenset({"request", "websocket"})
_VARIADIC: Final = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
# Annotations that say nothing, so a parameter named request or websocket is it.
_UNTYPED: Final = (inspect.Parameter.empty, Any, object)


async def _deny_websocket(websocket: WebSocket, prepared: ErrorResponse) -> None:
    """Refuse a websocket as the middleware does: HTTP denial, or close 1008 before accept."""
    if websocket.application_state is not WebSocketState.CONNECTING:
        # Something accepted it already: all that is left is to close it.
        if websocket.application_state is WebSocketState.CONNECTED:
            await websocket.close(code=1008)
        return
    receive = websocket.receive
    if websocket.client_state is not WebSocketState.CONNECTING:

        async def connected() -> Message:
            return {"type": "websocket.connect"}

        receive = connected
    extensions = websocket.scope.get("extensions")
    await send_websocket_denial(extensions, receive, websocket.send, prepared)


def _connection_parameter(func: Callable[..., Any]) -> tuple[str, int | None, bool] | None:
    """Find the request/websocket parameter: (name, position or None, is_websocket)."""
    try:
        signature = inspect.signature(func, eval_str=True)
    except Exception:
        # Annotations naming types imported only for type checking cannot be
        # evaluated; the parameter names still can be read.
        signature = inspect.signature(func)
    for position, parameter in enumerate(signature.parameters.values()):
        if parameter.kind in _VARIADIC:
            continue
        annotation = parameter.annotation
        if isinstance(annotation, type) and issubclass(annotation, HTTPConnection):
            websocket = issubclass(annotation, WebSocket)
        elif parameter.name in _CONNECTION_NAMES and (
            annotation in _UNTYPED or isinstance(annotation, str)
        ):
            websocket = parameter.name == "websocket"
        else:
            continue
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            return parameter.name, None, websocket
        return parameter.name, position, websocket
    return None


def _guard(requirement: Requirement, func: _F, where: str) -> _F:
    name = describe(func)
    if isinstance(func, staticmethod | classmethod):
        kind = type(func).__name__
        raise ConfigurationError(f"{where} got the {kind} {name}: put the guard below @{kind}")
    if not (inspect.isfunction(func) or inspect.ismethod(func)):
        hint = " (decorate its methods: get, post, ...)" if isinstance(func, type) else ""
        raise ConfigurationError(f"{where} guards endpoint functions, and {name} is not one{hint}")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise ConfigurationError(f"{where} cannot guard the generator function {name}")
    is_async = inspect.iscoroutinefunction(func)
    found = _connection_parameter(func)
    hidden = found is None
    if found is None:
        signature = inspect.signature(func)
        if any(p.kind in _VARIADIC for p in signature.parameters.values()):
            raise ConfigurationError(
                f"{where} cannot find the connection of {name}: give it a "
                "'request: Request' or 'websocket: WebSocket' parameter"
            )
        parameter_name = _CONNECTION_PARAMETER
        while parameter_name in signature.parameters:
            parameter_name += "_"
        position: int | None = None
    else:
        parameter_name, position, websocket = found
        if websocket and not is_async:
            raise ConfigurationError(f"{where}: the websocket endpoint {name} must be async")

    def connection_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection:
        if hidden:
            connection = kwargs.pop(parameter_name, None)
        elif parameter_name in kwargs:
            connection = kwargs[parameter_name]
        elif position is not None and position < len(args):
            connection = args[position]
        else:
            connection = None
        if not isinstance(connection, HTTPConnection):
            raise TypeError(
                f"{name} is guarded by {where} and was called without its request "
                f"(got {type(connection).__name__} for {parameter_name!r})"
            )
        return connection

    label = f"{where} on {name}"

    def refusal_for(connection: HTTPConnection) -> Refusal | None:
        outcome = requirement.check(user_in(connection.scope, label))
        return outcome if isinstance(outcome, Refusal) else None

    wrapper: Callable[..., Any]
    if is_async:

        @functools.wraps(func)
        async def async_guard(*args: Any, **kwargs: Any) -> Any:
            connection = connection_of(args, kwargs)
            refusal = refusal_for(connection)
            if refusal is None:
                return await func(*args, **kwargs)
            if isinstance(connection, WebSocket):
                await _deny_websocket(connection, refusal.response)
                return None
            return http_response(refusal.response)

        wrapper = async_guard
    else:

        @functools.wraps(func)
        def sync_guard(*args: Any, **kwargs: Any) -> Any:
            refusal = refusal_for(connection_of(args, kwargs))
            if refusal is None:
                return func(*args, **kwargs)
            return http_response(refusal.response)

        wrapper = sync_guard

    if hidden:
        # FastAPI builds its dependency graph from the signature: declaring the
        # connection there makes it pass the request (or websocket) to the guard.
        signature = inspect.signature(func)
        extra = inspect.Parameter(
            parameter_name, inspect.Parameter.KEYWORD_ONLY, annotation=HTTPConnection
        )
        cast(Any, wrapper).__signature__ = signature.replace(
            parameters=[*signature.parameters.values(), extra]
        )
    return cast(_F, wrapper)


def _replayable(names: Iterable[str] | None) -> Iterable[str] | None:
    """A list, set or generator as a tuple, so it can be both checked and quoted."""
    if isinstance(names, Iterable) and not isinstance(names, str):
        return tuple(names)
    return names


class _GuardDecorator:
    """What ``requires_role(...)`` and ``requires_scope(...)`` return: a decorator.

    It is not a FastAPI dependency, and the one-letter slip
    ``Depends(requires_role("admin"))`` would make FastAPI read the decorator's
    ``func`` parameter as a required query parameter (a 422 on every request).
    FastAPI reads a dependency's signature when the route is defined, so
    ``__signature__`` raises there, at import, naming the dependency to use.
    """

    __slots__ = ("_arguments", "_requirement", "_where")

    def __init__(
        self,
        kind: str,
        where: str,
        positional: tuple[object, ...],
        any_of: Iterable[str] | None,
        all_of: Iterable[str] | None,
    ) -> None:
        any_of, all_of = _replayable(any_of), _replayable(all_of)
        self._requirement = Requirement(kind, where, positional, any_of, all_of)
        self._where = where
        if positional:
            self._arguments = repr(positional[0])
        else:
            self._arguments = f"any_of={any_of!r}" if any_of is not None else f"all_of={all_of!r}"

    def __call__(self, func: _F) -> _F:
        return _guard(self._requirement, func, self._where)

    @property
    def __signature__(self) -> inspect.Signature:
        guard = f"{self._where}({self._arguments})"
        dependency = self._where.replace("requires_", "require_")
        raise ConfigurationError(
            f"{guard} is a decorator for endpoints, not a FastAPI dependency: write "
            f"Depends({dependency}({self._arguments})) "
            f"(from starlette_betterauth.fastapi import {dependency}), "
            f"or put @{guard} below the route decorator"
        )


@overload
def requires_role(role: str, /) -> Callable[[_F], _F]: ...
@overload
def requires_role(*, any_of: Iterable[str]) -> Callable[[_F], _F]: ...
@overload
def requires_role(*, all_of: Iterable[str]) -> Callable[[_F], _F]: ...
def requires_role(
    *roles: str,
    any_of: Iterable[str] | None = None,
    all_of: Iterable[str] | None = None,
) -> Callable[[_F], _F]:
    """Let only users with a role through to the decorated endpoint.

    Spell it one of three ways: ``requires_role("admin")`` (that role),
    ``requires_role(any_of=("admin", "editor"))`` (at least one of them) or
    ``requires_role(all_of=("staff", "auditor"))`` (every one). Roles are the
    user's :attr:`~starlette_betterauth.BetterAuthUser.roles`, read from the
    token as configured by the middleware's ``roles=`` option.

    The endpoint needs a ``request`` or ``websocket`` parameter (found by
    annotation or name); without one, as in FastAPI path operations, the
    guard declares a hidden ``HTTPConnection`` parameter that FastAPI fills.

    Example::

        @requires_role("admin")
        async def delete_user(request: Request) -> Response: ...

        @app.get("/reports")
        @requires_role(any_of=("admin", "analyst"))
        async def reports() -> list[Report]: ...

    Raises:
        ConfigurationError: at import time, for an ambiguous or empty spelling
            (``requires_role("a", "b")``), a function it cannot guard, or use
            as a FastAPI dependency (``Depends(requires_role("admin"))``; the
            dependency is :func:`starlette_betterauth.fastapi.require_role`).
    """
    return _GuardDecorator("role", "requires_role", roles, any_of, all_of)


@overload
def requires_scope(scope: str, /) -> Callable[[_F], _F]: ...
@overload
def requires_scope(*, any_of: Iterable[str]) -> Callable[[_F], _F]: ...
@overload
def requires_scope(*, all_of: Iterable[str]) -> Callable[[_F], _F]: ...
def requires_scope(
    *scopes: str,
    any_of: Iterable[str] | None = None,
    all_of: Iterable[str] | None = None,
) -> Callable[[_F], _F]:
    """Let only tokens granting an OAuth scope through to the decorated endpoint.

    Scopes come from the space-separated ``scope`` claim of OAuth access tokens
    (Better Auth's OAuth provider); spelled like :func:`requires_role`::

        @requires_scope("reports:read")
        async def reports(request: Request) -> Response: ...

        @requires_scope(all_of=("reports:read", "reports:export"))
        async def export(request: Request) -> Response: ...

    Raises:
        ConfigurationError: at import time, for an ambiguous or empty spelling,
            a function it cannot guard, or use as a FastAPI dependency (that is
            :func:`starlette_betterauth.fastapi.require_scope`).
    """
    return _GuardDecorator("scope", "requires_scope", scopes, any_of, all_of)
