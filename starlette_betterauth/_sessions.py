"""The get-session client: asks Better Auth who a session cookie or session token belongs to.

Answers are cached, so a session costs one call per ``cache_ttl`` however many
requests carry it; concurrent lookups of one credential share one call; refusals
are cached briefly; and the server's ``Retry-After`` is honoured.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Literal, Protocol
from urllib.parse import unquote

import anyio
import httpx

from ._cookies import encode_cookie_value
from ._frozen import freeze_json
from ._http import (
    ACCEPT_IDENTITY,
    BodyTooLarge,
    ContentEncoded,
    parse_retry_after,
    read_limited,
)
from ._observability import EventHook, emit, logger
from ._settings import check_http_url
from .errors import ConfigurationError, InvalidSessionError, SessionServiceError

__all__ = [
    "MAX_CREDENTIAL_LENGTH",
    "MAX_RETRY_AFTER",
    "SessionClient",
    "SessionClientStatus",
    "SessionCredential",
    "SessionRecord",
    "SharedCache",
    "session_expiry",
]

#: Longest cookie value or bearer token sent to get-session, in characters.
MAX_CREDENTIAL_LENGTH = 4096
#: A ``Retry-After`` longer than this many seconds is cut to it.
MAX_RETRY_AFTER = 300.0

# RFC 6750's b64token, plus "%" for a percent-encoded signed token.
_BEARER = re.compile(r"[A-Za-z0-9\-._~+/%]+=*")
# A cookie name: an RFC 7230 token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_USER_AGENT = "starlette-betterauth"

_REFUSED = "the session is unknown, expired or signed out (Better Auth's get-session answered null)"
_EXPIRED = "the session has expired"


class SessionCredential:
    """A session credential to send to get-session: one cookie, or a bearer session token.

    Build one with :meth:`cookie` or :meth:`bearer`. ``key`` is the SHA-256 of
    the kind, name and value, used as the cache key so that no token is kept
    in clear; ``token`` is the raw session token the value names (before the
    signature), used to check the answer.
    """

    __slots__ = ("key", "kind", "name", "token", "value")

    kind: Literal["cookie", "bearer"]
    name: str | None
    value: str
    token: str
    key: bytes

    def __init__(self, kind: Literal["cookie", "bearer"], name: str | None, value: str) -> None:
        # Use cookie() or bearer(): they check the value first.
        self.kind = kind
        self.name = name
        self.value = value
        self.token = value.rpartition(".")[0] or value
        self.key = hashlib.sha256(f"{kind}\0{name or ''}\0{value}".encode()).digest()

    @classmethod
    def cookie(cls, name: str, value: str) -> SessionCredential:
        """The cookie ``name`` with ``value`` (decoded, as :func:`parse_cookies` returns it).

        Sent alone, percent-encoded as Better Auth writes it.

        Raises:
            ValueError: ``name`` is not a cookie name.
            InvalidSessionError: ``value`` is empty or longer than :data:`MAX_CREDENTIAL_LENGTH`.
        """
        if not _COOKIE_NAME.fullmatch(name):
            raise ValueError(f"not a cookie name: {name!r}")
        if not value or len(value) > MAX_CREDENTIAL_LENGTH:
            raise InvalidSessionError("the session cookie is empty or too long")
        return cls("cookie", name, value)

    @classmethod
    def bearer(cls, token: str) -> SessionCredential:
        """A session token for ``Authorization: Bearer``, raw or signed (``<token>.<signature>``).

        Raises:
            InvalidSessionError: the value cannot be a session token (characters, length).
        """
        if len(token) > MAX_CREDENTIAL_LENGTH or not _BEARER.fullmatch(token):
            raise InvalidSessionError(
                "the bearer value is not a session token (RFC 6750 characters, at most "
                f"{MAX_CREDENTIAL_LENGTH})"
            )
        credential = cls("bearer", None, token)
        if "%" in token:  # Better Auth decodes a percent-encoded signed token
            credential.token = unquote(token).rpartition(".")[0] or unquote(token)
        return credential

    def __repr__(self) -> str:
        # Never the value: reprs end up in logs and tracebacks.
        return f"SessionCredential({self.kind!r}, {self.name!r}, sha256={self.key.hex()[:12]})"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Better Auth's answer for a live session, read-only.

    Attributes:
        session: the ``session`` object of the answer, without its ``token``
            (only its hash is kept); nested objects are read-only mappings and
            lists are tuples.
        user: the ``user`` object (``id``, ``email``, ``name``, ``role``,
            ``banned``, ...), read-only likewise.
        session_id: ``session.id``.
        user_id: ``session.userId`` (equal to ``user.id``).
        expires_at: ``session.expiresAt`` as Unix seconds.
        token_hash: hex SHA-256 of the raw session token.
    """

    session: Mapping[str, Any]
    user: Mapping[str, Any]
    session_id: str
    user_id: str
    expires_at: float
    token_hash: str


