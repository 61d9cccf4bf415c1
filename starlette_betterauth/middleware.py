"""BetterAuthMiddleware: where authentication runs, once per HTTP request or websocket.

The outcome events (``on_event``) and log lines are described in
:mod:`starlette_betterauth._observability`: every HTTP request and websocket
handshake emits exactly one of ``accepted``, ``anonymous`` or ``refused``, and
the key-set cache adds ``jwks_fetch``, ``jwks_refresh`` and ``jwks_failure``.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import Any, NoReturn, TypeVar, Unpack, cast

import httpx
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._headers import Presented, read_headers
from ._observability import EventHook, emit, logger, token_fingerprint
from ._responses import (
    Challenges,
    ErrorResponse,
    error_response,
    missing_token,
    send_http,
    send_websocket_denial,
)
from ._routes import PublicRoutes, route_path
from ._settings import VerifierSettings, resolve_settings
from ._token_cache import TokenCache
from ._user import BetterAuthUser, RoleSource, UserBuilder
from ._verifier import TokenVerifier
from .credentials import Authenticator, Context, Credential, Principal, bind_kinds
from .errors import (
    BetterAuthError,
    ConfigurationError,
    DPoPBindingError,
    InvalidRequestError,
    KeySetError,
    ServiceUnavailableError,
)

__all__ = ["BetterAuthMiddleware", "token_fingerprint"]

ErrorHandler = Callable[[HTTPConnection, BetterAuthError], Response | None]
_MAX_ANSWERS = 256  # messages may quote the token's alg or kid: keep the memo bounded
_Init = TypeVar("_Init", bound=Callable[..., None])


def _loggable(path: str) -> str:
    """A request path fit for one log line: bounded, control characters escaped."""
    if len(path) > 200:
        path = path[:200] + "..."
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


def _set_state_user(scope: Scope, user: object) -> None:
    """``request.state.user``: in the scope's state, made when the server gave none."""
    state = scope.get("state")
    if state is None:
        scope["state"] = {"user": user}
    else:
        state["user"] = user


def _building_stack(frame: FrameType | None) -> bool:
    """Whether ``frame`` is Starlette's (or FastAPI's) ``build_middleware_stack``."""
    return (
        frame is not None
        and frame.f_code.co_name == "build_middleware_stack"
        and isinstance(frame.f_locals.get("self"), Starlette)
    )


