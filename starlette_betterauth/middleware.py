"""BetterAuthMiddleware: where authentication runs, once per HTTP request or websocket.

The outcome events (``on_event``) and log lines are described in
:mod:`starlette_betterauth._observability`: every HTTP request and websocket
handshake emits exactly one of ``accepted``, ``anonymous`` or ``refused``, and
the key-set cache adds ``jwks_fetch``, ``jwks_refresh`` and ``jwks_failure``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Unpack

import httpx
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._auth_header import bearer_token
from ._observability import EventHook, emit, logger, token_fingerprint
from ._responses import (
    ErrorResponse,
    error_response,
    missing_token,
    send_http,
    send_websocket_denial,
)
from ._routes import PublicRoutes
from ._settings import VerifierSettings, resolve_settings
from ._token_cache import TokenCache
from ._user import BetterAuthUser, RoleSource, UserBuilder
from ._verifier import TokenVerifier
from .errors import BetterAuthError, ConfigurationError, KeySetError

__all__ = ["BetterAuthMiddleware", "token_fingerprint"]

ErrorHandler = Callable[[HTTPConnection, BetterAuthError], Response | None]
_Principal = tuple[BetterAuthUser, tuple[str, ...]]
_MAX_ANSWERS = 256  # messages may quote the token's alg or kid: keep the memo bounded


def _loggable(path: str) -> str:
    """A request path fit for one log line: bounded, control characters escaped."""
    if len(path) > 200:
        path = path[:200] + "..."
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


class BetterAuthMiddleware:
    """Pure ASGI middleware that authenticates Better Auth JWTs on every request.

    Each HTTP request and websocket handshake must carry ``Authorization: Bearer
    <JWT>``; the token is verified locally against the server's cached key set
    and the user lands in ``request.state.user`` (a :class:`BetterAuthUser`),
    ``request.user`` and ``request.auth``. Refusals are answered here, the app is
    not called: 401 (``WWW-Authenticate: Bearer`` per RFC 6750), 403 for a banned
    user, 503 with ``Retry-After`` when no key set can be had.

    Example::

        app = Starlette(routes=routes)
        app.add_middleware(BetterAuthMiddleware, base_url="https://auth.example.com")

    Args:
        base_url: Better Auth's ``baseURL``; keys come from
            ``{base_url}/api/auth/jwks`` and ``iss``/``aud`` must equal it.
            Defaults to the ``BETTER_AUTH_URL`` environment variable.
        jwks_url: the key set's URL, for a custom basePath or jwksPath.
        issuer: the exact ``iss`` required (defaults to ``base_url``).
        audience: the accepted audience or audiences (defaults to ``base_url``).
        verify_issuer, verify_audience, algorithms, leeway, require_exp, key_set:
            the other verification settings (:class:`VerifierSettings`).
        public: routes reachable without a token, e.g. ``["/health", "GET /docs/*"]``;
            ``"PREFLIGHT /*"`` lets CORS preflights through (better: put
            ``CORSMiddleware`` outside this middleware, see the README).
        optional: let requests without a token through as anonymous
            (``request.state.user`` is None). A presented token that fails is still 401.
        roles: where roles come from: a claim (``"role"``), a dotted path or a callable.
        allow_banned: accept users whose token says ``"banned": true``.
        token_cache_size: verified tokens remembered (0 switches the cache off).
        token_cache_ttl: seconds a verified token is remembered at most.
        warm_on_startup: fetch the key set during the app's lifespan startup.
        on_error: ``(connection, error) -> Response | None`` to answer refusals
            yourself (None keeps the default answer).
        on_event: ``(name, data)`` hook counting outcomes, for metrics (events
            in the module docstring). With ``verifier=``, give the hook to its
            :class:`JWKSCache` too for the ``jwks_*`` events.
        log_level: level of the one log line per refused request.
        verifier: a ready :class:`TokenVerifier` (then give no verification settings).
        http_client: an ``httpx.AsyncClient`` for key-set fetches.

    Raises:
        ConfigurationError: at construction, for a missing or invalid setting.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        public: Iterable[str] = (),
        optional: bool = False,
        roles: RoleSource = "role",
        allow_banned: bool = False,
        token_cache_size: int = 10_000,
        token_cache_ttl: float = 300.0,
        warm_on_startup: bool = False,
        on_error: ErrorHandler | None = None,
        on_event: EventHook | None = None,
        log_level: int = logging.INFO,
        verifier: TokenVerifier | None = None,
        http_client: httpx.AsyncClient | None = None,
        **settings: Unpack[VerifierSettings],
    ) -> None:
        self.app = app
        if verifier is None:
            verifier = TokenVerifier.from_settings(
                resolve_settings(settings), http_client=http_client, on_event=on_event
            )
        elif settings or http_client is not None:
            given = sorted([*settings, *(["http_client"] if http_client is not None else [])])
            raise ConfigurationError(
                f"pass either verifier= or the verification settings ({', '.join(given)}), not both"
            )
        self.verifier = verifier
        self.public = PublicRoutes(public)
        self.optional = optional
        self.users = UserBuilder(roles, allow_banned=allow_banned)
        self.warm_on_startup = warm_on_startup
        self.on_error = on_error
        self.on_event = on_event
        self.log_level = log_level
        self.cache: TokenCache[_Principal] = TokenCache(
            max_entries=token_cache_size,
            ttl=token_cache_ttl,
            leeway=verifier.rules.leeway,
            key_current=verifier.jwks.is_current,
        )
        self._retry_after = max(1, round(verifier.jwks.options.retry_interval))
        self._missing_error = missing_token()
        # Answers by (error class, message), built once: refusals repeat, and
        # building one costs more than most refusals themselves.
        self._answers: dict[tuple[type[BetterAuthError], str], ErrorResponse] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan" and self.warm_on_startup:
                receive = self._warming(receive)
            await self.app(scope, receive, send)
            return
        token = None
        cached = False
        try:
            token = bearer_token(scope["headers"])
            if token is None:
                principal = None
                if not self.optional and not (
                    self.public
                    and self.public.matches(scope.get("method"), scope["path"], scope["headers"])
                ):
                    await self._refuse(scope, receive, send, self._missing_error, None)
                    return
            else:
                principal = self.cache.get(token)
                if principal is None:
                    principal = await self._authenticate(token)
                else:
                    cached = True
        except BetterAuthError as exc:
            await self._refuse(scope, receive, send, exc, token)
            return
        if principal is None:
            scope["user"] = UnauthenticatedUser()
            scope["auth"] = AuthCredentials()
            scope.setdefault("state", {})["user"] = None
            if self.on_event is not None:
                emit(self.on_event, "anonymous", {"path": scope["path"]})
        else:
            user, granted = principal
            scope["user"] = user
            # Fresh per request: a handler that edits request.auth.scopes must not
            # change what the next request with the same token is granted.
            scope["auth"] = AuthCredentials(granted)
            scope.setdefault("state", {})["user"] = user
            if self.on_event is not None:
                emit(self.on_event, "accepted", {"path": scope["path"], "cached": cached})
        await self.app(scope, receive, send)

    async def _authenticate(self, token: str) -> _Principal:
        verified = await self.verifier.verify_token(token)
        principal = self.users.build(verified.claims)
        self.cache.put(token, principal, verified.key, verified.exp)
        return principal

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        error: BetterAuthError,
        token: str | None,
    ) -> None:
        answer = (type(error), error.message)
        response = self._answers.get(answer)
        if response is None:
            response = error_response(error, retry_after=self._retry_after)
            if len(self._answers) < _MAX_ANSWERS:
                self._answers[answer] = response
        reason = type(error).__name__
        level = logging.WARNING if isinstance(error, KeySetError) else self.log_level
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "refused %s %s: %s: %s (token %s)",
                scope.get("method", "WEBSOCKET"),
                _loggable(scope["path"]),
                reason,
                error.message,
                token_fingerprint(token) if token else "none",
            )
        if self.on_event is not None:
            emit(
                self.on_event,
                "refused",
                {"path": scope["path"], "reason": reason, "status": error.status_code},
            )
        if self.on_error is not None:
            custom = self.on_error(HTTPConnection(scope, receive), error)
            if custom is not None:
                if scope["type"] == "http":
                    await custom(scope, receive, send)
                    return
                response = (
                    custom.status_code,
                    list(custom.raw_headers),
                    bytes(custom.body),
                )
        if scope["type"] == "http":
            await send_http(send, response)
        else:
            await send_websocket_denial(scope.get("extensions"), receive, send, response)

    def _warming(self, receive: Receive) -> Receive:
        jwks = self.verifier.jwks

        async def receive_and_warm() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await jwks.refresh()
                except KeySetError as exc:
                    logger.warning("key set not loaded at startup: %s", exc.message)
            return message

        return receive_and_warm
