"""Falcon's ASGI requests for the guards: a refusal is raised as ``falcon.HTTPStatus``;
a refused websocket is closed before accept.

Imported by :mod:`starlette_betterauth._connections` only once Falcon has been.
"""

from __future__ import annotations

from typing import Any, NoReturn

import falcon
import falcon.asgi

from ._responses import ErrorResponse, header_dict

__all__ = ["ADAPTER"]

# Falcon computes these from the text it is given.
_OWN_HEADERS = frozenset({b"content-length"})


class _FalconAdapter:
    """Responders take ``(req, resp)`` and return nothing: a refusal is raised."""

    types: tuple[type, ...] = (falcon.asgi.Request,)
    request_hint: type | None = None

    def answer(self, connection: Any, prepared: ErrorResponse) -> NoReturn:
        status, headers, body = prepared
        raise falcon.HTTPStatus(
            falcon.code_to_http_status(status),
            headers=header_dict(headers, omit=_OWN_HEADERS),
            text=body.decode("utf-8"),
        )

    async def deny_websocket(self, connection: Any, prepared: ErrorResponse) -> None:
        # A responder that returns without accepting is closed by Falcon before
        # accept: the server answers the handshake with 403. (Raising would do
        # the same, with an error logged.)
        return None

    def current(self) -> None:
        return None


ADAPTER = _FalconAdapter()
