"""The answers sent to refused requests: RFC 6750 headers and a short JSON reason."""

from __future__ import annotations

import json
import math

from starlette.types import Message, Receive, Send

from .errors import BetterAuthError, MissingTokenError, ServiceUnavailableError

__all__ = [
    "ErrorResponse",
    "error_response",
    "missing_token",
    "send_http",
    "send_websocket_denial",
]

ErrorResponse = tuple[int, list[tuple[bytes, bytes]], bytes]

#: The refusal of a request that carries no token, shared by the middleware and the guards.
MISSING_TOKEN_MESSAGE = "this endpoint needs a bearer token"
#: What any caller is told when the key set or get-session cannot be had. Why (the
#: server's status, which kids were skipped and for what) goes to the log and the
#: ``on_error`` hook only.
SERVICE_UNAVAILABLE_MESSAGE = "the credentials cannot be checked now; retry later"


def missing_token() -> MissingTokenError:
    """The error for a request without a bearer token."""
    return MissingTokenError(MISSING_TOKEN_MESSAGE)


_SAFE = set(range(0x20, 0x7F)) - {0x22, 0x5C}  # RFC 6750 error_description chars


def _quoted(text: str) -> str:
    return "".join(c if ord(c) in _SAFE else "'" if c in '"\\' else "?" for c in text)[:200]


def error_response(error: BetterAuthError, *, retry_after: int = 5) -> ErrorResponse:
    """Status, headers and body for ``error``; never includes the token.

    A :class:`ServiceUnavailableError` (503) is answered with a generic message:
    its own message describes the Better Auth server and its keys, which is for
    the operator's log.
    """
    challenge = "Bearer"
    if error.error_code is not None:
        challenge += f' error="{error.error_code}", error_description="{_quoted(error.message)}"'
    headers = [
        (b"content-type", b"application/json"),
        (b"www-authenticate", challenge.encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    if isinstance(error, ServiceUnavailableError):
        wait = error.retry_after
        seconds = retry_after if wait is None else max(1, math.ceil(wait))
        headers.append((b"retry-after", str(seconds).encode("ascii")))
    document = {
        "error": error.error_code or _default_code(error),
        "error_description": (
            SERVICE_UNAVAILABLE_MESSAGE
            if isinstance(error, ServiceUnavailableError)
            else error.message
        ),
    }
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    return error.status_code, headers, body


def _default_code(error: BetterAuthError) -> str:
    if isinstance(error, ServiceUnavailableError):
        return "temporarily_unavailable"
    return "unauthorized" if error.status_code == 401 else "forbidden"


async def send_http(send: Send, response: ErrorResponse) -> None:
    """Send a prepared error response on an HTTP connection."""
    status, headers, body = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_websocket_denial(
    extensions: object, receive: Receive, send: Send, response: ErrorResponse
) -> None:
    """Refuse a websocket handshake before accept.

    With the ASGI denial-response extension the client gets the HTTP status;
    otherwise the handshake is closed with 1008 (policy violation).
    """
    message: Message = await receive()
    if message["type"] != "websocket.connect":
        return
    status, headers, body = response
    if isinstance(extensions, dict) and "websocket.http.response" in extensions:
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
