"""What the package tells operators: its logger, token fingerprints and outcome events.

Events
------
An ``on_event(name, data)`` hook is called synchronously, so keep it cheap
(increment a counter). Every HTTP request and websocket handshake the middleware
handles emits exactly one of ``accepted``, ``anonymous`` or ``refused``; the
key-set cache adds its ``jwks_*`` events and the session kinds ``session_lookup``.
Names and data keys are stable; new keys may be added. A hook that raises is logged and ignored.

============  ======================================  ========================================
name          when                                    data
============  ======================================  ========================================
accepted      a token was verified; the app is        ``path``; ``cached`` (bool): the token
              called                                  came from the verified-token cache
anonymous     no token, let through (public route     ``path``
              or ``optional=True``)
refused       answered 401, 403 or 503; the app is    ``path``; ``reason``: the error's class
              not called                              name (``ExpiredTokenError``, ...);
                                                      ``status``
jwks_fetch    a key-set fetch starts                  ``url``
jwks_refresh  the fetch succeeded                     ``url``; ``keys`` (count); ``gained``,
                                                      ``lost``, ``replaced`` (sorted kids;
                                                      replaced: new key material under a
                                                      known kid); ``duration`` (s)
jwks_failure  the fetch failed                        ``url``; ``error`` (message); ``reason``
                                                      (class name); ``stale`` (old keys still
                                                      serving); ``duration`` (s)
session_      a session kind looked a session up      ``kind`` (``cookie``/``bearer``);
lookup        (get-session, or its cache)             ``cached``; ``shared`` (waited for
                                                      another request's call); ``outcome``
                                                      (``accepted``, ``refused``,
                                                      ``unavailable``); ``reason``; ``duration``
============  ======================================  ========================================

``path`` is unbounded: do not use it as a metric label. ``reason`` is bounded by
the exception tree in :mod:`starlette_betterauth.errors`.

Logging
-------
Logger ``starlette_betterauth``: one line per refused request at the
middleware's ``log_level`` (WARNING for 503s) naming the method, path, reason and
a short token fingerprint (:func:`token_fingerprint`, never the token); key-set
changes at INFO, fetch failures and skipped keys at WARNING, routine fetches at
DEBUG.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeAlias, get_args

__all__ = ["EVENT_NAMES", "EventHook", "EventName", "emit", "logger", "token_fingerprint"]

#: The package's one logger.
logger: Final = logging.getLogger("starlette_betterauth")

EventName: TypeAlias = Literal[
    "accepted",
    "anonymous",
    "refused",
    "jwks_fetch",
    "jwks_refresh",
    "jwks_failure",
    "session_lookup",
]
#: Every event name a hook can receive.
EVENT_NAMES: Final[frozenset[str]] = frozenset(get_args(EventName))

#: ``(name, data) -> None``: an outcome hook for metrics.
EventHook: TypeAlias = Callable[[str, Mapping[str, Any]], None]


def token_fingerprint(token: str) -> str:
    """A short, non-reversible tag for a token, safe to log: ``sha256:1a2b3c4d``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:8]


def emit(hook: EventHook | None, name: EventName, data: Mapping[str, Any]) -> None:
    """Call ``hook(name, data)``; a hook that raises is logged, never propagated."""
    if hook is None:
        return
    try:
        hook(name, data)
    except Exception:  # an observer must never break authentication
        logger.exception("the on_event hook raised on %r", name)
