"""What a fleet of processes shares through Redis: sessions, get-session answers, revocations.

Three uses of a :class:`~starlette_betterauth.RedisStore`, each behind the
credential kinds:

- :class:`StoredSessions` reads sessions straight from Better Auth's
  ``secondaryStorage`` (``secondary_storage=True``): the value Better Auth keeps
  under the raw session token, ``{"session": {...}, "user": {...}}``, and the
  user's ``revoked-sessions-before-<userId>`` mark, in one round trip. A
  missing value is a refusal (Better Auth deletes it at sign-out, revocation
  and ban), so nothing is cached here: every request reads Redis.
- :class:`SharedAnswers` is a cache of get-session answers
  (``secondary_storage=False``) and of introspection answers
  (``Introspection(redis=...)``) shared by every process: keyed by the
  SHA-256 of the credential, kept no longer than the kind's ``cache_ttl`` nor
  the session's or token's expiry, and filled by one call across the fleet (a
  lock that expires, so a worker that dies holding it blocks the others one
  lock period at most).
- :class:`Revocations` refuses JWTs whose user's sessions were revoked after
  the token was issued, and, for tokens with a ``sid`` (the session id), whose
  session is gone; a check is remembered for ``revocation_ttl`` seconds.

While Redis fails (see :mod:`starlette_betterauth._redis`) the store's
``on_error`` decides: ``"fallback"`` asks get-session or introspection instead
(or, for a JWT, trusts its signature), ``"refuse"`` answers 503 with ``Retry-After``. Either
way, a session this process once saw refused after it was live, a revoked
``sid`` and the latest revocation mark of a user are remembered (bounded), so
they are never accepted again by this process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ._frozen import freeze_json
from ._redis import RedisLink, RedisUnavailable
from ._remote import Exchange
from ._sessions import SessionClient, SessionCredential, SessionRecord, session_expiry
from ._settings import RedisStore
from ._user import BetterAuthUser
from .errors import (
    BetterAuthError,
    InvalidSessionError,
    ServiceUnavailableError,
    SessionServiceError,
)

__all__ = [
    "MAX_REMEMBERED",
    "Revocations",
    "SharedAnswers",
    "StoredSessions",
    "StoredSessionsStatus",
    "parse_stored_session",
]

logger = logging.getLogger("starlette_betterauth")

#: Revoked sessions, live sessions and revocation marks remembered per kind, at most.
MAX_REMEMBERED = 100_000

_GONE = (
    "the session is unknown, expired or signed out (it is not in Better Auth's secondaryStorage)"
)
_REVOKED = "the session was revoked (its user's sessions were revoked after it was created)"
_EXPIRED = "the session has expired"
_SID_GONE = "the token's session (sid) was signed out or revoked"
_ISSUED_BEFORE = "the token was issued before its user's sessions were revoked"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


class _Unusable(Exception):
    """A value in Redis that Better Auth would not have written."""


def _remember(entries: OrderedDict[K, V], key: K, value: V) -> None:
    entries[key] = value
    entries.move_to_end(key)
    if len(entries) > MAX_REMEMBERED:
        entries.popitem(last=False)


def _milliseconds(raw: bytes | None) -> float:
    """A revocation mark (``Date.now()`` as decimal text) in ms; 0 when there is none."""
    if raw is None:
        return 0.0
    try:
        mark = float(raw)
    except ValueError:
        raise _Unusable("a revocation mark is not a number") from None
    if not mark >= 0 or mark == float("inf"):
        raise _Unusable("a revocation mark is not a time")
    return mark


def _document(value: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Unusable("a session value is not JSON") from None
    session = document.get("session") if isinstance(document, dict) else None
    user = document.get("user") if isinstance(document, dict) else None
    if not isinstance(session, dict) or not isinstance(user, dict):
        raise _Unusable('a session value is not {"session": {...}, "user": {...}}')
    return session, user


def parse_stored_session(value: bytes, mark: bytes | None, token: str) -> SessionRecord:
    """The live session Better Auth stored under ``token``, checked as its ``findSession`` does.

    A value that is not a session stored for this very token is no session, as
    for Better Auth (which parses it to null): the token is the client's, and so
    is the key read, so it may name any other key (``active-sessions-...``).

    Raises:
        InvalidSessionError: no session for ``token`` in the value, the session
            has expired, or it was created before its user's revocation mark.
        _Unusable: the revocation mark is not what Better Auth writes.
    """
    try:
        session, user = _document(value)
    except _Unusable:
        raise InvalidSessionError(_GONE) from None
    session_id, user_id = session.get("id"), session.get("userId")
    expires_at = session_expiry(session.get("expiresAt"))
    created_at = session_expiry(session.get("createdAt"))
    if (
        session.get("token") != token
        or not isinstance(session_id, str)
        or not session_id
        or not isinstance(user_id, str)
        or not user_id
        or user.get("id") != user_id
        or expires_at is None
        or created_at is None
    ):
        raise InvalidSessionError(_GONE)
    if expires_at <= time.time():
        raise InvalidSessionError(_EXPIRED)
    if created_at * 1000 < _milliseconds(mark):
        raise InvalidSessionError(_REVOKED)
    try:
        frozen_session = freeze_json({k: v for k, v in session.items() if k != "token"})
        frozen_user = freeze_json(user)
    except RecursionError:
        raise InvalidSessionError(_GONE) from None
    return SessionRecord(
        session=frozen_session,
        user=frozen_user,
        session_id=session_id,
        user_id=user_id,
        expires_at=expires_at,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
    )


# -- sessions from Better Auth's secondaryStorage ---------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredSessionsStatus:
    """Counters of a :class:`StoredSessions`.

    Attributes:
        reads: lookups answered by Redis (one round trip each).
        refused: of those, refusals (no session, expired, revoked).
        remembered: lookups refused without I/O: sessions this process saw revoked.
        fallbacks: lookups Redis could not answer (down, slow, unusable value).
        get_session_calls: calls the get-session fallback made.
    """

    reads: int
    refused: int
    remembered: int
    fallbacks: int
    get_session_calls: int


class StoredSessions:
    """Looks sessions up in Better Auth's ``secondaryStorage``; get-session while Redis fails."""

    def __init__(
        self,
        link: RedisLink,
        fallback: SessionClient | None,
        *,
        on_event: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.link = link
        self.fallback = fallback
        self._on_event = on_event
        self._live: OrderedDict[bytes, None] = OrderedDict()
        self._revoked: OrderedDict[bytes, None] = OrderedDict()
        self._reads = self._refused = self._remembered = self._fallbacks = 0

    async def lookup(self, credential: SessionCredential) -> SessionRecord:
        """The live session ``credential`` names.

        Raises:
            InvalidSessionError: no live session (401).
            SessionServiceError: neither Redis nor get-session can answer now (503).
        """
        key = credential.key
        if key in self._revoked:
            self._remembered += 1
            self._emit(credential, "refused", cached=True, reason="InvalidSessionError")
            raise InvalidSessionError(_GONE)
        started = time.monotonic()
        try:
            found = await self.link.read_session(credential.token)
            if found is None:
                raise InvalidSessionError(_GONE)
            record = parse_stored_session(found[0], found[1], credential.token)
        except RedisUnavailable as exc:
            return await self._unavailable(credential, exc.message, exc.retry_after)
        except _Unusable as exc:
            logger.warning(
                "unusable revocation mark in Redis (token %s): %s", _tag(credential), exc
            )
            return await self._unavailable(
                credential, f"Redis holds an unusable value: {exc}", None
            )
        except InvalidSessionError:
            self._reads += 1
            self._refused += 1
            self._forget(key)
            self._emit(credential, "refused", reason="InvalidSessionError", started=started)
            raise
        self._reads += 1
        _remember(self._live, key, None)
        self._emit(credential, "accepted", started=started)
        return record

    def status(self) -> StoredSessionsStatus:
        """The counters now (no I/O)."""
        calls = self.fallback.status().calls if self.fallback is not None else 0
        return StoredSessionsStatus(
            self._reads, self._refused, self._remembered, self._fallbacks, calls
        )

    async def aclose(self) -> None:
        """Release the Redis link and the fallback's HTTP client."""
        await self.link.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()

    def _forget(self, key: bytes) -> None:
        # A session seen live and now refused is gone for good: no cache may
        # bring it back (the fallback's, while Redis fails).
        if key in self._live:
            del self._live[key]
            _remember(self._revoked, key, None)

    async def _unavailable(
        self, credential: SessionCredential, reason: str, retry_after: float | None
    ) -> SessionRecord:
        self._fallbacks += 1
        if self.fallback is None:
            self._emit(credential, "unavailable", reason="SessionServiceError")
            raise SessionServiceError(
                f"sessions cannot be checked now: {reason}", retry_after=retry_after
            )
        try:
            return await self.fallback.lookup(credential)
        except InvalidSessionError:
            self._forget(credential.key)
            raise

    def _emit(
        self,
        credential: SessionCredential,
        outcome: str,
        *,
        cached: bool = False,
        reason: str | None = None,
        started: float | None = None,
    ) -> None:
        if self._on_event is None:
            return
        data = {
            "kind": credential.kind,
            "cached": cached,
            "shared": False,
            "outcome": outcome,
            "reason": reason,
            "duration": None if started is None else time.monotonic() - started,
            "source": "redis",
        }
        try:
            self._on_event("session_lookup", data)
        except Exception:  # an observer must never break authentication
            logger.exception("the on_event hook raised on 'session_lookup'")


# -- answers shared by the fleet: get-session, introspection -----------------------------------


_POLL_FIRST = 0.005
_POLL_MAX = 0.05
# A stored answer: this header line, then the body the server answered.
_FORMAT = b"sba2 "


class SharedAnswers:
    """A cache of a lookup's answers in Redis, filled by one call across the fleet per credential.

    Plugged into a lookup client (``shared=``: get-session's, introspection's),
    behind its own cache and single flight: a process asks Redis only for
    credentials it does not hold, and calls the server only when Redis holds no
    answer and it wins the credential's lock. The others poll for the answer
    until the lock expires (``lock_ttl``), then try to take it themselves.

    An entry is named ``answer:<service>:<SHA-256 of the credential>`` and holds
    the body the server answered (less what ``Exchange.shareable`` takes
    out) and the time it ends: no later than ``cache_ttl`` and the answer's own
    expiry (the session's or the token's), or ``refusal_ttl`` for a refusal.
    Each process reads it as it reads the server's answer, so a refusal comes
    back with its class and message. Its lock is ``lock:<service>:<SHA-256>``.
    """

    def __init__(
        self, link: RedisLink, *, cache_ttl: float, refusal_ttl: float, lock_ttl: float
    ) -> None:
        self.link = link
        self.cache_ttl = cache_ttl
        self.refusal_ttl = refusal_ttl
        self.lock_ttl = lock_ttl
        self.hits = 0
        self.waits = 0
        self.failures = 0

    @classmethod
    def for_lookup(
        cls, store: RedisStore, *, cache_ttl: float, refusal_ttl: float, timeout: float
    ) -> SharedAnswers:
        """The shared cache of a lookup with these settings: its lock outlives one call
        (``timeout``) by a second, so a call never loses it to another worker."""
        return cls(
            RedisLink(store), cache_ttl=cache_ttl, refusal_ttl=refusal_ttl, lock_ttl=timeout + 1.0
        )

    async def through(self, exchange: Exchange[R]) -> tuple[R, float]:
        """The answer for ``exchange`` from Redis, or from its call stored for the others,
        and when it expires (Unix seconds; a stored answer: when its entry ends).

        Raises only what the exchange raises (a refusal, its 503 error), or its 503
        error while Redis fails with ``on_error="refuse"``.
        """
        answer_key, lock_key = f"answer:{exchange.name}", f"lock:{exchange.name}"
        owner = secrets.token_hex(16)
        try:
            found = await self._answer_or_lock(exchange, answer_key, lock_key, owner)
        except BetterAuthError:  # a refusal another process stored
            self.hits += 1
            raise
        except Exception as error:
            if isinstance(error, RedisUnavailable):
                exc = error
            else:  # a bug must not become a 500
                logger.exception("the shared %s cache failed unexpectedly", exchange.service)
                exc = RedisUnavailable(
                    f"the shared {exchange.service} cache failed ({type(error).__name__})"
                )
            self.failures += 1
            if self.link.store.on_error == "refuse":
                raise exchange.unavailable(
                    f"the shared {exchange.service} cache cannot be reached: {exc.message}",
                    retry_after=exc.retry_after,
                ) from exc
            return exchange.read(await exchange.ask())
        if found is not None:
            self.hits += 1
            return found
        try:  # the answer is stored before the lock is released: no second call
            body = await exchange.ask()
            try:
                record, expires_at = exchange.read(body)
            except ServiceUnavailableError:
                raise
            except BetterAuthError:
                await self._store(exchange, answer_key, body, time.time() + self.refusal_ttl)
                raise
            until = min(time.time() + self.cache_ttl, expires_at)
            await self._store(exchange, answer_key, body, until)
        finally:
            await self._release(lock_key, owner)
        return record, expires_at

    async def _answer_or_lock(
        self, exchange: Exchange[R], answer_key: str, lock_key: str, owner: str
    ) -> tuple[R, float] | None:
        """The stored answer, or None once this owner holds the lock (or it outlived a holder)."""
        deadline = time.monotonic() + self.lock_ttl
        pause = _POLL_FIRST
        while True:
            raw, locked = await self.link.answer_or_lock(answer_key, lock_key, owner, self.lock_ttl)
            found = self._load(raw, exchange)
            if found is not None:
                return found
            if locked:
                return None
            # An entry that ended or cannot be read is no answer: its lock is the next step.
            if raw is not None and await self.link.lock(lock_key, owner, self.lock_ttl):
                return None
            if time.monotonic() > deadline:
                return None  # the holder is stuck: call without the lock
            self.waits += 1
            await anyio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)

    async def aclose(self) -> None:
        """Release the Redis link."""
        await self.link.aclose()

    async def _store(self, exchange: Exchange[R], key: str, body: bytes, until: float) -> None:
        ttl = until - time.time()
        if ttl <= 0:
            return
        try:
            value = _FORMAT + repr(until).encode() + b"\n" + exchange.shareable(body)
        except Exception:  # a bug: the others will call themselves
            logger.exception("the %s answer could not be shared", exchange.service)
            return
        try:
            await self.link.put(key, value, ttl)
        except RedisUnavailable:
            self.failures += 1  # the others will call the server themselves

    async def _release(self, key: str, owner: str) -> None:
        try:
            await self.link.unlock(key, owner)
        except RedisUnavailable:
            self.failures += 1  # the lock expires by itself

    def _load(self, raw: bytes | None, exchange: Exchange[R]) -> tuple[R, float] | None:
        """The answer an entry holds; None when there is none, it has ended, or it is
        unusable (logged); raises the refusal it holds."""
        if raw is None:
            return None
        head, _, body = raw.partition(b"\n")
        try:
            if not head.startswith(_FORMAT):
                raise ValueError("not an entry of this version")
            until = float(head[len(_FORMAT) :])
            if not math.isfinite(until):
                raise ValueError("its end is not a time")
            if until <= time.time():
                return None
            record, expires_at = exchange.read(body)
        except ServiceUnavailableError as exc:
            reason = exc.message
        except BetterAuthError:
            raise
        except Exception as exc:  # garbage, or a bug: a miss either way
            reason = f"{type(exc).__name__}: {exc}"
        else:
            return record, min(expires_at, until)
        logger.warning(
            "unusable shared %s answer (%s): %s",
            exchange.service,
            "sha256:" + exchange.name.rpartition(":")[2][:8],
            reason,
        )
        return None