def _failing_at_startup(init: _Init) -> _Init:
    """Report a ConfigurationError met while Starlette builds its stack through the lifespan.

    Starlette and FastAPI construct ``add_middleware`` middleware lazily, in the
    app's first ASGI call: under a server, the lifespan startup. An exception
    raised there means "lifespan unsupported" to ASGI servers, so uvicorn's
    default ``--lifespan auto`` would log it at INFO and serve every request a
    500. Built by Starlette, the middleware keeps the error instead, fails the
    lifespan startup with it (the server logs it and exits) and raises it from
    every request (an app run without lifespan). Constructed directly, it raises.
    """

    @functools.wraps(init)
    def __init__(self: BetterAuthMiddleware, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ConfigurationError as exc:
            if not _building_stack(sys._getframe(1)):
                raise
            self._startup_error = exc

    return cast(_Init, __init__)


def _check_binding(
    kind: Authenticator,
    scope: Scope,
    presented: Presented,
    token: str,
    user: BetterAuthUser,
) -> None:
    """A DPoP-bound token only with ``Authorization: DPoP`` and a valid proof; an
    unbound one never with DPoP (RFC 9449 section 7.1)."""
    if presented.dpop is None:
        raise DPoPBindingError(
            "the token is bound to a DPoP key (cnf.jkt): send it as Authorization: DPoP "
            "with a DPoP proof, not as Bearer"
        )
    if user.dpop_jkt is None:
        raise DPoPBindingError(
            "Authorization: DPoP needs a DPoP-bound token (cnf.jkt); this one is a Bearer "
            "token: send it as Authorization: Bearer"
        )
    dpop = kind.dpop
    if dpop is None:  # pragma: no cover - only kinds with a DPoP verifier find DPoP tokens
        raise DPoPBindingError("DPoP is not accepted for this kind of credential")
    dpop.verify(
        presented.dpop_proof,
        method=scope.get("method", "GET"),
        url=dpop.request_url(scope),
        token=token,
        jkt=user.dpop_jkt,
    )


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
        **settings: the verification settings (``base_url``, ``jwks_url``,
            ``issuer``, ``audience``, ``verify_issuer``, ``verify_audience``,
            ``algorithms``, ``leeway``, ``require_exp``, ``key_set``), declared and
            documented once in :class:`VerifierSettings` (``base_url`` is Better
            Auth's ``baseURL``; by default ``BETTER_AUTH_URL``).
        accept: the credential kinds accepted, in the order they are tried
            (:mod:`starlette_betterauth.credentials`; default ``[BearerJWT()]``).
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
            Built by Starlette or FastAPI (``add_middleware``), it fails the
            lifespan startup instead, and is raised from every request of an
            app run without lifespan.
    """

    #: The ConfigurationError kept when Starlette built this middleware (see
    #: ``_failing_at_startup``); None when it is configured.
    _startup_error: ConfigurationError | None = None

    @_failing_at_startup
    def __init__(
        self,
        app: ASGIApp,
        *,
        accept: Sequence[Credential] | None = None,
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
        resolved = None
        if verifier is None:
            resolved = resolve_settings(settings)
            verifier = TokenVerifier.from_settings(
                resolved, http_client=http_client, on_event=on_event
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
        self.cache: TokenCache[Principal] = TokenCache(
            max_entries=token_cache_size,
            ttl=token_cache_ttl,
            leeway=verifier.rules.leeway,
            key_set=verifier.jwks,
        )
        self.kinds = bind_kinds(
            accept,
            Context(
                settings=resolved,
                verifier=verifier,
                users=self.users,
                cache=self.cache,
                http_client=http_client,
                on_event=on_event,
            ),
        )
        self._retry_after = max(1, round(verifier.jwks.options.retry_interval))
        self._missing_error = missing_token()
        # What 401s offer: DPoP and the resource metadata (RFC 9728) when accepted.
        dpop = next((kind.dpop for kind in self.kinds if kind.dpop is not None), None)
        documents = [document for kind in self.kinds for document in kind.metadata]
        self._challenges = Challenges(
            dpop_algs=dpop.algs if dpop is not None else None,
            resource_metadata=documents[0].url if documents else None,
        )
        self._metadata = {document.path: document.response() for document in documents}
        # Answers by (error class, message, scheme), built once: refusals repeat,
        # and building one costs more than most refusals themselves.
        self._answers: dict[tuple[type[BetterAuthError], str, str | None], ErrorResponse] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._startup_error is not None:
            await self._fail(scope, receive, send, self._startup_error)
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                receive = self._lifespan(receive)
            await self.app(scope, receive, send)
            return
        if (
            self._metadata
            and scope_type == "http"
            and scope["path"] in self._metadata
            and scope.get("method") in ("GET", "HEAD")
        ):
            await send_http(send, self._metadata[scope["path"]])
            return
        credential = None
        cached = False
        presented = None
        try:
            presented = read_headers(scope["headers"])
            for kind in self.kinds:
                credential = kind.find(presented)
                if credential is not None:
                    break
            if credential is None:
                if presented.dpop is not None:
                    raise InvalidRequestError(
                        "the DPoP authorization scheme is not accepted here (only "
                        "AccessToken(dpop=True) takes it): send the token as Bearer"
                    )
                principal = None
                if not self.optional and not (
                    self.public
                    and self.public.matches(
                        scope.get("method"), route_path(scope), scope["headers"]
                    )
                ):
                    await self._refuse(scope, receive, send, self._missing_error, None, None)
                    return
            else:
                if kind.origins is not None:
                    kind.origins.check(scope, presented)
                principal = kind.cached(credential)
                if principal is None:
                    principal = await kind.authenticate(credential, presented)
                else:
                    cached = True
                if principal[0].dpop_jkt is not None or presented.dpop is not None:
                    _check_binding(kind, scope, presented, credential, principal[0])
        except BetterAuthError as exc:
            scheme = presented.scheme if presented is not None else None
            await self._refuse(scope, receive, send, exc, credential, scheme)
            return
        if principal is None:
            scope["user"] = UnauthenticatedUser()
            scope["auth"] = AuthCredentials()
            _set_state_user(scope, None)
            if self.on_event is not None:
                emit(self.on_event, "anonymous", {"path": scope["path"]})
        else:
            user, granted = principal
            scope["user"] = user
            # Fresh per request: a handler that edits request.auth.scopes must not
            # change what the next request with the same token is granted.
            scope["auth"] = AuthCredentials(granted)
            _set_state_user(scope, user)
            if self.on_event is not None:
                emit(self.on_event, "accepted", {"path": scope["path"], "cached": cached})
        await self.app(scope, receive, send)

    @staticmethod
    async def _fail(
        scope: Scope, receive: Receive, send: Send, error: ConfigurationError
    ) -> NoReturn:
        """Fail the lifespan startup with ``error``, then raise it (a copy: it is raised again)."""
        if scope["type"] == "lifespan" and (await receive())["type"] == "lifespan.startup":
            message = f"BetterAuthMiddleware: ConfigurationError: {error.message}"
            await send({"type": "lifespan.startup.failed", "message": message})
        raise ConfigurationError(error.message)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        error: BetterAuthError,
        credential: str | None,
        scheme: str | None,
    ) -> None:
        unavailable = isinstance(error, ServiceUnavailableError)
        # An error with its own Retry-After gets an answer of its own.
        timed = isinstance(error, ServiceUnavailableError) and error.retry_after is not None
        answer = (type(error), error.message, scheme)
        response = None if timed else self._answers.get(answer)
        if response is None:
            response = error_response(
                error, retry_after=self._retry_after, challenges=self._challenges, scheme=scheme
            )
            if not timed and len(self._answers) < _MAX_ANSWERS:
                self._answers[answer] = response
        reason = type(error).__name__
        level = logging.WARNING if unavailable else self.log_level
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "refused %s %s: %s: %s (token %s)",
                scope.get("method", "WEBSOCKET"),
                _loggable(scope["path"]),
                reason,
                error.message,
                token_fingerprint(credential) if credential else "none",
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

    async def aclose(self) -> None:
        """Close the HTTP clients the middleware's credential kinds and key-set cache opened.

        Called at the app's lifespan shutdown; call it yourself where no
        lifespan runs (tests that build the middleware directly).
        """
        for kind in self.kinds:
            await kind.aclose()
        await self.verifier.jwks.aclose()

    def _lifespan(self, receive: Receive) -> Receive:
        """Warm the key set at startup (``warm_on_startup``) and close clients at shutdown."""
        jwks = self.verifier.jwks

        async def receive_and_act() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self.warm_on_startup:
                try:
                    await jwks.refresh()
                except KeySetError as exc:
                    logger.warning("key set not loaded at startup: %s", exc.message)
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        return receive_and_act
