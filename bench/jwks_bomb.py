"""Memory and time a key-set fetch costs when the key server sends a decompression bomb.

The server answers ``Content-Encoding: gzip, gzip`` with about 600 bytes that
decode to 512 MiB of spaces. The script measures the process's resident memory
(psutil, sampled every 2 ms from a thread) before, at its peak during, and after
one :meth:`JWKSCache.refresh`, and how long that call took. Not a test: numbers
depend on the machine. Run from the repository root (``-m``, so the package of
this checkout is the one measured)::

    .venv/bin/python -m bench.jwks_bomb
"""

from __future__ import annotations

import gzip
import threading
import time

import anyio
import psutil

import starlette_betterauth
from starlette_betterauth import JWKSCache
from starlette_betterauth.errors import KeySetError
from starlette_betterauth.testing import JWKSServer

MIB = 1024 * 1024


def bomb(decoded_size: int) -> bytes:
    """``decoded_size`` spaces, gzipped twice."""
    inner = gzip.compress(b" " * decoded_size, compresslevel=9)
    return gzip.compress(inner, compresslevel=9)


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


async def fetch(url: str) -> str:
    cache = JWKSCache(url)
    try:
        await cache.refresh()
    except KeySetError as exc:
        return f"{type(exc).__name__}: {exc.message}"
    finally:
        await cache.aclose()
    return "loaded (unexpected)"


def main() -> None:
    body = bomb(512 * MIB)
    with JWKSServer() as server:
        anyio.run(fetch, server.jwks_url)  # warm up: a genuine key set through the same code
        server.body = body
        server.headers = {"Content-Encoding": "gzip, gzip"}
        before = psutil.Process().memory_info().rss
        with PeakRSS() as rss:
            started = time.perf_counter()
            outcome = anyio.run(fetch, server.jwks_url)
            took = time.perf_counter() - started
        after = psutil.Process().memory_info().rss
    print(f"package: {starlette_betterauth.__file__}")
    print(f"bomb: {len(body)} bytes, Content-Encoding: gzip, gzip, decodes to 512 MiB")
    print(f"outcome: {outcome}")
    print(f"RSS before {before / MIB:.1f} MiB, peak {rss.peak / MIB:.1f} MiB", end=", ")
    print(f"after {after / MIB:.1f} MiB")
    print(f"peak growth {(rss.peak - before) / MIB:.1f} MiB; refresh() took {took * 1000:.0f} ms")


if __name__ == "__main__":
    main()
