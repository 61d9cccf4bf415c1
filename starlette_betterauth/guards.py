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
``@app.get(...)``, which registers the function it is given.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar, cast, overload

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

from ._responses import ErrorResponse, error_response, missing_token, send_websocket_denial
from ._user import BetterAuthUser
from .errors import (
    BetterAuthError,
    ConfigurationError,
    InsufficientRoleError,
)

__all__ = ["requires_role", "requires_scope"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The keyword under which a guard that found no request parameter receives the
#: connection (declared in the wrapper's signature, so FastAPI passes it).
_CONNECTION_PARAMETER: Final = "betterauth_connection"
_CONNECTION_NAMES: Final = frozenset({"request", "websocket"})
_VARIADIC: Final = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
# Annotations that say nothing, so a parameter named request or websocket is it.
_UNTYPED: Final = (inspect.Parameter.empty, Any, object)


class _Refusal:
    """An authorization error and the response it is answered with, built once."""

    __slots__ = ("error", "response")

    def __init__(self, error: BetterAuthError) -> None:
        self.error = error
        self.response: ErrorResponse = error_response(error)


#: The same answer the middleware gives a request without a token.
_MISSING: Final = _Refusal(missing_token())


class _Requirement:
    """Roles or scopes an endpoint needs: one name, any of several, or all of several."""

    __slots__ = ("_all", "_denied", "_names", "_scopes")

    def __init__(
        self,
        kind: str,
        where: str,
        positional: tuple[object, ...],
        any_of: Iterable[str] | None,
        all_of: Iterable[str] | None,
    ) -> None:
        given = [form for form in (positional or None, any_of, all_of) if form is not None]
        if len(given) != 1:
            raise ConfigurationError(
                f"{where} takes one {kind} ({where}('name')), any_of=(...) or all_of=(...); "
                f"got {len(given)} of those"
            )
        if positional:
            if len(positional) > 1 or not isinstance(positional[0], str):
                raise ConfigurationError(_positional_message(kind, where, positional))
            names = self._names_of(kind, where, "", positional)
        else:
            keyword = "any_of" if any_of is not None else "all_of"
            names = self._names_of(kind, where, keyword, any_of if any_of is not None else all_of)
        self._all = all_of is not None or len(names) == 1
        if len(names) == 1:
            description = f"the {names[0]!r} {kind}"
        else:
            description = f"{'all' if self._all else 'one'} of the {kind}s {', '.join(names)}"
        self._names = frozenset(names)
        self._scopes = kind == "scope"
        self._denied = _Refusal(InsufficientRoleError(f"this endpoint needs {description}"))

    @staticmethod
    def _names_of(kind: str, where: str, keyword: str, value: object) -> tuple[str, ...]:
        label = f"{where}({keyword}=...)" if keyword else where
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ConfigurationError(
                f"{label} takes a tuple of {kind}s, e.g. {keyword}=('admin', 'editor'), "
                f"got {value!r}"
            )
        names = tuple(value)
        if not names:
            raise ConfigurationError(f"{label} needs at least one {kind}")
        # A role claim is split on commas and a scope claim on spaces, so such a
        # name could never be held: it is a misspelt list.
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ConfigurationError(f"{label}: a {kind} is a non-empty string, got {name!r}")
            joined = any(c.isspace() for c in name) if kind == "scope" else "," in name
            if joined or name != name.strip():
                raise ConfigurationError(
                    f"{label}: {name!r} is not one {kind}; list several as "
                    f"any_of=(...) (either) or all_of=(...) (every one)"
                )
        return tuple(dict.fromkeys(names))

    def check(self, user: BetterAuthUser | None) -> _Refusal | None:
        """None when ``user`` meets the requirement, else the refusal to answer with."""
        if user is None:
            return _MISSING
        held = user.scopes if self._scopes else user.roles
        allowed = self._names <= held if self._all else not self._names.isdisjoint(held)
        return None if allowed else self._denied


def _positional_message(kind: str, where: str, positional: tuple[object, ...]) -> str:
    first = positional[0]
    if callable(first):
        return f"{where} needs a {kind}: write @{where}('name') above {_describe(first)}"
    if len(positional) == 1 and isinstance(first, Iterable) and not isinstance(first, str):
        positional = tuple(first)
    if not all(isinstance(p, str) for p in positional):
        return f"{where} takes {kind} names (strings), got {first!r}"
    listed = ", ".join(repr(p) for p in positional)
    return (
        f"{where}({listed}) is ambiguous: write {where}(any_of=({listed})) "
        f"to need one of them or {where}(all_of=({listed})) to need every one"
    )


def _describe(func: object) -> str:
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None)
    if isinstance(name, str):
        return f"{module}.{name}" if isinstance(module, str) else name
    return repr(func)


def _user_in(scope: Mapping[str, Any], where: str) -> BetterAuthUser | None:
    """The user BetterAuthMiddleware put in ``scope["state"]``, None when anonymous.

    Raises:
        RuntimeError: the middleware did not run for this connection (a
            misconfigured app fails closed, loudly).
    """
    state = scope.get("state")
    if not isinstance(state, dict) or "user" not in state:
        raise RuntimeError(
            f"{where} found no user in request.state: add BetterAuthMiddleware to the app "
            "(it must run before the endpoint)"
        )
    user = state["user"]
    if user is None or isinstance(user, BetterAuthUser):
        return user
    raise RuntimeError(f"{where}: request.state.user is a {type(user).__name__}, not a user")


def _http_response(prepared: ErrorResponse) -> Response:
    """A fresh Response carrying exactly the middleware's status, headers and body."""
    status, headers, body = prepared
    response = Response(body, status_code=status)
    response.raw_headers = list(headers)
    return response


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


def _guard(requirement: _Requirement, func: _F, where: str) -> _F:
    name = _describe(func)
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

    def refusal_for(connection: HTTPConnection) -> _Refusal | None:
        return requirement.check(_user_in(connection.scope, label))

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
            return _http_response(refusal.response)

        wrapper = async_guard
    else:

        @functools.wraps(func)
        def sync_guard(*args: Any, **kwargs: Any) -> Any:
            refusal = refusal_for(connection_of(args, kwargs))
            if refusal is None:
                return func(*args, **kwargs)
            return _http_response(refusal.response)

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
            (``requires_role("a", "b")``) or a function it cannot guard.
    """
    requirement = _Requirement("role", "requires_role", roles, any_of, all_of)

    def decorator(func: _F) -> _F:
        return _guard(requirement, func, "requires_role")

    return decorator


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
        ConfigurationError: at import time, for an ambiguous or empty spelling
            or a function it cannot guard.
    """
    requirement = _Requirement("scope", "requires_scope", scopes, any_of, all_of)

    def decorator(func: _F) -> _F:
        return _guard(requirement, func, "requires_scope")

    return decorator