@dataclass(frozen=True, slots=True)
class SessionClientStatus:
    """Counters of a :class:`SessionClient`, for tests, benchmarks and diagnostics.

    Attributes:
        calls: get-session calls made.
        hits: lookups answered from the cache of answers.
        refusal_hits: lookups refused from the cache of refusals.
        shared: lookups that waited for a call another lookup had started.
        failures: calls that ended in a :class:`SessionServiceError`.
        entries: answers cached now.
        refusals: refusals cached now.
        retry_in: seconds before calls resume after a failure or a
            ``Retry-After`` (0 when they may be made now).
    """

    calls: int
    hits: int
    refusal_hits: int
    shared: int
    failures: int
    entries: int
    refusals: int
    retry_in: float


class SharedCache(Protocol):
    """Answers shared with other processes, consulted before each get-session call."""

    async def through(
        self, credential: SessionCredential, call: Callable[[], Awaitable[SessionRecord]]
    ) -> tuple[SessionRecord, float]:
        """The answer for ``credential``: a shared one, or ``call()``'s (shared in turn),
        and the seconds it may be kept (a shared answer ends with its shared entry).

        Raises only :class:`InvalidSessionError` and :class:`SessionServiceError`.
        """

    async def aclose(self) -> None:
        """Release its connections."""


class _Flight:
    """One get-session call that every concurrent lookup of a credential waits for."""

    __slots__ = ("done", "error", "record")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.record: SessionRecord | None = None
        self.error: InvalidSessionError | SessionServiceError | None = None


