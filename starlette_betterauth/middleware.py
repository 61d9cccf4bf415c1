"""BetterAuthMiddleware: where authentication runs, once per HTTP request or websocket.

Events
------
``on_event(name, data)`` is called synchronously, so keep it cheap (increment a
counter). Every HTTP request and websocket handshake the middleware handles
emits exactly one of ``accepted``, ``anonymous`` or ``refused``; the key-set
cache adds its ``jwks_*`` events (see :class:`~starlette_betterauth.JWKSCache`)
when the middleware builds the verifier. Names and data keys are stable; new
keys may be added. A hook that raises is logged and ignored.

============  ======================================  ========================================
name          when                                    data
============  ======================================  ========================================
accepted      a token was verified; the app is        ``path``; ``cached`` (bool): the token
              called                                  came from the verified-token cache
anonymous     no token, let through (public route     ``path``
              or ``optional=True``)
refused       answered 401, 403 or 503; the app is    ``path``; ``reason``: the error's class
              not called                              name (``ExpiredTokenError``, ...);
                                                      ``status``
jwks_fetch    a key-set fetch starts                  ``url``
jwks_refresh  the fetch succeeded                     ``url``; ``keys`` (count); ``gained``,
                                                      ``lost`` (sorted kids); ``duration`` (s)
jwks_failure  the fetch failed                        ``url``; ``error`` (message); ``reason``
                                                      (class name); ``stale`` (old keys still
                                                      serving); ``duration`` (s)
============  ======================================  ========================================

``path`` is unbounded: do not use it as a metric label. ``reason`` is bounded by
the exception tree in :mod:`starlette_betterauth.errors`.

Logging
-------
Logger ``starlette_betterauth``: one line per refused request at ``log_level``
(WARNING for 503s) naming the method, path, reason and a short token
fingerprint (:func:`token_fingerprint`, never the token); key-set changes at
INFO, fetch failures and skipped keys at WARNING, routine fetches at DEBUG.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._authorization import bearer_token
from ._keys import VerificationKey
from ._responses import (
    ErrorResponse,
    error_response,
    missing_token,
    send_http,
    send_websocket_denial,
)
from ._routes import PublicRoutes
from ._token_cache import TokenCache
from ._user import BetterAuthUser, RoleSource, UserBuilder
from ._verifier import DEFAULT_LEEWAY, TokenVerifier
from .errors import BetterAuthError, ConfigurationError, KeySetError

__all__ = ["BetterAuthMiddleware", "token_fingerprint"]

logger = logging.getLogger("starlette_betterauth")

ErrorHandler = Callable[[HTTPConnection, BetterAuthError], Response | None]
EventHook = Callable[[str, Mapping[str, Any]], None]
_Principal = tuple[BetterAuthUser, tuple[str, ...]]
_MAX_ANSWERS = 256  # messages may quote the token's alg or kid: keep the memo bounded


def token_fingerprint(token: str) -> str:
    """A short, non-reversible tag for a token, safe to log: ``sha256:1a2b3c4d``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:8]


def _current_key_check(verifier: TokenVerifier) -> Callable[[VerificationKey], bool]:
    """Whether a key is still the usable key of its kid (not gone, stale, or replaced)."""
    jwks = verifier.jwks

    def key_current(key: VerificationKey) -> bool:
        return jwks.keys.get(key.kid) is key and jwks.has_key(key.kid)

    return key_current


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
        verify_issuer, verify_audience: opt-outs of those checks (not advised).
        algorithms: accepted algorithms (default all of EdDSA, ES256, ES512, RS256, PS256).
        leeway: seconds of clock skew tolerated.
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
        verifier: a ready :class:`TokenVerifier` (then give no server settings).
        http_client: an ``httpx.AsyncClient`` for key-set fetches.
        jwks_options: further :class:`JWKSCache` options (ttl, refresh_cooldown, ...).

    Raises:
        ConfigurationError: at construction, for a missing or invalid setting.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        base_url: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | Sequence[str] | None = None,
        verify_issuer: bool = True,
        verify_audience: bool = True,
        algorithms: Sequence[str] | None = None,
        leeway: float = DEFAULT_LEEWAY,
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
        jwks_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        if verifier is None:
            options = dict(jwks_options or {})
            if on_event is not None:
                options.setdefault("on_event", on_event)
            verifier = TokenVerifier.for_server(
                base_url,
                jwks_url=jwks_url,
                issuer=issuer,
                audience=audience,
                verify_issuer=verify_issuer,
                verify_audience=verify_audience,
                algorithms=algorithms,
                leeway=leeway,
                http_client=http_client,
                jwks_options=options,
            )
        elif (
            any(
                v is not None
                for v in (
                    base_url,
                    jwks_url,
                    issuer,
                    audience,
                    algorithms,
                    http_client,
                    jwks_options,
                )
            )
            or leeway != DEFAULT_LEEWAY
            or not (verify_issuer and verify_audience)
        ):
            raise ConfigurationError(
                "pass either verifier= or the verification settings (base_url, jwks_url, issuer, "
                "audience, algorithms, leeway, http_client, jwks_options, ...), not both"
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
            key_current=_current_key_check(verifier),
        )
        self._retry_after = max(1, round(verifier.jwks.retry_interval))
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
                self._emit("anonymous", {"path": scope["path"]})
        else:
            user, granted = principal
            scope["user"] = user
            # Fresh per request: a handler that edits request.auth.scopes must not
            # change what the next request with the same token is granted.
            scope["auth"] = AuthCredentials(granted)
            scope.setdefault("state", {})["user"] = user
            if self.on_event is not None:
                self._emit("accepted", {"path": scope["path"], "cached": cached})
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
            self._emit(
                "refused", {"path": scope["path"], "reason": reason, "status": error.status_code}
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

    def _emit(self, name: str, data: Mapping[str, Any]) -> None:
        hook = self.on_event
        if hook is None:
            return
        try:
            hook(name, data)
        except Exception:  # an observer must never break authentication
            logger.exception("the on_event hook raised on %r", name)

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
