"""The Redis a fleet shares: one pool per process, bounded round trips, a breaker.

This is the only module that talks to Redis. :class:`RedisLink` is what a
credential kind holds for a :class:`~starlette_betterauth.RedisStore`:

- every link to equal settings in one process (and event loop) shares one
  connection pool of at most ``max_connections``, made on first use and closed
  when the last link is closed;
- each round trip is bounded by ``timeout`` (connecting included) and is never
  retried by the client; a request waits ``timeout`` at most for a free connection,
  and without one does without Redis (that is this process being busy, not Redis
  failing: Redis is not marked down for it);
- a failure (unreachable, slow, a protocol error, an answer of the wrong type)
  marks Redis down for ``retry_interval`` seconds: calls meanwhile raise
  :class:`RedisUnavailable` at once instead of waiting again. The first failure
  is logged at WARNING, the recovery at INFO.

redis-py's asyncio client is used, so Redis is reached under asyncio only:
under another event loop (trio) every call raises :class:`RedisUnavailable`
(logged once), and the kinds behave as while Redis is down.

The reads of Better Auth's ``secondaryStorage`` are Lua scripts, so that a
session and its user's revocation mark come back in one round trip: they
address keys they find in the values, which a single Redis (or a primary with
replicas) allows and Redis Cluster does not.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._settings import RedisStore
from .errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisLink", "RedisUnavailable", "revoked_before_key"]

logger = logging.getLogger("starlette_betterauth")
T = TypeVar("T")

# Better Auth's session value and its user's revocation mark, in one round trip.
# KEYS[1]: the session key. ARGV[1]: the mark key without the user id, which is
# read from the value (Better Auth writes it; a value it would not parse has no mark).
_READ_SESSION = """
local value = redis.call('GET', KEYS[1])
if not value then return false end
local ok, doc = pcall(cjson.decode, value)
local mark = false
if ok and type(doc) == 'table' and type(doc.session) == 'table'
    and type(doc.session.userId) == 'string' then
  mark = redis.call('GET', ARGV[1] .. doc.session.userId)
end
return {value, mark}
"""

# A user's revocation mark and, when a session id is given, that session's value,
# found through the user's active-sessions list (Better Auth keys sessions by
# token, not id). KEYS[1]: the mark; KEYS[2]: the list. ARGV[1]: the key prefix;
# ARGV[2]: the session id or ''; ARGV[3]: now in milliseconds.
_READ_REVOCATION = """
local mark = redis.call('GET', KEYS[1])
if ARGV[2] == '' then return {mark, false} end
local list = redis.call('GET', KEYS[2])
if not list then return {mark, false} end
local ok, refs = pcall(cjson.decode, list)
if not ok or type(refs) ~= 'table' then return {mark, false} end
local now = tonumber(ARGV[3])
for i, ref in ipairs(refs) do
  if i > 1000 then break end
  if type(ref) == 'table' and type(ref.token) == 'string'
      and type(ref.expiresAt) == 'number' and ref.expiresAt > now then
    local value = redis.call('GET', ARGV[1] .. ref.token)
    if value then
      local parsed, doc = pcall(cjson.decode, value)
      if parsed and type(doc) == 'table' and type(doc.session) == 'table'
          and doc.session.id == ARGV[2] then
        return {mark, value}
      end
    end
  end
end
return {mark, false}
"""

# A shared answer, or else its lock, in one step: between a GET that finds no answer
# and a separate SET NX, the holder could store its answer and release the lock, and
# a second call would follow. KEYS[1]: the answer; KEYS[2]: the lock. ARGV[1]: the
# owner; ARGV[2]: the lock's lifetime in milliseconds. Returns {answer, false},
# {false, '1'} once the lock is ours, or {false, false} while another holds it.
_ANSWER_OR_LOCK = """
local value = redis.call('GET', KEYS[1])
if value then return {value, false} end
if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return {false, '1'} end
return {false, false}
"""

# Release a lock only if it is still ours (it may have expired and been taken).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def revoked_before_key(user_id: str) -> str:
    """Better Auth's key of the time before which a user's sessions are revoked (ms)."""
    return f"revoked-sessions-before-{user_id}"


class RedisUnavailable(Exception):
    """Redis gave no usable answer now; ``retry_after``: seconds before it is asked again."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _Health:
    """Per store and process: whether Redis is down, and who uses it."""

    __slots__ = ("down_until", "failed", "links", "reason", "warned_loop")

    def __init__(self) -> None:
        self.down_until = -math.inf
        self.reason = ""
        self.failed = False
        self.links = 0
        self.warned_loop = False


