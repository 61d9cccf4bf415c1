"""A bounded cache of verified tokens, so a repeated token costs a hash and a dict lookup."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Container
from hashlib import sha256
from operator import itemgetter
from typing import Any, Generic, Protocol, TypeVar

from ._keys import VerificationKey
from .errors import ConfigurationError

__all__ = ["TokenCache"]

#: A cached value: a pair, such as ``(user, credential scopes)``.
T = TypeVar("T", bound=tuple[Any, Any])

#: Tokens whose digests are remembered by the token itself (see ``TokenCache._recent``).
_MAX_RECENT = 32
#: Characters of a token's end that key ``TokenCache._recent``: a JWT ends in its
#: signature, so its last characters tell tokens apart without hashing the whole.
_TAIL = 32
#: Entries put within ``ttl / _STEPS`` seconds of each other share one ttl deadline
#: (the earliest): one float for many tokens, and none lives longer than ``ttl``.
_STEPS = 256


# An entry: the value's two members, the key that verified it, the token's exp
# (the caller's own object, shared with what it built) and the ttl deadline
# (shared by the entries put at about the same time). One flat tuple per token,
# not a pair inside an entry: a cached token holds less.
_Entry = tuple[Any, Any, VerificationKey, float, float]
_pair = itemgetter(0, 1)


class KeySet(Protocol):
    """What the cache asks of the key set whose keys verified its entries."""

    @property
    def live_key_ids(self) -> Container[int]:
        """The ``id()`` of every loaded key: one container, kept up to date in place."""
        ...

    def usable_until(self) -> float:
        """The monotonic time until which the loaded keys may serve."""
        ...


def _digest(token: str) -> bytes:
    return sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache(Generic[T]):
    """Verified results keyed on the exact token string (its SHA-256).

    An entry never outlives the token's ``exp`` (plus leeway), ``ttl`` seconds,
    nor the time until which the key set may serve (``key_set.usable_until()``
    when it was put), and is dropped once the key that verified it is no longer
    in the key set (``key_set.live_key_ids``): gone, its kid reused for other key
    material, or retired by a refetch that shortened the usable time (a key set
    must do so, as :class:`~starlette_betterauth.JWKSCache` does). Only
    successful verifications are ever put.
    When full, the oldest entry is evicted. ``max_entries=0`` or ``ttl=0``
    switches the cache off.

    Entries are keyed on the SHA-256 of the token, not the token itself: a
    Better Auth token is 600 characters and more, its digest 32 bytes. Only the
    last few tokens are held as such (a map from their last characters to them
    and their digests, so a repeated token is neither hashed again nor hashed
    whole by the map).

    Raises:
        ConfigurationError: a negative size, or a ttl that is not a finite number >= 0.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        ttl: float,
        leeway: float,
        key_set: KeySet,
    ) -> None:
        if max_entries < 0:
            raise ConfigurationError("token_cache_size must be >= 0 (0 switches the cache off)")
        if not (ttl >= 0 and math.isfinite(ttl)):
            raise ConfigurationError("token_cache_ttl must be a finite number of seconds >= 0")
        self.max_entries = max_entries if ttl > 0 else 0
        self.ttl = ttl
        self.leeway = leeway
        # Read on every hit: a container lookup, no Python call.
        self._live_keys = key_set.live_key_ids
        self._usable_until: Callable[[], float] = key_set.usable_until
        # A plain dict, with the insertion order kept beside it in a deque of
        # digests (8 bytes a token, where an OrderedDict's links take 50 and
        # more): the deque's left end is the oldest entry. An entry get drops
        # leaves its digest in the deque, counted in _dropped until eviction
        # reaches it; the deque is rebuilt when such digests pile up.
        self._entries: dict[bytes, _Entry] = {}
        self._order: deque[bytes] = deque()
        self._dropped: dict[bytes, int] = {}
        # The tokens met most recently and their digests, by the tokens' last
        # characters: a repeated token is found by hashing a few characters, and
        # compared whole, without SHA-256. Digests only, so what the cache evicts
        # is gone for this map too. Bounded; emptied when full.
        self._recent: dict[str, tuple[str, bytes]] = {}
        self._max_recent = min(_MAX_RECENT, self.max_entries)
        # The last token hashed and its digest: a miss is followed by a put of the
        # same token (the string object itself, compared by identity).
        self._last: tuple[str | None, bytes] = (None, b"")
        # The ttl deadline entries share, and how close a new one may be to share it.
        self._deadline = -math.inf
        self._step = ttl / _STEPS

    def __len__(self) -> int:
        return len(self._entries)

    def _remember(self, token: str, digest: bytes) -> None:
        recent = self._recent
        if len(recent) >= self._max_recent:
            recent.clear()
        recent[token[-_TAIL:]] = (token, digest)

    def get(self, token: str) -> T | None:
        """The cached value for ``token`` if it is still valid, else None."""
        entries = self._entries
        if not entries:
            return None
        seen = self._recent.get(token[-_TAIL:])
        if seen is not None and seen[0] == token:
            digest = seen[1]
            entry = entries.get(digest)
        else:
            digest = _digest(token)
            self._last = (token, digest)
            entry = entries.get(digest)
            if entry is not None:
                self._remember(token, digest)
        if entry is None:
            return None
        if (
            time.monotonic() < entry[4]
            and time.time() < entry[3] + self.leeway
            and id(entry[2]) in self._live_keys
        ):
            value: T = _pair(entry)
            return value
        if entries.pop(digest, None) is not None:
            dropped = self._dropped
            dropped[digest] = dropped.get(digest, 0) + 1
        return None

    def put(self, token: str, value: T, key: VerificationKey, exp: float | None) -> None:
        """Remember a successful verification of ``token`` by ``key``."""
        if not self.max_entries:
            return
        last, digest = self._last
        if token is not last:
            digest = _digest(token)
        self._remember(token, digest)
        entries = self._entries
        deadline = min(time.monotonic() + self.ttl, self._usable_until())
        if not 0.0 <= deadline - self._deadline < self._step:
            self._deadline = deadline
        first, second = value
        entry = (first, second, key, math.inf if exp is None else exp, self._deadline)
        if digest in entries:
            entries[digest] = entry  # in its place: its age is its first put's
            return
        if len(entries) >= self.max_entries:
            self._evict()
        entries[digest] = entry
        order = self._order
        order.append(digest)
        if len(order) > 2 * self.max_entries:
            # Mostly digests of dropped entries: keep only the live ones, in order.
            self._order = deque(entries)
            self._dropped.clear()

    def _evict(self) -> None:
        """Drop the oldest entry (digests of entries get dropped are passed over)."""
        order, dropped, entries = self._order, self._dropped, self._entries
        while order:
            digest = order.popleft()
            stale = dropped.get(digest)
            if stale is None:
                entries.pop(digest, None)
                return
            if stale > 1:
                dropped[digest] = stale - 1
            else:
                del dropped[digest]

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._order.clear()
        self._dropped.clear()
        self._recent.clear()
        self._last = (None, b"")
