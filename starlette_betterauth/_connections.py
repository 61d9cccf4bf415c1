"""The request and websocket objects of each framework, for the guards.

The guards (:mod:`starlette_betterauth.guards`) check the user BetterAuthMiddleware
put in the ASGI scope; the scope is reached through the connection object the
handler receives, which differs by framework (Starlette's ``Request``,
Litestar's ``Request`` and ``WebSocket``, Django's ``HttpRequest``, Quart's
``request`` and ``websocket`` globals, Falcon's ``req``), and so does the
answer a handler gives to refuse. An :class:`Adapter` says both for one
framework. Adapters live in the framework modules (``litestar``, ``django``,
``quart``, ``_falcon``) and are only imported once their framework has been:
the package never imports a framework itself.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Final, Protocol

from starlette.requests import HTTPConnection

from ._responses import ErrorResponse

__all__ = [
    "Adapter",
    "adapter_for",
    "ambient_connection",
    "connection_classes",
    "request_hint",
    "scope_of",
]

#: The top-level package of each framework, and the module of its adapter here.
_ADAPTER_MODULES: Final = {
    "litestar": ".litestar",
    "django": ".django",
    "quart": ".quart",
    "falcon": "._falcon",
}


class Adapter(Protocol):
    """How one framework's handlers get their connection and answer a refusal."""

    #: The framework's request and websocket classes (their instances carry ``.scope``).
    types: tuple[type, ...]
    #: The type hint under which the framework passes a handler its request by
    #: the name ``request`` (Litestar's), or None.
    request_hint: type | None

    def answer(self, connection: Any, prepared: ErrorResponse) -> object:
        """What an HTTP handler returns (or raises) to answer with ``prepared``."""

    async def deny_websocket(self, connection: Any, prepared: ErrorResponse) -> object:
        """Refuse a websocket handshake; the value is what the handler returns."""

    def current(self) -> object | None:
        """The connection being handled, for frameworks whose handlers take none."""


def _adapters() -> Iterator[Adapter]:
    """The adapters of the frameworks imported so far."""
    for package, module in _ADAPTER_MODULES.items():
        if package not in sys.modules:
            continue
        try:
            adapter: Adapter = importlib.import_module(module, __package__).ADAPTER
        except ImportError:
            # A framework half imported (or missing a part): its handlers cannot
            # be met here either.
            continue
        yield adapter


def connection_classes() -> tuple[type, ...]:
    """Classes whose instances are connections: Starlette's, and the imported frameworks'.

    Called when a guard decorates a function: an annotation naming a framework's
    request class means that framework is imported by then.
    """
    classes: list[type] = [HTTPConnection]
    for adapter in _adapters():
        classes.extend(adapter.types)
    return tuple(classes)


def request_hint() -> type:
    """The type hint for a guard's hidden ``request`` parameter.

    FastAPI reads the wrapper's signature (there: Starlette's ``HTTPConnection``);
    Litestar reads its type hints, and passes its request to a parameter
    named ``request`` typed as one of its connection classes.
    """
    for adapter in _adapters():
        if adapter.request_hint is not None:
            return adapter.request_hint
    return HTTPConnection


_BY_TYPE: dict[type, Adapter | None] = {}


def adapter_for(connection: object) -> Adapter | None:
    """The adapter of ``connection``'s framework; None when it is no known connection."""
    kind = type(connection)
    try:
        return _BY_TYPE[kind]
    except KeyError:
        pass
    found = next((a for a in _adapters() if issubclass(kind, a.types)), None)
    if found is not None:
        # Only positive answers are kept: a framework imported later may claim the type.
        _BY_TYPE[kind] = found
    return found


def ambient_connection() -> object | None:
    """The connection of the request or websocket being handled, in a framework that
    passes none to its handlers (Quart's context globals); None elsewhere."""
    for adapter in _adapters():
        connection = adapter.current()
        if connection is not None:
            return connection
    return None


def scope_of(connection: object) -> MutableMapping[str, Any] | None:
    """The ASGI scope a connection object carries, or None (a WSGI request)."""
    scope = getattr(connection, "scope", None)
    return scope if isinstance(scope, MutableMapping) else None
