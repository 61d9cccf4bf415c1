"""SyncTokenVerifier: token verification for code that is not async."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Unpack

import anyio
import httpx
from anyio.from_thread import BlockingPortal

from ._observability import EventHook
from ._settings import VerifierSettings
from ._verifier import TokenVerifier, VerifiedToken

__all__ = ["SyncTokenVerifier"]


class SyncTokenVerifier:
    """Verify Better Auth JWTs from synchronous code: WSGI apps, sync views, jobs.

    The :class:`TokenVerifier` and its key-set cache live on one event loop
    that runs in a daemon thread of their own (anyio's blocking portal),
    started on first use. Every call, from any thread, is run on that loop:
    threads share one key set, fetched once however many verify at the same
    time, and the cache is never touched by two threads at once. A call
    blocks its thread until the answer; a token whose key is loaded takes
    no I/O.

    Example::

        verifier = SyncTokenVerifier.for_server("https://auth.example.com")

        def handle(environ, start_response):         # a WSGI app
            token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
            try:
                claims = verifier.verify(token)
            except InvalidTokenError:
                ...                                   # 401
            except KeySetError:
                ...                                   # 503, retry later

    Args:
        verifier: the async verifier to run; from then on use it only through
            this object (its cache belongs to the portal's event loop).

    Call :meth:`close` (or use it as a context manager) to stop the thread
    and close the key-set cache's HTTP client; the thread is a daemon, so a
    forgotten ``close`` does not keep the process alive.
    """

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def for_server(
        cls,
        base_url: str | None = None,
        /,
        *,
        http_client: httpx.AsyncClient | None = None,
        on_event: EventHook | None = None,
        **settings: Unpack[VerifierSettings],
    ) -> SyncTokenVerifier:
        """Build one as :meth:`TokenVerifier.for_server` builds a verifier (same settings).

        Raises:
            ConfigurationError: nothing to locate the server by, or a bad setting.
        """
        return cls(
            TokenVerifier.for_server(
                base_url, http_client=http_client, on_event=on_event, **settings
            )
        )

    def verify(self, token: str) -> Mapping[str, Any]:
        """Verify ``token`` and return its claims as a read-only mapping.

        Raises:
            InvalidTokenError: (a subclass naming the reason) the token is refused.
            KeySetError: no usable key set can be had; retry later.
            RuntimeError: the verifier was closed.
        """
        return self.verify_token(token).claims

    def verify_token(self, token: str) -> VerifiedToken:
        """Like :meth:`verify`, returning the header, kid, alg and exp too."""
        verified: VerifiedToken = self._running().call(self.verifier.verify_token, token)
        return verified

    def refresh(self) -> None:
        """Fetch the key set now (e.g. at process start).

        Raises:
            KeySetError: the fetch failed and no usable keys are loaded.
        """
        self._running().call(self.verifier.jwks.refresh)

    def close(self) -> None:
        """Close the key-set cache's HTTP client and stop the event loop thread."""
        with self._lock:
            self._closed = True
            portal, thread = self._portal, self._thread
            self._portal = self._thread = None
        if portal is None or thread is None:
            return
        try:
            portal.call(self.verifier.aclose)
        finally:
            portal.call(portal.stop)
            thread.join()

    def __enter__(self) -> SyncTokenVerifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _running(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None:
            return portal
        with self._lock:
            if self._closed:
                raise RuntimeError("this SyncTokenVerifier is closed")
            if self._portal is None:
                self._portal, self._thread = _start_portal()
            return self._portal


def _start_portal() -> tuple[BlockingPortal, threading.Thread]:
    """Run an event loop with a blocking portal in a daemon thread."""
    started: Future[BlockingPortal] = Future()

    async def serve() -> None:
        async with BlockingPortal() as portal:
            started.set_result(portal)
            await portal.sleep_until_stopped()

    def run() -> None:
        try:
            anyio.run(serve)
        except BaseException as exc:  # pragma: no cover - the loop failed to start
            if not started.done():
                started.set_exception(exc)
            raise

    # A daemon, unlike anyio's start_blocking_portal() whose worker thread the
    # interpreter waits for at exit: a verifier never closed must not hang it.
    thread = threading.Thread(target=run, name="SyncTokenVerifier", daemon=True)
    thread.start()
    return started.result(), thread
