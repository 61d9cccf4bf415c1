"""Cached lookups at one endpoint of the Better Auth server: who does this credential belong to?

Better Auth's get-session, its OAuth provider's token introspection and its
metadata (RFC 8414 discovery) are asked the same way, and :class:`RemoteLookup`
holds what they share: answers cached
under the SHA-256 of the credential (never the credential in clear) until
``cache_ttl`` or the answer's own expiry, one call in flight per credential
however many requests carry it, refusals cached briefly, bounded and
time-limited calls without redirects, and the server's ``Retry-After`` honoured.
A subclass says how to ask (:meth:`RemoteLookup._request`) and how to read the
answer (:meth:`RemoteLookup._parse`).

A lookup may also share its answers with other processes (``shared=``, a
:class:`SharedCache`: the Redis one of :mod:`starlette_betterauth._fleet`). It
is asked before each call this process would make, with an :class:`Exchange`:
the server's answers travel as the bodies it sent (:meth:`RemoteLookup._shareable`
takes out what must not be stored), and every process reads them with the same
:meth:`RemoteLookup._parse`, so an answer or a refusal read from the shared cache
is the one the server gave.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import anyio
import httpx

from ._frozen import freeze_json
from ._http import (
    ACCEPT_IDENTITY,
    BodyTooLarge,
    ClientSlot,
    ContentEncoded,
    parse_retry_after,
    read_limited,
)
from ._observability import EventHook, EventName, emit, logger
from ._settings import check_http_url
from .errors import BetterAuthError, ConfigurationError, ServiceUnavailableError

__all__ = [
    "MAX_RETRY_AFTER",
    "Exchange",
    "Keyed",
    "LookupStatus",
    "RemoteLookup",
    "SharedCache",
    "finite",
    "freeze_json",
]

#: A ``Retry-After`` longer than this many seconds is cut to it.
MAX_RETRY_AFTER = 300.0


class Keyed(Protocol):
    """A credential to look up: ``key`` is its SHA-256, the cache key."""

    @property
    def key(self) -> bytes:
        """The SHA-256 that names the credential in the caches."""


C = TypeVar("C", bound=Keyed)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Exchange(Generic[R]):
    """One call a lookup would make, as a :class:`SharedCache` sees it (never the credential).

    Attributes:
        name: the entry's name, ``<service>:<hex SHA-256 of the credential>``: the
            service names keep the lookups of different endpoints apart.
        service: the service's name in messages (``"introspection"``).
        ask: makes the call (counted); the body the server answered. Raises
            ``unavailable`` when there is none to be had.
        read: the answer a body gives and when it expires (Unix seconds). Raises
            the refusal it gives (any other :class:`BetterAuthError`), or
            ``unavailable`` for a body that cannot be used.
        shareable: what to store of a body ``read`` answered or refused with
            (nothing secret: get-session's answer without its session token).
        unavailable: the lookup's 503 error.
    """

    name: str
    service: str
    ask: Callable[[], Awaitable[bytes]]
    read: Callable[[bytes], tuple[R, float]]
    shareable: Callable[[bytes], bytes]
    unavailable: type[ServiceUnavailableError]


class SharedCache(Protocol):
    """Answers shared with other processes, consulted before each call a lookup would make."""

    async def through(self, exchange: Exchange[R]) -> tuple[R, float]:
        """The answer for ``exchange``: a shared one, or the call's (shared in turn), and
        when it expires (Unix seconds; a shared answer ends with its shared entry).

        Raises only what ``exchange.read`` and ``exchange.ask`` raise, or
        ``exchange.unavailable`` when the shared cache fails and must not be done without.
        """

    async def aclose(self) -> None:
        """Release its connections."""


@dataclass(frozen=True, slots=True)
class LookupStatus:
    """Counters of a lookup client, for tests, benchmarks and diagnostics.

    Attributes:
        calls: calls made to the server.
        hits: lookups answered from the cache of answers.
        refusal_hits: lookups refused from the cache of refusals.
        shared: lookups that waited for a call another lookup had started.
        failures: calls that ended in a 503 error (no answer to be had).
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


class _Flight(Generic[R]):
    """One call that every concurrent lookup of a credential waits for."""

    __slots__ = ("done", "error", "record")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.record: R | None = None
        self.error: BetterAuthError | None = None


def finite(value: object) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class RemoteLookup(ABC, Generic[C, R]):
    """Asks one endpoint about credentials, with the caching rules of the module docstring.

    A refusal is any :class:`BetterAuthError` :meth:`_parse` raises that is not a
    :class:`ServiceUnavailableError`; it is cached for ``refusal_ttl`` seconds
    and raised again, same class and message, from the cache. No answer to be
    had raises :attr:`unavailable` (HTTP 503): the server unreachable or slower
    than ``timeout``, an HTTP status other than 200, a body larger than
    ``max_body_size``, or one :meth:`_parse` cannot use. After a 429 or 5xx no
    call is made before its ``Retry-After`` (at most :data:`MAX_RETRY_AFTER`
    seconds), or ``retry_interval`` seconds without one, nor after the server
    was unreachable or timed out; cached answers keep serving all along.
    """

    #: The service's name in messages and log lines (``"get-session"``).
    service: ClassVar[str]
    #: The ``on_event`` name each lookup emits.
    event: ClassVar[EventName]
    #: The 503 error raised when no answer can be had.
    unavailable: ClassVar[type[ServiceUnavailableError]]

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None,
        cache_size: int,
        cache_ttl: float,
        refusal_ttl: float,
        timeout: float,
        max_body_size: int,
        retry_interval: float,
        on_event: EventHook | None,
        shared: SharedCache | None = None,
    ) -> None:
        check_http_url(f"the {self.service} URL", url)
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
            if not finite(seconds) or seconds < 0:
                raise ConfigurationError(f"{name} must be a finite number of seconds >= 0")
        if not finite(timeout) or timeout <= 0:
            raise ConfigurationError("timeout must be a positive number of seconds")
        self.url = url
        self.cache_size = cache_size
        self.cache_ttl = float(cache_ttl)
        self.refusal_ttl = float(refusal_ttl)
        self.timeout = float(timeout)
        self.max_body_size = max_body_size
        self.retry_interval = float(retry_interval)
        self._client = ClientSlot(
            client,
            lambda: httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                # Answers may set cookies (Better Auth refreshes its cookie cache in
                # get-session's); a shared client must keep none of them.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            ),
        )
        #: Answers shared with other processes, asked before each call (None: none).
        self.shared = shared
        self._on_event = on_event
        self._timeout_extension = httpx.Timeout(self.timeout).as_dict()
        # Insertion order is eviction order (OrderedDict drops its oldest in O(1)).
        self._answers: OrderedDict[bytes, tuple[R, float]] = OrderedDict()
        self._refusals: OrderedDict[bytes, tuple[float, type[BetterAuthError], str]] = OrderedDict()
        self._inflight: dict[bytes, _Flight[R]] = {}
        self._retry_at = -math.inf  # monotonic time before which no call is made
        self._retry_reason = ""
        self._calls = 0
        self._hits = 0
        self._refusal_hits = 0
        self._shared = 0
        self._failures = 0

    # -- what a subclass provides -------------------------------------------------

    @abstractmethod
    def _request(self, credential: C) -> httpx.Request:
        """The request that asks about ``credential`` (with its timeout extension)."""

    @abstractmethod
    def _parse(self, body: bytes, credential: C) -> tuple[R, float]:
        """The answer for ``credential`` and when it expires (Unix seconds).

        Raises:
            BetterAuthError: a refusal, or :attr:`unavailable` for an unusable answer.
        """

    def _event_data(self, credential: C) -> dict[str, Any]:
        """Members of each lookup event that describe the credential (never its value)."""
        return {}

    def _shareable(self, body: bytes) -> bytes:
        """What a shared cache stores of an answer body :meth:`_parse` took (all of it)."""
        return body

    def _status_hint(self, status: int) -> str:
        """What to check when the server answers ``status`` (appended to the message)."""
        if 300 <= status < 400:
            return " (a redirect: check the URL; redirects are not followed)"
        return ""

    # -- looking up ------------------------------------------------------------------

    async def lookup(self, credential: C) -> R:
        """The answer for ``credential``, from the caches or from the server.

        Raises:
            BetterAuthError: the server refused the credential (401 or 403).
            ServiceUnavailableError: no answer can be had now (503); see ``retry_after``.
        """
        key = credential.key
        entry = self._answers.get(key)
        if entry is not None:
            if time.monotonic() < entry[1]:
                self._hits += 1
                if self._on_event is not None:
                    self._emit(credential, "accepted", cached=True)
                return entry[0]
            del self._answers[key]
        refusal = self._refusals.get(key)
        if refusal is not None:
            refused_until, kind, message = refusal
            if time.monotonic() < refused_until:
                self._refusal_hits += 1
                self._emit(credential, "refused", cached=True, reason=kind.__name__)
                raise kind(message)
            del self._refusals[key]
        flight = self._inflight.get(key)
        shared = flight is not None
        duration: float | None = None
        if flight is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                self._emit(credential, "unavailable", reason=self.unavailable.__name__)
                raise self.unavailable(
                    f"{self.service} is not asked again for {wait:.1f} s ({self._retry_reason})",
                    retry_after=wait,
                )
            started = time.monotonic()
            flight = await self._run(credential)
            duration = time.monotonic() - started
        else:
            self._shared += 1
            await flight.done.wait()
        if flight.record is not None:
            self._emit(credential, "accepted", shared=shared, duration=duration)
            return flight.record
        # The lookup that made the call raises its error, cause and all; the
        # others each get a fresh copy.
        error = self._copy(flight.error) if shared else self._settled(flight.error)
        outcome = "unavailable" if isinstance(error, ServiceUnavailableError) else "refused"
        self._emit(
            credential, outcome, shared=shared, duration=duration, reason=type(error).__name__
        )
        raise error

    def status(self) -> LookupStatus:
        """The counters and cache sizes now (no I/O)."""
        return LookupStatus(
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
        await self._client.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    # -- calling -------------------------------------------------------------------

    async def _run(self, credential: C) -> _Flight[R]:
        flight: _Flight[R] = _Flight()
        key = credential.key
        self._inflight[key] = flight
        try:
            # Shared by every waiter, so one waiter's cancellation must not abort
            # it; the call is bounded by its own timeout.
            with anyio.CancelScope(shield=True):
                try:
                    record, expires_at = await self._call(credential)
                except ServiceUnavailableError as exc:
                    flight.error = exc
                    self._failures += 1
                    logger.warning("%s at %s failed: %s", self.service, self.url, exc.message)
                except BetterAuthError as exc:
                    flight.error = exc
                    self._remember_refusal(key, exc)
                else:
                    flight.record = record
                    self._remember_answer(key, record, expires_at)
        finally:
            del self._inflight[key]
            flight.done.set()
        return flight

    async def _call(self, credential: C) -> tuple[R, float]:
        try:
            if self.shared is None:
                return self._parse(await self._ask(credential), credential)
            exchange = Exchange(
                name=f"{self.service}:{credential.key.hex()}",
                service=self.service,
                ask=lambda: self._ask(credential),
                read=lambda body: self._parse(body, credential),
                shareable=self._shareable,
                unavailable=self.unavailable,
            )
            return await self.shared.through(exchange)
        except BetterAuthError:
            raise
        except Exception as exc:  # a bug must not become a 500
            logger.exception("%s lookup failed unexpectedly", self.service)
            raise self.unavailable(
                f"the {self.service} answer could not be handled ({type(exc).__name__})"
            ) from exc

    async def _ask(self, credential: C) -> bytes:
        """The server's answer body for ``credential``: one call, counted."""
        self._calls += 1
        return await self._download(credential)

    async def _download(self, credential: C) -> bytes:
        client = self._client.get()
        request = self._request(credential)
        # Asked uncompressed, and refused otherwise: a compressed body would be
        # decoded before the size limit could look at it.
        request.headers[ACCEPT_IDENTITY[0]] = ACCEPT_IDENTITY[1]
        logger.debug("asking %s at %s", self.service, self.url)
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
            raise self.unavailable(
                f"the {self.service} answer is larger than {self.max_body_size} bytes"
            ) from exc
        except ContentEncoded as exc:
            raise self.unavailable(
                f"{self.service} answered Content-Encoding {str(exc)!r} although it is asked "
                "for uncompressed (Accept-Encoding: identity)"
            ) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._back_off(
                f"{self.service} did not answer within {self.timeout:g} s", None
            ) from exc
        except httpx.HTTPError as exc:
            raise self._back_off(
                f"{self.service} could not be reached ({type(exc).__name__})", None
            ) from exc

    def _http_error(self, response: httpx.Response) -> ServiceUnavailableError:
        status = response.status_code
        message = f"{self.service} answered HTTP {status}"
        if status == 429 or status >= 500:
            return self._back_off(message, parse_retry_after(response.headers.get("retry-after")))
        return self.unavailable(message + self._status_hint(status))

    def _back_off(self, message: str, retry_after: float | None) -> ServiceUnavailableError:
        """Stop calling for ``retry_after`` seconds (the server's), else ``retry_interval``."""
        wait = self.retry_interval if retry_after is None else min(retry_after, MAX_RETRY_AFTER)
        if wait > 0:
            self._retry_at = max(self._retry_at, time.monotonic() + wait)
            self._retry_reason = message
        return self.unavailable(message, retry_after=wait or None)

    # -- caches ----------------------------------------------------------------

    def _remember_answer(self, key: bytes, record: R, expires_at: float) -> None:
        ttl = min(self.cache_ttl, expires_at - time.time())
        if ttl <= 0 or not self.cache_size:
            return
        answers = self._answers
        answers.pop(key, None)
        if len(answers) >= self.cache_size:
            answers.popitem(last=False)
        answers[key] = (record, time.monotonic() + ttl)

    def _remember_refusal(self, key: bytes, error: BetterAuthError) -> None:
        if self.refusal_ttl <= 0 or not self.cache_size:
            return
        refusals = self._refusals
        refusals.pop(key, None)
        if len(refusals) >= self.cache_size:
            refusals.popitem(last=False)
        refusals[key] = (time.monotonic() + self.refusal_ttl, type(error), error.message)

    def _settled(self, error: BetterAuthError | None) -> BetterAuthError:
        if error is None:  # pragma: no cover - a finished flight has a record or an error
            return self.unavailable(f"{self.service} gave no answer")
        return error

    def _copy(self, error: BetterAuthError | None) -> BetterAuthError:
        # A fresh exception per waiter: re-raising one instance would chain every
        # waiter's traceback onto it.
        error = self._settled(error)
        if not isinstance(error, ServiceUnavailableError):
            return type(error)(error.message)
        retry_after = error.retry_after
        if retry_after is not None:
            retry_after = max(self._retry_at - time.monotonic(), 0.0) or retry_after
        return type(error)(error.message, retry_after=retry_after)

    def _emit(
        self,
        credential: C,
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
            **self._event_data(credential),
            "cached": cached,
            "shared": shared,
            "outcome": outcome,
            "reason": reason,
            "duration": duration,
        }
        emit(self._on_event, self.event, data)