class SessionClient:
    """Looks sessions up with Better Auth's ``GET /api/auth/get-session``, with caching.

    Rules:

    - an answer is cached under the SHA-256 of the credential (never the token
      in clear), for at most ``cache_ttl`` seconds and never past the session's
      ``expiresAt``; at most ``cache_size`` answers, the oldest evicted first;
    - one call per credential is in flight however many lookups wait for it; a
      waiter that is cancelled does not abort it (it is bounded by ``timeout``);
    - a null answer (unknown, expired or signed-out session) raises
      :class:`InvalidSessionError` and is cached for ``refusal_ttl`` seconds (at
      most ``cache_size`` refusals);
    - an answer whose ``expiresAt`` has passed is refused the same way;
    - no answer to be had raises :class:`SessionServiceError` (HTTP 503): the
      server unreachable or slower than ``timeout``, an HTTP status other than
      200 (redirects are not followed), a body that is not JSON, larger than
      ``max_body_size`` or not shaped like get-session's answer. After a 429 or
      5xx, no call is made before its ``Retry-After`` (at most
      :data:`MAX_RETRY_AFTER` seconds) has passed, or ``retry_interval``
      seconds without one, nor after the server was unreachable or timed out:
      lookups meanwhile raise :class:`SessionServiceError` with ``retry_after``
      set. Cached answers keep serving all along.

    Only the one credential is sent: the cookie alone as ``Cookie``, or the
    token as ``Authorization: Bearer``; never the client's cookie jar or default
    headers. The client made by default keeps connections alive (one pooled
    client for all lookups) and stores no cookie that get-session sets. A client
    passed as ``client`` is used as is: it would store those cookies (Better
    Auth refreshes ``session_data`` in its answers), so give it a jar that
    refuses them if it is used for anything else.

    Args:
        url: get-session's URL, e.g. ``https://auth.example.com/api/auth/get-session``.
        client: an ``httpx.AsyncClient`` to use (the caller closes it).
        cache_size: answers (and, separately, refusals) kept at most; 0 keeps none.
        cache_ttl: seconds an answer is kept at most; 0 keeps none. This bounds
            how long a sign-out, revocation or ban takes to be seen.
        refusal_ttl: seconds a refusal is kept; 0 keeps none.
        timeout: seconds a call may take, body included.
        max_body_size: bytes of answer accepted.
        retry_interval: seconds without calls after a failure that came with no
            ``Retry-After``; 0 retries at once.
        on_event: ``(name, data)`` hook: each lookup emits ``session_lookup``
            with ``kind`` (``"cookie"`` or ``"bearer"``), ``cached`` (answered
            from a cache, no call), ``shared`` (waited for another lookup's call),
            ``outcome`` (``"accepted"``, ``"refused"`` or ``"unavailable"``),
            ``reason`` (the error's class name, or None) and ``duration`` (seconds
            of the call, or None). A hook that raises is logged and ignored.
        shared: a cache shared by processes (the Redis one), asked before each
            call this client would make, and told the answers.

    Raises:
        ConfigurationError: a URL that is not http(s), or a bad setting (named).

    Example::

        sessions = SessionClient("https://auth.example.com/api/auth/get-session")
        record = await sessions.lookup(SessionCredential.bearer(token))
        record.user["email"], record.session_id, record.expires_at
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 60.0,
        refusal_ttl: float = 5.0,
        timeout: float = 5.0,
        max_body_size: int = 256 * 1024,
        retry_interval: float = 1.0,
        on_event: EventHook | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        check_http_url("the get-session URL", url)
        for name, number in (("cache_size", cache_size), ("max_body_size", max_body_size)):
            if isinstance(number, bool) or not isinstance(number, int):
                raise ConfigurationError(f"{name} must be an integer, got {number!r}")
        if cache_size < 0:
            raise ConfigurationError("cache_size must be >= 0 (0 keeps no answers)")
        if max_body_size <= 0:
            raise ConfigurationError("max_body_size must be a positive number of bytes")
        for name, seconds in (
            ("cache_ttl", cache_ttl),
            ("refusal_ttl", refusal_ttl),
            ("retry_interval", retry_interval),
        ):
            if not _finite(seconds) or seconds < 0:
                raise ConfigurationError(f"{name} must be a finite number of seconds >= 0")
        if not _finite(timeout) or timeout <= 0:
            raise ConfigurationError("timeout must be a positive number of seconds")
        self.url = url
        self.cache_size = cache_size
        self.cache_ttl = float(cache_ttl)
        self.refusal_ttl = float(refusal_ttl)
        self.timeout = float(timeout)
        self.max_body_size = max_body_size
        self.retry_interval = float(retry_interval)
        self._client = client
        self._owned_client: httpx.AsyncClient | None = None
        self._on_event = on_event
        self.shared = shared
        self._timeout_extension = httpx.Timeout(self.timeout).as_dict()
        # Insertion order is eviction order (OrderedDict drops its oldest in O(1)).
        self._answers: OrderedDict[bytes, tuple[SessionRecord, float]] = OrderedDict()
        self._refusals: OrderedDict[bytes, float] = OrderedDict()
        self._inflight: dict[bytes, _Flight] = {}
        self._retry_at = -math.inf  # monotonic time before which no call is made
        self._retry_reason = ""
        self._calls = 0
        self._hits = 0
        self._refusal_hits = 0
        self._shared = 0
        self._failures = 0

    # -- looking up --------------------------------------------------------------

    async def lookup(self, credential: SessionCredential) -> SessionRecord:
        """The live session ``credential`` names, from the cache or from get-session.

        Raises:
            InvalidSessionError: the session is unknown, expired or signed out (401).
            SessionServiceError: no answer can be had now (503); see ``retry_after``.
        """
        key = credential.key
        entry = self._answers.get(key)
        if entry is not None:
            if time.monotonic() < entry[1]:
                self._hits += 1
                if self._on_event is not None:
                    self._emit_lookup(credential, "accepted", cached=True)
                return entry[0]
            del self._answers[key]
        refused_until = self._refusals.get(key)
        if refused_until is not None:
            if time.monotonic() < refused_until:
                self._refusal_hits += 1
                self._emit_lookup(credential, "refused", cached=True, reason="InvalidSessionError")
                raise InvalidSessionError(_REFUSED)
            del self._refusals[key]
        flight = self._inflight.get(key)
        shared = flight is not None
        duration: float | None = None
        if flight is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                self._emit_lookup(credential, "unavailable", reason="SessionServiceError")
                raise SessionServiceError(
                    f"get-session is not asked again for {wait:.1f} s ({self._retry_reason})",
                    retry_after=wait,
                )
            started = time.monotonic()
            flight = await self._run(credential)
            duration = time.monotonic() - started
        else:
            self._shared += 1
            await flight.done.wait()
        if flight.record is not None:
            self._emit_lookup(credential, "accepted", shared=shared, duration=duration)
            return flight.record
        # The lookup that made the call raises its error, cause and all; the
        # others each get a fresh copy.
        error = self._copy(flight.error) if shared else _settled(flight.error)
        outcome = "refused" if isinstance(error, InvalidSessionError) else "unavailable"
        self._emit_lookup(
            credential, outcome, shared=shared, duration=duration, reason=type(error).__name__
        )
        raise error

    def status(self) -> SessionClientStatus:
        """The counters and cache sizes now (no I/O)."""
        return SessionClientStatus(
            calls=self._calls,
            hits=self._hits,
            refusal_hits=self._refusal_hits,
            shared=self._shared,
            failures=self._failures,
            entries=len(self._answers),
            refusals=len(self._refusals),
            retry_in=max(0.0, self._retry_at - time.monotonic()),
        )

    def clear(self) -> None:
        """Forget every cached answer and refusal (calls in flight finish normally)."""
        self._answers.clear()
        self._refusals.clear()

    async def aclose(self) -> None:
        """Close the HTTP client if this instance made it, and the shared cache."""
        client, self._owned_client = self._owned_client, None
        if client is not None:
            await client.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    # -- calling -------------------------------------------------------------------

    async def _run(self, credential: SessionCredential) -> _Flight:
        flight = _Flight()
        key = credential.key
        self._inflight[key] = flight
        try:
            # Shared by every waiter, so one waiter's cancellation must not abort
            # it; the call is bounded by its own timeout.
            with anyio.CancelScope(shield=True):
                try:
                    keep = math.inf
                    if self.shared is None:
                        record = await self._call(credential)
                    else:
                        record, keep = await self.shared.through(
                            credential, lambda: self._call(credential)
                        )
                except InvalidSessionError as exc:
                    flight.error = exc
                    self._remember_refusal(key)
                except SessionServiceError as exc:
                    flight.error = exc
                    self._failures += 1
                    logger.warning("get-session at %s failed: %s", self.url, exc.message)
                else:
                    flight.record = record
                    self._remember_answer(key, record, keep)
        finally:
            del self._inflight[key]
            flight.done.set()
        return flight

    async def _call(self, credential: SessionCredential) -> SessionRecord:
        self._calls += 1
        try:
            body = await self._download(credential)
            return self._parse(body, credential)
        except (InvalidSessionError, SessionServiceError):
            raise
        except Exception as exc:  # a bug must not become a 500
            logger.exception("get-session lookup failed unexpectedly")
            raise SessionServiceError(
                f"the get-session answer could not be handled ({type(exc).__name__})"
            ) from exc

    def _request(self, credential: SessionCredential) -> httpx.Request:
        headers = [("accept", "application/json"), ACCEPT_IDENTITY, ("user-agent", _USER_AGENT)]
        if credential.kind == "cookie":
            headers.append(("cookie", f"{credential.name}={encode_cookie_value(credential.value)}"))
        else:
            headers.append(("authorization", f"Bearer {credential.value}"))
        # Built here, not with client.build_request: the client's cookie jar and
        # default headers must never be sent along.
        return httpx.Request(
            "GET", self.url, headers=headers, extensions={"timeout": self._timeout_extension}
        )

    async def _download(self, credential: SessionCredential) -> bytes:
        client = self._get_client()
        request = self._request(credential)
        logger.debug("asking get-session at %s (%s)", self.url, credential.kind)
        try:
            with anyio.fail_after(self.timeout):
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.status_code != 200:
                        raise self._http_error(response)
                    return await read_limited(response, self.max_body_size)
                finally:
                    await response.aclose()
        except BodyTooLarge as exc:
            raise SessionServiceError(
                f"the get-session answer is larger than {self.max_body_size} bytes"
            ) from exc
        except ContentEncoded as exc:
            raise SessionServiceError(
                f"get-session answered Content-Encoding {str(exc)!r} although it is asked for "
                "uncompressed (Accept-Encoding: identity)"
            ) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._back_off(
                f"get-session did not answer within {self.timeout:g} s", None
            ) from exc
        except httpx.HTTPError as exc:
            raise self._back_off(
                f"get-session could not be reached ({type(exc).__name__})", None
            ) from exc

    def _http_error(self, response: httpx.Response) -> SessionServiceError:
        status = response.status_code
        message = f"get-session answered HTTP {status}"
        if status == 429 or status >= 500:
            return self._back_off(message, parse_retry_after(response.headers.get("retry-after")))
        if 300 <= status < 400:
            message += " (a redirect: check the URL; redirects are not followed)"
        return SessionServiceError(message)

    def _back_off(self, message: str, retry_after: float | None) -> SessionServiceError:
        """Stop calling for ``retry_after`` seconds (the server's), else ``retry_interval``."""
        wait = self.retry_interval if retry_after is None else min(retry_after, MAX_RETRY_AFTER)
        if wait > 0:
            self._retry_at = max(self._retry_at, time.monotonic() + wait)
            self._retry_reason = message
        return SessionServiceError(message, retry_after=wait or None)

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        client = self._owned_client
        if client is None:
            client = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                # get-session answers set cookies (Better Auth refreshes its cookie
                # cache); a shared client must keep none of them.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
            self._owned_client = client
        return client

    # -- answers ---------------------------------------------------------------

    def _parse(self, body: bytes, credential: SessionCredential) -> SessionRecord:
        try:
            answer = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SessionServiceError("the get-session answer is not JSON") from exc
        if answer is None:
            raise InvalidSessionError(_REFUSED)
        session = answer.get("session") if isinstance(answer, dict) else None
        user = answer.get("user") if isinstance(answer, dict) else None
        if not isinstance(session, dict) or not isinstance(user, dict):
            raise _bad_shape('not null nor {"session": {...}, "user": {...}}')
        session_id, user_id = session.get("id"), session.get("userId")
        if not isinstance(session_id, str) or not session_id:
            raise _bad_shape("session.id is not a string")
        if not isinstance(user_id, str) or not user_id:
            raise _bad_shape("session.userId is not a string")
        if user.get("id") != user_id:
            raise _bad_shape("user.id is not session.userId")
        token = session.get("token")
        if token is not None and token != credential.token:
            raise _bad_shape("it names another session")
        expires_at = session_expiry(session.get("expiresAt"))
        if expires_at is None:
            raise _bad_shape("session.expiresAt is not an ISO 8601 date")
        if expires_at <= time.time():
            raise InvalidSessionError(_EXPIRED)
        try:
            frozen_session = freeze_json({k: v for k, v in session.items() if k != "token"})
            frozen_user = freeze_json(user)
        except RecursionError as exc:
            raise _bad_shape("it is nested too deeply") from exc
        return SessionRecord(
            session=frozen_session,
            user=frozen_user,
            session_id=session_id,
            user_id=user_id,
            expires_at=expires_at,
            token_hash=hashlib.sha256(credential.token.encode()).hexdigest(),
        )

    def _remember_answer(self, key: bytes, record: SessionRecord, keep: float = math.inf) -> None:
        ttl = min(self.cache_ttl, record.expires_at - time.time(), keep)
        if ttl <= 0 or not self.cache_size:
            return
        answers = self._answers
        answers.pop(key, None)
        if len(answers) >= self.cache_size:
            answers.popitem(last=False)
        answers[key] = (record, time.monotonic() + ttl)

    def _remember_refusal(self, key: bytes) -> None:
        if self.refusal_ttl <= 0 or not self.cache_size:
            return
        refusals = self._refusals
        refusals.pop(key, None)
        if len(refusals) >= self.cache_size:
            refusals.popitem(last=False)
        refusals[key] = time.monotonic() + self.refusal_ttl

    def _copy(
        self, error: InvalidSessionError | SessionServiceError | None
    ) -> InvalidSessionError | SessionServiceError:
        # A fresh exception per waiter: re-raising one instance would chain every
        # waiter's traceback onto it.
        error = _settled(error)
        if isinstance(error, InvalidSessionError):
            return InvalidSessionError(error.message)
        retry_after = error.retry_after
        if retry_after is not None:
            retry_after = max(self._retry_at - time.monotonic(), 0.0) or retry_after
        return SessionServiceError(error.message, retry_after=retry_after)

    def _emit_lookup(
        self,
        credential: SessionCredential,
        outcome: str,
        *,
        cached: bool = False,
        shared: bool = False,
        duration: float | None = None,
        reason: str | None = None,
    ) -> None:
        if self._on_event is None:
            return
        data = {
            "kind": credential.kind,
            "cached": cached,
            "shared": shared,
            "outcome": outcome,
            "reason": reason,
            "duration": duration,
        }
        emit(self._on_event, "session_lookup", data)


def _settled(
    error: InvalidSessionError | SessionServiceError | None,
) -> InvalidSessionError | SessionServiceError:
    if error is None:  # pragma: no cover - a finished flight has a record or an error
        return SessionServiceError("get-session gave no answer")
    return error


def _bad_shape(why: str) -> SessionServiceError:
    return SessionServiceError(f"the get-session answer is not usable: {why}")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def session_expiry(value: object) -> float | None:
    """Unix seconds from a JSON date (a JavaScript ``Date``: ISO 8601), or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
