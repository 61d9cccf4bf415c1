"""A bounded cache of verified tokens, so a repeated token costs a dict lookup."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from ._keys import VerificationKey
from .errors import ConfigurationError

__all__ = ["TokenCache"]

T = TypeVar("T")


class TokenCache(Generic[T]):
    """Verified results keyed on the exact token string.

    An entry never outlives the token's ``exp`` (plus leeway) nor ``ttl``
    seconds, and is dropped once the key that verified it is no longer the
    current key of the key set (``key_current``): gone, stale, or its kid
    reused for other key material. Only successful verifications are ever put.
    When full, the oldest entry is evicted. ``max_entries=0`` or ``ttl=0``
    switches the cache off.

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
        self._entries: OrderedDict[str, tuple[T, VerificationKey, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> T | None:
        """The cached value for ``token`` if it is still valid, else None."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        value, key, expires, deadline = entry
        if time.time() < expires and time.monotonic() < deadline and self._key_current(key):
            return value
        self._entries.pop(token, None)
        return None

    def put(self, token: str, value: T, key: VerificationKey, exp: float | None) -> None:
        """Remember a successful verification of ``token`` by ``key``."""
        if not self.max_entries:
            return
        entries = self._entries
        if token not in entries and len(entries) >= self.max_entries:
            entries.popitem(last=False)
        expires = exp + self.leeway if exp is not None else math.inf
        entries[token] = (value, key, expires, time.monotonic() + self.ttl)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
