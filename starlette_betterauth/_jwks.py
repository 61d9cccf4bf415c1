"""The key-set cache: fetching, keeping and refreshing a Better Auth server's keys."""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import anyio
import httpx

from ._http import (
    ACCEPT_IDENTITY,
    BodyTooLarge,
    ClientSlot,
    ContentEncoded,
    http_date,
    read_limited,
)
from ._keys import SUPPORTED_ALGORITHMS, SkippedKey, VerificationKey, parse_key_set
from ._observability import EventHook, emit, logger
from ._settings import KeySetOptions, check_algorithms, check_http_url
from .errors import (
    KeySetError,
    KeySetFetchError,
    KeySetInvalidError,
    UnknownKeyError,
)

__all__ = ["JWKSCache", "KeySetStatus"]

_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d{1,10})", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*no-(?:cache|store)\b", re.IGNORECASE)
# Skipped keys logged one line each, per fetch; the rest in one line.
_MAX_SKIPPED_LOGGED = 10
# Kids a refetch looked for and did not find, remembered to refuse them at once.
_MAX_ABSENT_KIDS = 1024
# A key set is asked for uncompressed, so the size cap bounds the bytes held.
_REQUEST_HEADERS = dict([("accept", "application/jwk-set+json, application/json"), ACCEPT_IDENTITY])


@dataclass(frozen=True, slots=True)
class KeySetStatus:
    """A snapshot of the cache, for readiness checks and diagnostics.

    Attributes:
        ready: usable keys are loaded (fresh, or stale within ``max_stale``
            after a failed refresh).
        kids: the kids of the loaded keys.
        age: seconds since the last successful fetch (None before the first).
        fetches: fetches attempted so far.
        failures: fetches that failed so far.
        last_error: why the last fetch failed (None once a fetch succeeds).
        skipped: ``(key, reason)`` for each key of the loaded set that was left out.
        last_fetch_at: Unix time at which the last fetch, good or bad, ended.
        last_fetch_duration: seconds the last fetch took.
        server_clock_offset: the server's clock minus this machine's, in seconds,
            from the ``Date`` header of the last answer (whole seconds, so about
            1 s of uncertainty); None when no answer with a Date header came.
    """

    ready: bool
    kids: tuple[str, ...]
    age: float | None
    fetches: int
    failures: int
    last_error: str | None
    skipped: tuple[SkippedKey, ...]
    last_fetch_at: float | None = None
    last_fetch_duration: float | None = None
    server_clock_offset: float | None = None