class _Pool:
    """One redis-py client and its connection pool, in one event loop."""

    def __init__(self, store: RedisStore) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            store.url,
            max_connections=store.max_connections,
            timeout=store.timeout,
            socket_timeout=store.timeout,
            socket_connect_timeout=store.timeout,
            # Bounded by one timeout: the breaker, not the client, decides when to try again.
            retry=Retry(NoBackoff(), 0),
        )
        self.client: Redis = Redis(connection_pool=self.pool)
        # Requests wait here for a connection, so the pool itself never has to.
        self.slots = asyncio.Semaphore(store.max_connections)
        self.read_session: AsyncScript = self.client.register_script(_READ_SESSION)
        self.read_revocation: AsyncScript = self.client.register_script(_READ_REVOCATION)
        self.answer_or_lock: AsyncScript = self.client.register_script(_ANSWER_OR_LOCK)
        self.unlock: AsyncScript = self.client.register_script(_UNLOCK)

    async def aclose(self) -> None:
        await self.pool.disconnect()


_HEALTH: dict[RedisStore, _Health] = {}
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[RedisStore, _Pool]] = (
    weakref.WeakKeyDictionary()
)


def _require_redis() -> None:
    try:
        import redis.asyncio  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "RedisStore needs the redis package: pip install 'starlette-betterauth[redis]'"
        ) from exc


