"""The answers sent to refused requests: RFC 6750 headers and a short JSON reason."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from starlette.types import Message, Receive, Send

from .errors import (
    BetterAuthError,
    InsufficientScopeError,
    InvalidDPoPProofError,
    MissingTokenError,
    ServiceUnavailableError,
)

__all__ = [
    "BEARER_ONLY",
    "BODY_HEADERS",
    "Challenges",
    "ErrorResponse",
    "error_response",
    "header_dict",
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


def _quoted(text: str, limit: int = 200) -> str:
    return "".join(c if ord(c) in _SAFE else "'" if c in '"\\' else "?" for c in text)[:limit]


@dataclass(frozen=True, slots=True)
class Challenges:
    """What the ``WWW-Authenticate`` challenges of a refusal offer, from the configuration.

    Attributes:
        dpop_algs: the proof algorithms when DPoP is accepted (RFC 9449 §7.1):
            a ``DPoP algs="..."`` challenge follows the Bearer one.
        resource_metadata: the URL of the protected resource metadata (RFC 9728
            §5.1), added to every challenge so a client (an MCP client) finds
            the authorization server.
    """

    dpop_algs: tuple[str, ...] | None = None
    resource_metadata: str | None = None


#: A Bearer challenge only: no DPoP, no resource metadata.
BEARER_ONLY = Challenges()


def _challenge_headers(
    error: BetterAuthError, challenges: Challenges, scheme: str | None
) -> list[tuple[bytes, bytes]]:
    """One ``WWW-Authenticate`` header per scheme; the error's parameters go on the scheme
    the request used (DPoP for a proof error)."""
    params = ""
    if error.error_code is not None:
        params = f' error="{error.error_code}", error_description="{_quoted(error.message)}"'
        if isinstance(error, InsufficientScopeError):
            params += f', scope="{_quoted(error.scope, limit=1000)}"'
    extra = ""
    if challenges.resource_metadata is not None:
        extra = f'resource_metadata="{_quoted(challenges.resource_metadata, limit=1000)}"'
    dpop_error = challenges.dpop_algs is not None and (
        scheme == "DPoP" or isinstance(error, InvalidDPoPProofError)
    )
    bearer = "Bearer" + ("" if dpop_error else params)
    if extra:
        bearer += ("," if bearer != "Bearer" else "") + " " + extra
    headers = [(b"www-authenticate", bearer.encode("ascii"))]
    if challenges.dpop_algs is not None:
        dpop = f'DPoP algs="{" ".join(challenges.dpop_algs)}"'
        if dpop_error:
            dpop += "," + params
        if extra:
            dpop += ", " + extra
        headers.append((b"www-authenticate", dpop.encode("ascii")))
    return headers


def error_response(
    error: BetterAuthError,
    *,
    retry_after: int = 5,
    challenges: Challenges = BEARER_ONLY,
    scheme: str | None = None,
) -> ErrorResponse:
    """Status, headers and body for ``error``; never includes the token.

    ``scheme`` is the Authorization scheme the request used (``"Bearer"``,
    ``"DPoP"`` or None): the error's parameters go on its challenge. A
    :class:`ServiceUnavailableError` (503) is answered with a generic message:
    its own message describes the Better Auth server and its keys, which is for
    the operator's log.
    """
    headers = [
        (b"content-type", b"application/json"),
        *_challenge_headers(error, challenges, scheme),
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


#: Headers a framework's response object sets itself from its body and media type.
BODY_HEADERS = frozenset({b"content-type", b"content-length"})


def header_dict(
    headers: list[tuple[bytes, bytes]], *, omit: frozenset[bytes] = frozenset()
) -> dict[str, str]:
    """A prepared answer's headers as ``{name: value}`` text, for frameworks' responses."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name not in omit
    }


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
