"""A bounded cache of verified tokens, so a repeated token costs a dict lookup."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TokenCache"]

T = TypeVar("T")


class TokenCache(Generic[T]):
    """Verified results keyed on the exact token string.

    An entry never outlives the token's ``exp`` (plus leeway) nor ``ttl``
    seconds, is dropped when its key has left the key set (``key_present``),
    and only successful verifications are ever put. When full, the oldest entry
    is evicted. ``max_entries=0`` switches the cache off.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        ttl: float,
        leeway: float,
        key_present: Callable[[str], bool],
    ) -> None:
        self.max_entries = max(0, max_entries)
        self.ttl = ttl
        self.leeway = leeway
        self._key_present = key_present
        self._entries: dict[str, tuple[T, str, float, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> T | None:
        """The cached value for ``token`` if it is still valid, else None."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        value, kid, expires, deadline = entry
        if time.time() < expires and time.monotonic() < deadline and self._key_present(kid):
            return value
        del self._entries[token]
        return None

    def put(self, token: str, value: T, kid: str, exp: float | None) -> None:
        """Remember a successful verification of ``token``."""
        if not self.max_entries:
            return
        entries = self._entries
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        expires = exp + self.leeway if exp is not None else float("inf")
        entries[token] = (value, kid, expires, time.monotonic() + self.ttl)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
