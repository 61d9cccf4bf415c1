"""HTTP helpers for the modules that call the Better Auth server: bounded bodies, Retry-After."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

import anyio
import httpx

__all__ = [
    "ACCEPT_IDENTITY",
    "BodyTooLarge",
    "ClientSlot",
    "ContentEncoded",
    "http_date",
    "parse_retry_after",
    "read_limited",
]

#: Asks for the body uncompressed. Without it any coding is acceptable (RFC 9110), and
#: a compressed body is decoded before a size limit could look at it: 1 KiB of
#: "gzip, gzip" decodes to 512 MiB. :func:`read_limited` refuses any other coding.
ACCEPT_IDENTITY = ("accept-encoding", "identity")

_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")


class ClientSlot:
    """The HTTP client of a module that calls a server: the caller's, or its own.

    Without a client given, one is made by ``make`` on first use and closed by
    :meth:`aclose` (a given client belongs to the caller and is never closed).
    """

    __slots__ = ("_given", "_make", "_owned")

    def __init__(
        self, given: httpx.AsyncClient | None, make: Callable[[], httpx.AsyncClient]
    ) -> None:
        self._given = given
        self._make = make
        self._owned: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        """The client to call with."""
        if self._given is not None:
            return self._given
        if self._owned is None:
            self._owned = self._make()
        return self._owned

    async def aclose(self) -> None:
        """Close the client this slot made, if any; a later :meth:`get` makes another."""
        client, self._owned = self._owned, None
        if client is not None:
            await client.aclose()


class BodyTooLarge(Exception):
    """The body is larger than the limit; the response has been closed."""


class ContentEncoded(Exception):
    """The body is content-encoded (compressed) although identity was asked for.

    ``str(exc)`` is the ``Content-Encoding`` value, cut to 40 characters.
    """


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """Read a streamed response's body as received, refusing one larger than ``limit`` bytes.

    The body is never decoded, so ``limit`` bounds the bytes held: a
    content-encoded answer (ask with :data:`ACCEPT_IDENTITY`) is refused before
    any of it is read, and a declared ``Content-Length`` over the limit too.

    Raises:
        ContentEncoded: the answer has a ``Content-Encoding`` other than identity.
        BodyTooLarge: the body is larger than ``limit``; the response is closed.
    """
    encoding = response.headers.get("content-encoding")
    if encoding is not None and any(
        coding.strip().lower() not in ("", "identity") for coding in encoding.split(",")
    ):
        await response.aclose()
        raise ContentEncoded(encoding if len(encoding) <= 40 else encoding[:37] + "...")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await response.aclose()
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    body = _raw_body(response)
    try:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _abandon(response, body)
        raise
    return b"".join(chunks)


async def _raw_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as received; a transport that answered from memory has it read already."""
    if response.is_stream_consumed:  # e.g. httpx.MockTransport, identity-encoded
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


async def _abandon(response: httpx.Response, body: AsyncIterator[bytes]) -> None:
    """Stop reading ``response`` midway without leaving httpx's generators suspended.

    httpx streams a body through nested async generators; one dropped unfinished is
    finalized by the garbage collector, which trio reports as a ResourceWarning. Once
    the response is closed the next read fails, and that failure ends all of them.
    """
    await response.aclose()
    with contextlib.suppress(Exception):
        for _ in range(16):  # what was already buffered, then the failed read
            await body.__anext__()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns None for a missing or unusable value; a date in the past gives 0.
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    when = http_date(value)
    return None if when is None else max(0.0, when - time.time())


def http_date(value: str | None) -> float | None:
    """Unix seconds of an HTTP date (``Date``, ``Retry-After``), None when unusable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