# -- revocation of JWTs ----------------------------------------------------------------------


class Revocations:
    """Refuses JWTs of revoked sessions, reading Better Auth's ``secondaryStorage``.

    A token is refused when its user's ``revoked-sessions-before-<userId>``
    mark is later than its ``iat`` (Better Auth writes the mark when it revokes
    all of a user's sessions: a ban, "revoke sessions", a password change that
    revokes the others), or, for a token with ``sid`` (the session id), when
    that session is no longer among the user's live sessions or was created
    before the mark. One round trip answers both (the session is found through
    the user's ``active-sessions-<userId>`` list); its verdict is remembered for
    ``ttl`` seconds per user and ``sid``, so a revocation is seen within ``ttl``
    seconds plus one round trip.
    """

    def __init__(self, link: RedisLink, *, ttl: float) -> None:
        self.link = link
        self.ttl = ttl
        # (user id, sid or "") -> (checked at, mark ms, session created ms or None)
        self._checked: OrderedDict[tuple[str, str], tuple[float, float, float | None]] = (
            OrderedDict()
        )
        self._marks: OrderedDict[str, float] = OrderedDict()  # the latest mark seen per user
        self._dead: OrderedDict[str, None] = OrderedDict()  # sids seen gone
        self._inflight: dict[tuple[str, str], anyio.Event] = {}
        self.reads = 0
        self.failures = 0

    def passed(self, user: BetterAuthUser) -> bool:
        """Whether ``user``'s token passed a check that is still fresh (no I/O)."""
        entry = self._fresh((user.id, user.session_id or ""))
        return entry is not None and self._verdict(user, entry[1], entry[2]) is None

    async def check(self, user: BetterAuthUser) -> None:
        """Refuse ``user``'s token if it was revoked.

        Raises:
            InvalidSessionError: revoked (401).
            SessionServiceError: Redis fails and the store's ``on_error`` is ``"refuse"``.
        """
        sid = user.session_id or ""
        if sid and sid in self._dead:
            raise InvalidSessionError(_SID_GONE)
        key = (user.id, sid)
        entry = self._fresh(key)
        if entry is None:
            flight = self._inflight.get(key)
            if flight is not None:  # another request is reading this verdict
                await flight.wait()
                entry = self._fresh(key)
            if entry is None:
                entry = await self._read(user, key)
        if entry is None:  # Redis failed: trust the signature, refuse what is known
            mark = self._marks.get(user.id, 0.0)
            error = self._verdict(user, mark, None, session_known=False)
        else:
            error = self._verdict(user, entry[1], entry[2])
        if error is not None:
            raise InvalidSessionError(error)

    def _fresh(self, key: tuple[str, str]) -> tuple[float, float, float | None] | None:
        entry = self._checked.get(key)
        if entry is None or time.monotonic() - entry[0] >= self.ttl:
            return None
        return entry

    async def _read(
        self, user: BetterAuthUser, key: tuple[str, str]
    ) -> tuple[float, float, float | None] | None:
        """Read the verdict's facts from Redis; None when Redis cannot say (``fallback``)."""
        flight = anyio.Event()
        self._inflight.setdefault(key, flight)
        try:
            try:
                mark_raw, value = await self.link.read_revocation(user.id, key[1] or None)
                self.reads += 1
                mark = _milliseconds(mark_raw)
                created = _created(value) if key[1] else None
            except (RedisUnavailable, _Unusable) as exc:
                self.failures += 1
                message = exc.message if isinstance(exc, RedisUnavailable) else str(exc)
                if isinstance(exc, _Unusable):
                    logger.warning("unusable revocation data in Redis: %s", message)
                if self.link.store.on_error == "refuse":
                    retry = exc.retry_after if isinstance(exc, RedisUnavailable) else None
                    raise SessionServiceError(
                        f"revocations cannot be checked now: {message}", retry_after=retry
                    ) from exc
                return None
            if mark > self._marks.get(user.id, 0.0):
                _remember(self._marks, user.id, mark)
            mark = max(mark, self._marks.get(user.id, 0.0))
            if key[1] and (created is None or created < mark):
                _remember(self._dead, key[1], None)
            entry = (time.monotonic(), mark, created)
            _remember(self._checked, key, entry)
            return entry
        finally:
            if self._inflight.get(key) is flight:
                del self._inflight[key]
            flight.set()

    def _verdict(
        self,
        user: BetterAuthUser,
        mark: float,
        created: float | None,
        *,
        session_known: bool = True,
    ) -> str | None:
        sid = user.session_id
        if sid:
            if sid in self._dead:
                return _SID_GONE
            if session_known and (created is None or created < mark):
                return _SID_GONE
            if session_known:
                return None
        if mark <= 0:
            return None
        issued = user.claims.get("iat")
        if not isinstance(issued, int | float) or isinstance(issued, bool):
            return _ISSUED_BEFORE  # no iat: it may have been issued at any time
        # iat has whole seconds: a token issued in the mark's second is refused too.
        return _ISSUED_BEFORE if issued * 1000 < mark else None


def _created(value: bytes | None) -> float | None:
    """When the stored session was created (ms), None when it is gone or has expired."""
    if value is None:
        return None
    session, _ = _document(value)
    expires_at = session_expiry(session.get("expiresAt"))
    created_at = session_expiry(session.get("createdAt"))
    if expires_at is None or created_at is None:
        raise _Unusable("session.expiresAt or session.createdAt is not an ISO 8601 date")
    return None if expires_at <= time.time() else created_at * 1000


def _tag(credential: SessionCredential) -> str:
    return "sha256:" + credential.key.hex()[:8]