class JWKSCache:
    """An async, self-refreshing cache of a Better Auth server's JSON Web Key Set.

    The key set is fetched on first need (or by :meth:`refresh` at startup), kept
    for ``ttl`` seconds (or the server's ``Cache-Control: max-age`` clamped to
    ``[min_ttl, max_ttl]``), and fetched by one task at a time however many wait.
    A token whose ``kid`` is unknown triggers a refetch at most once per
    ``refresh_cooldown`` seconds; requests arriving within the cooldown wait for
    the next fetch instead of being refused, so a freshly rotated key is accepted
    on its first use while a flood of random ``kid`` values costs at most one fetch
    per cooldown. A ``kid`` that a refetch already looked for and did not find
    (the last 1,024 such kids are remembered) is refused at once within the
    cooldown instead of waiting for it, so replaying one forged token holds no
    request; it may still trigger a refetch once the cooldown is over. When a
    refresh fails, the last good keys keep serving for up to ``max_stale``
    seconds and the fetch is retried after ``retry_interval`` seconds.

    Args:
        url: the JWKS endpoint, e.g. ``https://auth.example.com/api/auth/jwks``.
        client: an ``httpx.AsyncClient`` to reuse (the caller closes it); by
            default the cache makes its own, without keep-alive.
        algorithms: the algorithms keys may be used for.
        options: :class:`KeySetOptions`: ttl, refresh cooldown, timeout, size cap...
        on_event: ``(name, data)`` hook for metrics: each fetch emits
            ``jwks_fetch`` as it starts, then exactly one of ``jwks_refresh`` or
            ``jwks_failure``. Data keys are listed in
            :mod:`starlette_betterauth.middleware`. A hook that raises is logged
            and ignored.

    Readiness: :meth:`status` reports what is loaded without I/O; :meth:`probe`
    also loads the key set when it is due, for a readiness endpoint.

    Raises:
        ConfigurationError: for a URL that is not http(s) or a bad setting.

    Example::

        cache = JWKSCache(
            "https://auth.example.com/api/auth/jwks", options=KeySetOptions(ttl=600)
        )
        await cache.refresh()          # optional warm-up
        key = await cache.get_key(kid)
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        algorithms: Iterable[str] = SUPPORTED_ALGORITHMS,
        options: KeySetOptions | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        check_http_url("the JWKS URL", url)
        self.url = url
        self.algorithms = check_algorithms(algorithms)
        self.options = options = options if options is not None else KeySetOptions()
        self._min_ttl = min(options.min_ttl, options.ttl)
        self._max_ttl = max(options.max_ttl, options.ttl)
        # Fetches are minutes apart: no keep-alive, so no idle socket outlives one.
        self._client = ClientSlot(
            client,
            lambda: httpx.AsyncClient(
                timeout=self.options.timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            ),
        )
        self._on_event = on_event
        self._keys: dict[str, VerificationKey] = {}
        self._live_key_ids: set[int] = set()
        self._absent: OrderedDict[str, None] = OrderedDict()  # oldest first
        self._skipped: tuple[SkippedKey, ...] = ()
        self._loaded_at: float | None = None  # monotonic time of the last good fetch
        self._fresh_until = -math.inf  # no fetch needed before this
        self._usable_until = -math.inf  # loaded keys may serve until this (ttl + max_stale)
        self._last_start = -math.inf  # when the last fetch started
        self._done_start = -math.inf  # start time of the last fetch that finished
        self._inflight: tuple[anyio.Event, float] | None = None
        self._last_error: KeySetError | None = None
        self._fetches = 0
        self._failures = 0
        self._last_fetch_at: float | None = None
        self._last_fetch_duration: float | None = None
        self._clock_offset: float | None = None

    # -- reading ---------------------------------------------------------------

    @property
    def keys(self) -> Mapping[str, VerificationKey]:
        """The usable keys currently loaded, by kid (possibly stale)."""
        return self._keys

    def status(self) -> KeySetStatus:
        """Report what is loaded, for health checks: ``cache.status().ready``."""
        now = time.monotonic()
        age = None if self._loaded_at is None else now - self._loaded_at
        return KeySetStatus(
            ready=self._usable(now),
            kids=tuple(self._keys),
            age=age,
            fetches=self._fetches,
            failures=self._failures,
            last_error=None if self._last_error is None else self._last_error.message,
            skipped=self._skipped,
            last_fetch_at=self._last_fetch_at,
            last_fetch_duration=self._last_fetch_duration,
            server_clock_offset=self._clock_offset,
        )

    async def probe(self) -> KeySetStatus:
        """Load the key set if it is due, then report the status: for readiness endpoints.

        Unlike :meth:`status`, an instance that has not fetched yet (no request
        so far, no warm-up) fetches here, so a readiness check cannot wait
        forever for traffic that only comes once it is ready. Fetches follow the
        usual rules (one at a time, at most one per ``retry_interval`` after a
        failure), so frequent probes cost the key server nothing more. Never
        raises for a failed fetch: ``ready`` is False and ``last_error`` says why.

        Example::

            async def ready(request):
                status = await verifier.jwks.probe()
                return JSONResponse({"ready": status.ready}, 200 if status.ready else 503)
        """
        if time.monotonic() >= self._fresh_until:
            await self._refresh_due()
        return self.status()

    def has_key(self, kid: str) -> bool:
        """Whether ``kid`` is in the loaded key set and that set is still usable (no I/O).

        Keys stale beyond ``max_stale`` no longer count, so results verified with
        them (the middleware's token cache) stop being trusted too.
        """
        return kid in self._keys and self._usable(time.monotonic())

    def is_current(self, key: VerificationKey) -> bool:
        """Whether ``key`` is still the loaded key of its kid, in a usable set (no I/O).

        False once the kid left the key set, the set went stale beyond
        ``max_stale``, or the kid was reused for other key material: the
        middleware's token cache keeps a result only while this holds.
        """
        return id(key) in self._live_key_ids and time.monotonic() < self._usable_until

    @property
    def live_key_ids(self) -> AbstractSet[int]:
        """The ``id()`` of every key of the loaded set: one set, updated in place.

        ``id(key) in cache.live_key_ids`` tells whether ``key`` is still loaded
        with no Python call (whoever holds ``key`` keeps its id from being
        reused). A fetch that shortens :meth:`usable_until` loads new key
        objects, so every result verified before it stops counting as live.
        """
        return self._live_key_ids

    def usable_until(self) -> float:
        """The monotonic time until which the loaded keys may serve (ttl + ``max_stale``).

        For keys that stay live (:attr:`live_key_ids`) it never moves earlier.
        """
        return self._usable_until

    def current_key(self, kid: str) -> VerificationKey | None:
        """The key named ``kid`` when the loaded set is fresh and has it, without I/O.

        None means "ask :meth:`get_key`", which fetches, waits or refuses as needed.
        """
        now = time.monotonic()
        if now < self._fresh_until and now < self._usable_until:
            return self._keys.get(kid)
        return None

    def _usable(self, now: float) -> bool:
        return now < self._usable_until

    def _unavailable(self) -> KeySetError:
        # A fresh exception per raise: re-raising one stored instance would chain
        # every request's traceback (and the frames holding its token) onto it.
        error = self._last_error
        if error is None:
            return KeySetFetchError("the key set could not be fetched")
        return type(error)(error.message)

    async def get_key(self, kid: str) -> VerificationKey:
        """Return the key named ``kid``, fetching or refetching the key set if needed.

        Raises:
            UnknownKeyError: the key set, even freshly fetched, has no such key.
            KeySetError: no usable key set can be had.
        """
        now = time.monotonic()
        if now >= self._fresh_until:
            await self._refresh_due()
            now = time.monotonic()
        key = self._keys.get(kid)
        if key is None and self._usable(now):
            # Unknown kid: the key set may have rotated since the last fetch. A kid
            # a refetch already missed does not wait out the cooldown for another.
            await self._fetch_started_after(now, wait=kid not in self._absent)
            key = self._keys.get(kid)
            if key is None and self._last_error is not None:
                # The refetch failed: the kid may well be a rotated key, so the
                # answer is "try again later", not "your token is bad".
                raise self._unavailable()
            if key is None:
                self._remember_absent(kid)
        if not self._usable(time.monotonic()):
            raise self._unavailable()
        if key is None:
            raise UnknownKeyError("no key in the key set has the token's kid")
        return key

    # -- fetching --------------------------------------------------------------

    async def refresh(self) -> None:
        """Fetch the key set now (e.g. at startup); keeps the old keys on failure.

        Raises:
            KeySetError: the fetch failed and no usable keys are loaded.
        """
        await self._fetch_started_after(time.monotonic(), cooldown=False)
        if not self._usable(time.monotonic()):
            raise self._unavailable()

    async def aclose(self) -> None:
        """Close the HTTP client if the cache created it."""
        await self._client.aclose()

    async def _refresh_due(self) -> None:
        """The routine refresh once the TTL (or a failure's retry interval) is over.

        Only one task fetches; while it does, the others go on with the loaded
        keys, or wait for it when there are none.
        """
        if self._inflight is not None:
            if not self._usable(time.monotonic()):
                await self._inflight[0].wait()
            return
        if time.monotonic() >= self._fresh_until:
            await self._run_fetch()

    def _remember_absent(self, kid: str) -> None:
        absent = self._absent
        absent[kid] = None
        absent.move_to_end(kid)
        if len(absent) > _MAX_ABSENT_KIDS:
            absent.popitem(last=False)

    async def _fetch_started_after(
        self, since: float, *, cooldown: bool = True, wait: bool = True
    ) -> None:
        """Wait until a fetch that started at or after ``since`` has finished.

        Concurrent callers share one fetch, and fetches start at most once per
        ``refresh_cooldown``: a caller inside the cooldown waits for its end, or
        with ``wait=False`` returns at once (a fetch in flight is still awaited).
        """
        for _ in range(8):  # each pass waits for a later fetch; a few suffice
            if self._done_start >= since:
                return
            if self._inflight is not None:
                await self._inflight[0].wait()
                continue
            gap = (
                self._last_start + self.options.refresh_cooldown - time.monotonic()
                if cooldown
                else 0.0
            )
            if gap > 0:
                if not wait:
                    return
                await anyio.sleep(gap)
                continue
            await self._run_fetch()
            return

    async def _run_fetch(self) -> None:
        event = anyio.Event()
        started = time.monotonic()
        self._inflight = (event, started)
        self._last_start = started
        try:
            # Shared by every waiter, so one waiter's cancellation must not abort it;
            # the fetch is bounded by its own timeout.
            with anyio.CancelScope(shield=True):
                await self._fetch()
            self._done_start = max(self._done_start, started)
        finally:
            self._inflight = None
            event.set()

    async def _fetch(self) -> None:
        self._fetches += 1
        self._clock_offset = None
        logger.debug("fetching the key set from %s", self.url)
        emit(self._on_event, "jwks_fetch", {"url": self.url})
        started = time.monotonic()
        try:
            body, cache_control = await self._download()
            keys, skipped = parse_key_set(body, self.algorithms, libsodium=self.options.libsodium)
        except KeySetError as exc:
            duration = self._fetch_ended(started)
            self._failures += 1
            self._last_error = exc
            self._fresh_until = time.monotonic() + self.options.retry_interval
            stale = " (still serving the previous keys)" if self._keys else ""
            logger.warning("key set fetch from %s failed: %s%s", self.url, exc.message, stale)
            emit(
                self._on_event,
                "jwks_failure",
                {
                    "url": self.url,
                    "error": exc.message,
                    "reason": type(exc).__name__,
                    "stale": bool(self._keys),
                    "duration": duration,
                },
            )
            return
        duration = self._fetch_ended(started)
        for label, reason in skipped[:_MAX_SKIPPED_LOGGED]:
            logger.warning("key set from %s: skipping %s: %s", self.url, label, reason)
        if len(skipped) > _MAX_SKIPPED_LOGGED:
            logger.warning(
                "key set from %s: skipping %d more keys (KeySetStatus.skipped lists them all)",
                self.url,
                len(skipped) - _MAX_SKIPPED_LOGGED,
            )
        now = time.monotonic()
        ttl = self._ttl_from(cache_control)
        usable_until = now + ttl + self.options.max_stale
        previous = self._keys
        gained = sorted(keys.keys() - previous.keys())
        lost = sorted(previous.keys() - keys.keys())
        replaced = []
        # An unchanged key keeps its object: results verified with it (the token
        # caches check identity) stay valid across refetches. Those caches bound a
        # result by the usable time when it was verified, so a fetch that shortens
        # the usable time (a shorter max-age, no-store) loads new objects instead.
        keep = usable_until >= self._usable_until
        for kid, key in keys.items():
            old = previous.get(kid)
            if old is not None:
                if not old.same_key(key):
                    replaced.append(kid)
                elif keep:
                    keys[kid] = old
        self._keys = keys
        live = {id(key) for key in keys.values()}
        self._live_key_ids.intersection_update(live)
        self._live_key_ids.update(live)
        for kid in keys:
            self._absent.pop(kid, None)
        self._skipped = skipped
        self._loaded_at = now
        self._last_error = None
        self._fresh_until = now + ttl
        self._usable_until = usable_until
        if gained or lost or replaced:
            logger.info(
                "key set from %s: %d keys, gained %s, lost %s%s",
                self.url,
                len(keys),
                gained or "none",
                lost or "none",
                f", new key material under {sorted(replaced)}" if replaced else "",
            )
        else:
            logger.debug("key set from %s: %d keys, unchanged", self.url, len(keys))
        emit(
            self._on_event,
            "jwks_refresh",
            {
                "url": self.url,
                "keys": len(keys),
                "gained": gained,
                "lost": lost,
                "replaced": sorted(replaced),
                "duration": duration,
            },
        )

    def _fetch_ended(self, started: float) -> float:
        duration = time.monotonic() - started
        self._last_fetch_at = time.time()
        self._last_fetch_duration = duration
        return duration

    def _ttl_from(self, cache_control: str | None) -> float:
        if not cache_control:
            return self.options.ttl
        if _NO_CACHE.search(cache_control):
            return self._min_ttl
        match = _MAX_AGE.search(cache_control)
        if match is None:
            return self.options.ttl
        return min(max(float(match.group(1)), self._min_ttl), self._max_ttl)

    async def _download(self) -> tuple[bytes, str | None]:
        client = self._client.get()
        try:
            with anyio.fail_after(self.options.timeout):
                async with client.stream(
                    "GET",
                    self.url,
                    headers=_REQUEST_HEADERS,
                    follow_redirects=False,
                ) as response:
                    self._clock_offset = _clock_offset(response.headers.get("date"))
                    if response.status_code != 200:
                        raise KeySetFetchError(
                            f"the key server answered HTTP {response.status_code}"
                        )
                    body = await read_limited(response, self.options.max_body_size)
                    return body, response.headers.get("cache-control")
        except ContentEncoded as exc:
            raise KeySetInvalidError(
                f"the key server answered Content-Encoding {str(exc)!r} although the key set "
                "is asked for uncompressed (Accept-Encoding: identity); serve it without "
                "compression"
            ) from exc
        except BodyTooLarge as exc:
            raise KeySetInvalidError(
                f"the key set is larger than {self.options.max_body_size} bytes"
            ) from exc
        except TimeoutError as exc:
            raise KeySetFetchError(
                f"the key server did not answer within {self.options.timeout} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise KeySetFetchError(
                f"the key server could not be reached ({type(exc).__name__})"
            ) from exc


def _clock_offset(date: str | None) -> float | None:
    """The server's clock minus ours, from an HTTP ``Date`` header (None if unusable)."""
    when = http_date(date)
    return None if when is None else when - time.time()
