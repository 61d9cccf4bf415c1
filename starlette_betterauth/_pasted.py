"""What was pasted on the command line: which Better Auth credential it is.

Pure functions, no I/O, nothing verified. The command line's ``inspect`` and
``verify`` take any of Better Auth's credentials as they are copied from a
browser, a response or a log:

- a JWT of the jwt plugin (three segments);
- a session token: raw (what sign-in returns as ``token``, 32 letters and
  digits) or signed, ``<token>.<base64 HMAC-SHA256 signature>`` (the
  ``set-auth-token`` header, the ``session_token`` cookie's value; percent-encoded
  or not);
- the ``session_data`` cookie's value: a JWT whose header ``typ`` is
  ``better-auth.session-cache+jwt`` (Better Auth 1.7's cookie cache signed with
  the jwt plugin's keys);
- a whole ``Cookie`` header (with or without ``Cookie:``) or one ``name=value``
  pair, holding the ``session_token`` cookie and/or the ``session_data`` cookie
  (or its chunks ``.0``, ``.1``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from ._compact import _SESSION_TOKEN, ParsedToken, parse_token
from ._cookies import (
    DEFAULT_COOKIE_PREFIX,
    CookieNames,
    SessionCookies,
    find_session_cookies,
    parse_cookies,
    split_signed_token,
)
from .credentials import SESSION_CACHE_TYP
from .errors import InvalidSessionError, MalformedTokenError

__all__ = ["CredentialKind", "Pasted", "classify", "session_cookie_prefixes"]

CredentialKind = Literal["jwt", "session_token", "session_cookie"]
#: Where a session cookie credential came from: a bare ``session_data`` value, or cookies.
CookieSource = Literal["session_data", "cookie_header"]
#: A session token's form: raw, signed, or two segments whose signature is not Better Auth's.
TokenForm = Literal["raw", "signed", "malformed"]

_COOKIE_HEADER = re.compile(r"\s*cookie\s*:", re.IGNORECASE)
# A Better Auth session cookie's name: [__Secure-|__Host-]<prefix>.session_token or
# <prefix>.session_data, or a chunk of it (.0, .1, ...).
_SESSION_COOKIE_NAME = re.compile(
    r"(?:__Secure-|__Host-)?(?P<prefix>[!#$%&'*+\-.^_`|~0-9A-Za-z]+?)"
    r"\.session_(?:token|data(?:\.\d+)?)"
)
# A cookie pair: an RFC 7230 token, "=", anything.
_PAIR = re.compile(r"\s*[!#$%&'*+\-.^_`|~0-9A-Za-z]+\s*=.*")


@dataclass(frozen=True, slots=True)
class Pasted:
    """A credential from the command line, classified (not verified).

    Attributes:
        kind: ``"jwt"``, ``"session_token"`` or ``"session_cookie"``.
        text: the JWT or session token as given; for a session cookie, the
            Cookie header a browser would send with it (made up from the
            ``session_data`` value when only that was given).
        token_form: for a session token: raw, signed, or malformed.
        parsed: the decoded JWT (a session_data cookie's too), None when it does
            not decode.
        source: for a session cookie: a bare ``session_data`` value, or cookies.
        cookie_prefix: the cookie prefix the session cookies were looked up with.
        found: the session cookies found under that prefix.
        prefixes: the prefixes of the session cookies present, in header order.
        others: the names of the other cookies (not read).
    """

    kind: CredentialKind
    text: str
    token_form: TokenForm | None = None
    parsed: ParsedToken | None = None
    source: CookieSource | None = None
    cookie_prefix: str = DEFAULT_COOKIE_PREFIX
    found: SessionCookies = field(default_factory=SessionCookies)
    prefixes: tuple[str, ...] = ()
    others: tuple[str, ...] = ()


def session_cookie_prefixes(cookies: Mapping[str, str]) -> tuple[str, ...]:
    """The cookie prefixes of the Better Auth session cookies among ``cookies``, in order."""
    prefixes: dict[str, None] = {}
    for name, value in cookies.items():
        match = _SESSION_COOKIE_NAME.fullmatch(name)
        if match is not None and value:
            prefixes.setdefault(match["prefix"])
    return tuple(prefixes)


def _is_cookie_header(text: str) -> bool:
    if any(_SESSION_COOKIE_NAME.fullmatch(name) for name in parse_cookies(text)):
        return True
    # Several pairs: a Cookie header even without session cookies (the caller says so).
    parts = [part for part in text.split(";") if part.strip()]
    return len(parts) > 1 and all(_PAIR.fullmatch(part) for part in parts)


def classify(text: str, *, cookie_prefix: str | None = None) -> Pasted:
    """Say which credential ``text`` is (see the module docstring).

    Args:
        text: what was pasted, stripped of a ``Bearer`` scheme.
        cookie_prefix: Better Auth's ``advanced.cookiePrefix``. None: the prefix
            of the session cookies present (``better-auth`` when it is among
            them, or when there are none).

    Raises:
        ConfigurationError: ``cookie_prefix`` cannot be part of a cookie name.
    """
    header = _COOKIE_HEADER.match(text)
    if header is not None or _is_cookie_header(text):
        value = text[header.end() :].strip() if header is not None else text
        cookies = parse_cookies(value)
        prefixes = session_cookie_prefixes(cookies)
        prefix = cookie_prefix
        if prefix is None:
            prefix = (
                DEFAULT_COOKIE_PREFIX
                if DEFAULT_COOKIE_PREFIX in prefixes or not prefixes
                else prefixes[0]
            )
        names = CookieNames.for_prefix(prefix)
        found = find_session_cookies(cookies, names)
        read = {found.token_name, *found.data_names}
        return Pasted(
            "session_cookie",
            value,
            parsed=_try_parse(found.data) if found.data is not None else None,
            source="cookie_header",
            cookie_prefix=prefix,
            found=found,
            prefixes=prefixes,
            others=tuple(name for name in cookies if name not in read),
        )
    form = session_token_form(text)
    if form is not None:
        return Pasted("session_token", text, token_form=form)
    parsed = _try_parse(text)
    typ = parsed.header.get("typ") if parsed is not None else None
    if isinstance(typ, str) and typ.lower() == SESSION_CACHE_TYP:
        prefix = cookie_prefix or DEFAULT_COOKIE_PREFIX
        name = CookieNames.for_prefix(prefix).session_data[-1]
        value = f"{name}={text}"
        return Pasted(
            "session_cookie",
            value,
            parsed=parsed,
            source="session_data",
            cookie_prefix=prefix,
            found=find_session_cookies(parse_cookies(value), CookieNames.for_prefix(prefix)),
        )
    return Pasted("jwt", text, parsed=parsed)


def session_token_form(text: str) -> TokenForm | None:
    """``"raw"``, ``"signed"`` or ``"malformed"`` for a session token; None for anything else.

    Malformed: two segments, the first a raw token, the second not a
    signature of Better Auth's form (44 base64 characters ending in ``=``).
    """
    if _SESSION_TOKEN.fullmatch(text):
        return "raw"
    try:
        split_signed_token(unquote(text) if "%" in text else text)
    except InvalidSessionError:
        token, dot, signature = text.partition(".")
        if dot and signature and "." not in signature and _SESSION_TOKEN.fullmatch(token):
            return "malformed"
        return None
    return "signed"


def _try_parse(token: str) -> ParsedToken | None:
    try:
        return parse_token(token)
    except MalformedTokenError:
        return None
