"""A bounded cache of verified tokens, so a repeated token costs a hash and a dict lookup."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from hashlib import sha256
from operator import itemgetter
from typing import Any, Generic, TypeVar

from ._keys import VerificationKey
from .errors import ConfigurationError

__all__ = ["TokenCache"]

#: A cached value: a pair, such as ``(user, credential scopes)``.
T = TypeVar("T", bound=tuple[Any, Any])

#: Tokens whose digests are remembered by the token itself (see ``TokenCache._recent``).
_MAX_RECENT = 32


# An entry: the value's two members, the key that verified it, the token's exp
# (the caller's own object, shared with what it built) and the ttl deadline. One
# flat tuple per token, not a pair inside an entry: a cached token holds less.
_Entry = tuple[Any, Any, VerificationKey, float, float]
_pair = itemgetter(0, 1)


def _digest(token: str) -> bytes:
    return sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache(Generic[T]):
    """Verified results keyed on the exact token string (its SHA-256).

    An entry never outlives the token's ``exp`` (plus leeway) nor ``ttl``
    seconds, and is dropped once the key that verified it is no longer the
    current key of the key set (``key_current``): gone, stale, or its kid
    reused for other key material. Only successful verifications are ever put.
    When full, the oldest entry is evicted. ``max_entries=0`` or ``ttl=0``
    switches the cache off.

    Entries are keyed on the SHA-256 of the token, not the token itself: a
    Better Auth token is 600 characters and more, its digest 32 bytes. Only the
    last few tokens are held as such (a map from them to their digests, so a
    repeated token is not hashed again).

    Raises:
        ConfigurationError: a negative size, or a ttl that is not a finite number >= 0.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        ttl: float,
        leeway: float,
        key_current: Callable[[VerificationKey], bool],
    ) -> None:
        if max_entries < 0:
            raise ConfigurationError("token_cache_size must be >= 0 (0 switches the cache off)")
        if not (ttl >= 0 and math.isfinite(ttl)):
            raise ConfigurationError("token_cache_ttl must be a finite number of seconds >= 0")
        self.max_entries = max_entries if ttl > 0 else 0
        self.ttl = ttl
        self.leeway = leeway
        self._key_current = key_current
        # Insertion order is eviction order. OrderedDict drops its oldest entry in
        # O(1); a dict's first key is found by scanning past deleted slots.
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # Digests of the tokens met most recently, by the token itself: a repeated
        # token is found by the string's own hash, computed in C, without SHA-256.
        # Digests only, so what the cache evicts is gone for this map too. Bounded;
        # emptied when full.
        self._recent: dict[str, bytes] = {}
        self._max_recent = min(_MAX_RECENT, self.max_entries)
        # The last token hashed and its digest: a miss is followed by a put of the
        # same token (the string object itself, compared by identity).
        self._last: tuple[str | None, bytes] = (None, b"")

    def __len__(self) -> int:
        return len(self._entries)

    def _remember(self, token: str, digest: bytes) -> None:
        recent = self._recent
        if len(recent) >= self._max_recent:
            recent.clear()
        recent[token] = digest

    def get(self, token: str) -> T | None:
        """The cached value for ``token`` if it is still valid, else None."""
        entries = self._entries
        if not entries:
            return None
        digest = self._recent.get(token)
        if digest is not None:
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
            and self._key_current(entry[2])
        ):
            value: T = _pair(entry)
            return value
        entries.pop(digest, None)
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
        if len(entries) >= self.max_entries and digest not in entries:
            entries.popitem(last=False)
        first, second = value
        entries[digest] = (
            first,
            second,
            key,
            math.inf if exp is None else exp,
            time.monotonic() + self.ttl,
        )

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._recent.clear()
        self._last = (None, b"")
