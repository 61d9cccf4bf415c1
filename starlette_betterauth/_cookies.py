"""Better Auth's session cookies: parse a ``Cookie`` header, find the session cookies, unsign.

Pure functions, no I/O. Parsing follows the parser Better Auth itself uses on
the server (better-call's ``parseCookies``), so a request means the same thing
here as there:

- pairs are split on ``;``; spaces and tabs around names and values are
  dropped; a pair without ``=`` or with an empty name is skipped;
- a value in double quotes loses them;
- a value with ``%`` escapes is percent-decoded (Better Auth sends signed
  values through ``encodeURIComponent``); one that does not decode stays as sent;
- of several cookies with one name, the **first** wins. Browsers send the cookie
  with the longest path first, then the oldest (RFC 6265, section 5.4), so the
  first is the one the application set most specifically;
- several ``Cookie`` headers (HTTP/2 and HTTP/3 split them, and ASGI passes them
  on as they came) are joined with ``"; "`` first.

Bounds: only the first :data:`MAX_HEADER_BYTES` characters of the joined headers
are read, and a pair that ends beyond them is ignored whole, never cut; a single
pair longer than :data:`MAX_COOKIE_BYTES` is ignored. A session cookie dropped
this way is simply absent: the request is then treated as not carrying it.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, unquote

from .errors import ConfigurationError, InvalidSessionError

__all__ = [
    "DEFAULT_COOKIE_NAMES",
    "DEFAULT_COOKIE_PREFIX",
    "MAX_CHUNKS",
    "MAX_COOKIE_BYTES",
    "MAX_HEADER_BYTES",
    "CookieNames",
    "SessionCookies",
    "encode_cookie_value",
    "find_session_cookies",
    "parse_cookies",
    "sign_session_token",
    "split_signed_token",
]

#: Better Auth's default ``advanced.cookiePrefix``.
DEFAULT_COOKIE_PREFIX = "better-auth"
#: A single ``name=value`` pair longer than this (in characters) is ignored.
MAX_COOKIE_BYTES = 8 * 1024
#: Only this many characters of the joined ``Cookie`` headers are read.
MAX_HEADER_BYTES = 32 * 1024
#: At most this many ``session_data`` chunk cookies (Better Auth's own ceiling).
MAX_CHUNKS = 100

#: Name prefixes browsers reserve for https (RFC 6265bis), in order of preference.
_SECURE_PREFIXES = ("__Secure-", "__Host-", "")
# A cookie name: an RFC 7230 token.
_TOKEN_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The signature of "<token>.<signature>": standard base64 of a 32-byte HMAC, 44
# characters ending in "=" (better-call accepts no other length). The token is
# everything before the last dot, visible ASCII.
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{43}=")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# "%XX" -> the character, for the ASCII range, hex digits in either case.
_ASCII_ESCAPES = {
    high + low: chr(code)
    for code in range(0x80)
    for high in {f"{code:02x}"[0], f"{code:02X}"[0]}
    for low in {f"{code:02x}"[1], f"{code:02X}"[1]}
}
# encodeURIComponent's unreserved characters, beyond letters and digits.
_URI_COMPONENT_SAFE = "-_.!~*'()"


def parse_cookies(headers: str | bytes | Iterable[str | bytes]) -> dict[str, str]:
    """Parse ``Cookie`` header values into ``{name: value}``, in header order.

    Args:
        headers: one header value, or several (joined with ``"; "``). Bytes are
            decoded as latin-1, as ASGI header values are.

    Returns:
        The cookies; the first of duplicate names wins; values unquoted and
        percent-decoded. See the module docstring for the rules and bounds.

    Example::

        parse_cookies('a=1; b="2"; a=3')          # {'a': '1', 'b': '2'}
        parse_cookies([b"a=1", b"b=x%3D"])        # {'a': '1', 'b': 'x='}
    """
    if isinstance(headers, str):
        text = headers
    elif isinstance(headers, bytes):
        text = headers.decode("latin-1")
    else:
        # Each header cut to the bound first, so a huge one costs no huge join.
        text = "; ".join(
            (header.decode("latin-1") if isinstance(header, bytes) else header)[
                : MAX_HEADER_BYTES + 1
            ]
            for header in headers
        )
    if len(text) > MAX_HEADER_BYTES:
        # Keep only the pairs that end within the bound.
        text = text[: max(text.rfind(";", 0, MAX_HEADER_BYTES + 1), 0)]
    cookies: dict[str, str] = {}
    for pair in text.split(";"):
        eq = pair.find("=")
        if eq < 0 or len(pair) > MAX_COOKIE_BYTES:
            continue
        name = pair[:eq].strip(" \t")
        if not name or name in cookies:
            continue
        value = pair[eq + 1 :].strip(" \t")
        if value[:1] == '"' and len(value) >= 2 and value[-1] == '"':
            value = value[1:-1]
        if "%" in value:
            value = _percent_decode(value)
        cookies[name] = value
    return cookies


def _percent_decode(value: str) -> str:
    # The usual escapes (%3D, %2B, %2F in signed tokens) are ASCII: decoded here
    # without urllib; anything else takes the careful path.
    parts = value.split("%")
    decoded = [parts[0]]
    for part in parts[1:]:
        char = _ASCII_ESCAPES.get(part[:2])
        if char is None:
            return _percent_decode_slowly(value)
        decoded.append(char)
        decoded.append(part[2:])
    return "".join(decoded)


def _percent_decode_slowly(value: str) -> str:
    # decodeURIComponent throws on a stray "%" or bytes that are not UTF-8, and
    # Better Auth then keeps the value as sent: so does this.
    if _BAD_ESCAPE.search(value):
        return value
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        return value


def encode_cookie_value(value: str) -> str:
    """``value`` percent-encoded as JavaScript's ``encodeURIComponent`` does.

    This is how Better Auth writes cookie values, and how a value found by
    :func:`parse_cookies` is sent on unchanged in meaning.
    """
    return quote(value, safe=_URI_COMPONENT_SAFE)


@dataclass(frozen=True, slots=True)
class CookieNames:
    """The names Better Auth's session cookies may have for one cookie prefix.

    Each tuple lists the candidates in order of preference: ``__Secure-``
    (what Better Auth sets on https), ``__Host-``, then the bare name.

    Attributes:
        prefix: the cookie prefix (Better Auth's ``advanced.cookiePrefix``).
        session_token: candidate names of the signed session token cookie.
        session_data: candidate names of the cookie cache (before any ``.N`` chunk suffix).
    """

    prefix: str
    session_token: tuple[str, ...]
    session_data: tuple[str, ...]

    @classmethod
    def for_prefix(cls, prefix: str = DEFAULT_COOKIE_PREFIX) -> CookieNames:
        """The names for ``prefix``, e.g. ``better-auth.session_token``.

        Raises:
            ConfigurationError: ``prefix`` cannot be part of a cookie name.
        """
        if not isinstance(prefix, str) or not _TOKEN_NAME.fullmatch(prefix):
            raise ConfigurationError(
                f"cookie_prefix must be a non-empty cookie name (Better Auth's "
                f"advanced.cookiePrefix, by default {DEFAULT_COOKIE_PREFIX!r}), got {prefix!r}"
            )
        return cls(
            prefix=prefix,
            session_token=tuple(f"{p}{prefix}.session_token" for p in _SECURE_PREFIXES),
            session_data=tuple(f"{p}{prefix}.session_data" for p in _SECURE_PREFIXES),
        )


#: The names for Better Auth's default prefix, ``better-auth``.
DEFAULT_COOKIE_NAMES = CookieNames.for_prefix()


class SessionCookies(NamedTuple):
    """Better Auth's session cookies found in a request.

    Attributes:
        token_name: the name of the session token cookie found, or None.
        token_value: its value, decoded (``<token>.<signature>``), or None.
        data: the cookie cache value (a JWT for the jwt strategy), chunks
            joined in order, or None.
        data_names: the names of the cookie(s) ``data`` came from, in order.
    """

    token_name: str | None = None
    token_value: str | None = None
    data: str | None = None
    data_names: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        """Whether any session cookie was found."""
        return self.token_value is not None or self.data is not None


_NO_SESSION_COOKIES = SessionCookies()


def find_session_cookies(
    cookies: Mapping[str, str], names: CookieNames = DEFAULT_COOKIE_NAMES
) -> SessionCookies:
    """Find the session token and cookie cache among parsed cookies.

    Each is looked up under its candidate names in order (see
    :class:`CookieNames`); empty values count as absent (Better Auth clears a
    cookie by setting it empty). When the unchunked ``session_data`` is absent,
    its chunks ``.0``, ``.1``, ... are joined in order, up to the first missing
    index; more than :data:`MAX_CHUNKS` chunks count as no cookie cache at all.

    Example::

        found = find_session_cookies(parse_cookies(header))
        if found.token_value is not None:
            token, signature = split_signed_token(found.token_value)
    """
    if not cookies:
        return _NO_SESSION_COOKIES
    token_name = token_value = None
    for name in names.session_token:
        value = cookies.get(name)
        if value:
            token_name, token_value = name, value
            break
    data: str | None = None
    data_names: tuple[str, ...] = ()
    for name in names.session_data:
        value = cookies.get(name)
        if value:
            data, data_names = value, (name,)
            break
        chunks = _chunks(cookies, name) if f"{name}.0" in cookies else None
        if chunks:
            data_names = tuple(chunk_name for chunk_name, _ in chunks)
            data = "".join(chunk for _, chunk in chunks)
            break
    if token_value is None and data is None:
        return _NO_SESSION_COOKIES
    return SessionCookies(token_name, token_value, data, data_names)


def _chunks(cookies: Mapping[str, str], name: str) -> list[tuple[str, str]]:
    chunks: list[tuple[str, str]] = []
    for index in range(MAX_CHUNKS + 1):
        chunk_name = f"{name}.{index}"
        value = cookies.get(chunk_name)
        if not value:
            return chunks
        chunks.append((chunk_name, value))
    return []  # more chunks than any Better Auth server writes: not a cookie cache


def split_signed_token(value: str, *, secret: str | bytes | None = None) -> tuple[str, str]:
    """Split a signed session token ``<token>.<base64 HMAC-SHA256(secret, token)>``.

    This is the form of the ``session_token`` cookie (decoded, as
    :func:`parse_cookies` returns it) and of a signed bearer session token.

    Args:
        value: the signed token.
        secret: Better Auth's secret; when given, the signature must match it.

    Returns:
        ``(token, signature)``.

    Raises:
        InvalidSessionError: the value is not of that form, or, with ``secret``,
            its signature does not match.

    Example::

        token, _ = split_signed_token(found.token_value, secret=os.environ["BETTER_AUTH_SECRET"])
    """
    token, dot, signature = value.rpartition(".")
    if not (
        dot
        and 0 < len(token) <= 1024
        and token.isascii()
        and token.isprintable()
        and " " not in token
        and _SIGNATURE.fullmatch(signature)
    ):
        raise InvalidSessionError(
            "the session token is not of the form <token>.<signature> "
            "(a Better Auth session_token cookie or signed session token)"
        )
    if secret is not None:
        # The pattern admits only well-formed base64 of 32 bytes.
        presented = base64.b64decode(signature)
        if not hmac.compare_digest(presented, _mac(token, secret)):
            raise InvalidSessionError(
                "the session token's signature does not match the secret "
                "(forged, or signed by a server with another BETTER_AUTH_SECRET)"
            )
    return token, signature


def sign_session_token(token: str, secret: str | bytes) -> str:
    """``<token>.<signature>`` as Better Auth signs the ``session_token`` cookie (not encoded).

    The signature is the standard base64, with padding, of HMAC-SHA256 keyed
    by ``secret`` over ``token``. Pass the result through
    :func:`encode_cookie_value` for the form a ``Set-Cookie`` header carries.
    """
    return f"{token}.{base64.b64encode(_mac(token, secret)).decode('ascii')}"


def _mac(token: str, secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.digest(key, token.encode("utf-8"), "sha256")