class RedisLink:
    """A kind's handle on the process's shared Redis client for ``store``.

    Raises:
        ConfigurationError: the ``redis`` package is not installed.
    """

    def __init__(self, store: RedisStore) -> None:
        _require_redis()
        self.store = store
        self._health = _HEALTH.setdefault(store, _Health())
        self._health.links += 1
        self._closed = False

    # -- the commands ------------------------------------------------------------

    async def read_session(self, token: str) -> tuple[bytes, bytes | None] | None:
        """Better Auth's value for session ``token`` and its user's mark, or None."""
        prefix = self.store.key_prefix
        answer = await self._run(
            lambda pool: pool.read_session(
                keys=[prefix + token], args=[prefix + revoked_before_key("")]
            )
        )
        if answer is None:
            return None
        value, mark = self._pair(answer)
        if value is None:
            raise self._fail("Redis answered a session script with no value")
        return value, mark

    async def read_revocation(
        self, user_id: str, session_id: str | None
    ) -> tuple[bytes | None, bytes | None]:
        """A user's revocation mark, and the value of their session ``session_id`` if live."""
        prefix = self.store.key_prefix
        answer = await self._run(
            lambda pool: pool.read_revocation(
                keys=[prefix + revoked_before_key(user_id), f"{prefix}active-sessions-{user_id}"],
                args=[prefix, session_id or "", int(time.time() * 1000)],
            )
        )
        return self._pair(answer)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Set one of this package's keys for ``ttl`` seconds."""
        milliseconds = max(1, int(ttl * 1000))
        await self._run(
            lambda pool: pool.client.set(self.store.cache_prefix + key, value, px=milliseconds)
        )

    async def answer_or_lock(
        self, key: str, lock: str, owner: str, ttl: float
    ) -> tuple[bytes | None, bool]:
        """The value of ``key``, or else whether ``owner`` now holds ``lock`` (for ``ttl``
        seconds), in one atomic step (``cache_prefix`` is added to both)."""
        prefix = self.store.cache_prefix
        answer = await self._run(
            lambda pool: pool.answer_or_lock(
                keys=[prefix + key, prefix + lock], args=[owner, max(1, int(ttl * 1000))]
            )
        )
        value, locked = self._pair(answer)
        return value, value is None and locked is not None

    async def lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take the lock ``key`` for ``ttl`` seconds unless another owner holds it."""
        milliseconds = max(1, int(ttl * 1000))
        answer = await self._run(
            lambda pool: pool.client.set(
                self.store.cache_prefix + key, owner, px=milliseconds, nx=True
            )
        )
        return bool(answer)

    async def unlock(self, key: str, owner: str) -> None:
        """Release the lock ``key`` if ``owner`` still holds it."""
        await self._run(
            lambda pool: pool.unlock(keys=[self.store.cache_prefix + key], args=[owner])
        )

    # -- health --------------------------------------------------------------------

    def retry_in(self) -> float:
        """Seconds before Redis is asked again (0 when it may be asked now)."""
        return max(0.0, self._health.down_until - time.monotonic())

    async def aclose(self) -> None:
        """Release this link; the last link of the process closes the pool."""
        if self._closed:
            return
        self._closed = True
        health = self._health
        health.links -= 1
        if health.links > 0:
            return
        _HEALTH.pop(self.store, None)
        loop = _running_loop()
        for owner, pools in list(_POOLS.items()):
            pool = pools.pop(self.store, None)
            # A pool of another event loop (one that has finished) cannot be awaited here.
            if pool is not None and owner is loop:
                await pool.aclose()

    # -- running a command -----------------------------------------------------------

    def _pool(self) -> _Pool:
        loop = _running_loop()
        if loop is None:
            health = self._health
            if not health.warned_loop:
                health.warned_loop = True
                logger.error(
                    "RedisStore needs asyncio (redis-py's asyncio client); this event loop is "
                    "not asyncio, so Redis is never asked here"
                )
            raise RedisUnavailable("Redis is reached under asyncio only")
        pools = _POOLS.setdefault(loop, {})
        pool = pools.get(self.store)
        if pool is None:
            pool = pools[self.store] = _Pool(self.store)
        return pool

    async def _run(self, command: Callable[[_Pool], Awaitable[T]]) -> T:
        if self._closed:
            raise RedisUnavailable("the Redis link is closed")
        health = self._health
        wait = health.down_until - time.monotonic()
        if wait > 0:
            raise RedisUnavailable(
                f"Redis is not asked again for {wait:.1f} s ({health.reason})", wait
            )
        pool = self._pool()
        timeout = self.store.timeout
        try:
            with anyio.fail_after(timeout):
                await pool.slots.acquire()
        except TimeoutError:
            # This process is busy, not Redis: this request does without it.
            raise RedisUnavailable(
                f"no free Redis connection within {timeout:g} s "
                f"(max_connections={self.store.max_connections})"
            ) from None
        try:
            with anyio.fail_after(timeout):
                answer = await command(pool)
        except TimeoutError as exc:
            raise self._fail(f"Redis did not answer within {timeout:g} s") from exc
        except (_redis_error(), OSError) as exc:
            raise self._fail(f"Redis failed ({type(exc).__name__}: {_short(exc)})") from exc
        finally:
            pool.slots.release()
        if health.failed:
            health.failed = False
            logger.info("Redis at %s answers again", _where(self.store))
        return answer

    def _fail(self, reason: str) -> RedisUnavailable:
        health = self._health
        wait = self.store.retry_interval
        health.down_until = time.monotonic() + wait
        health.reason = reason
        if not health.failed:
            health.failed = True
            logger.warning("%s at %s; not asked again for %g s", reason, _where(self.store), wait)
        return RedisUnavailable(reason, wait or None)

    def _pair(self, answer: Any) -> tuple[bytes | None, bytes | None]:
        if (
            not isinstance(answer, list)
            or len(answer) != 2
            or not all(item is None or isinstance(item, bytes) for item in answer)
        ):
            raise self._fail(f"Redis answered a script with a {type(answer).__name__}")
        return answer[0], answer[1]


def _redis_error() -> type[Exception]:
    from redis.exceptions import RedisError  # imported once RedisLink checked it is installed

    return RedisError


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no asyncio loop runs here (trio)
        return None


def _short(error: BaseException) -> str:
    text = str(error).replace("\n", " ")
    return text if len(text) <= 120 else text[:120] + "..."


def _where(store: RedisStore) -> str:
    return repr(store).partition("(")[2].partition(",")[0]
