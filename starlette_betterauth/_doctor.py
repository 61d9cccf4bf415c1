"""The doctor's checks and the fixes it suggests, as plain functions.

Each check returns a :class:`Check` (name, status, detail, fix); :func:`explain`
turns any refusal into what to change, in the words of both sides' settings
(the package's options and Better Auth's). The command line prints them; tests
call them directly. Values that come from a token or a server are passed
through :func:`clean` before they reach a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ._access_tokens import (
    ACCESS_TOKEN_TYP,
    DEFAULT_BASE_PATH,
    AccessTokenAuthenticator,
    header_typ,
    type_error,
)
from ._claims import MAX_NUMERIC_DATE, one_of, short_repr
from ._compact import ParsedToken, parse_token
from ._headers import Presented
from ._jwks import JWKSCache
from ._keys import SUPPORTED_ALGORITHMS
from ._settings import DEFAULT_LEEWAY
from ._user import UserBuilder
from ._verifier import TokenVerifier, VerifiedToken
from .errors import (
    BannedUserError,
    BetterAuthError,
    DPoPBindingError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidSessionError,
    InvalidSignatureError,
    InvalidTokenError,
    KeySetError,
    KeySetFetchError,
    MalformedTokenError,
    OpaqueTokenError,
    TokenTypeError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)

__all__ = [
    "Check",
    "CheckStatus",
    "access_token_issuer_fix",
    "check_access_token",
    "check_server",
    "check_token",
    "clean",
    "clock_check",
    "cookie_prefix_fix",
    "dpop_fix",
    "explain",
    "explain_session",
    "key_server_fix",
    "oauth_token_fix",
    "quote",
    "resource_fix",
    "session_server_fix",
    "span",
    "times",
    "typ_fix",
    "utc",
]

#: Within this many seconds the clocks agree: the Date header has whole seconds,
#: and the fetch takes some time.
_CLOCK_OK = 2.0

CheckStatus = Literal["ok", "warn", "fail", "skip"]


def clean(text: str) -> str:
    """Text from a token or a server, safe to print on a terminal (no control characters)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def quote(value: object) -> str:
    """A value from a token inside a sentence, as the package's error messages show it."""
    return clean(short_repr(value))


# -- times -------------------------------------------------------------------------


def utc(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def span(seconds: float) -> str:
    """A duration for people: ``45 s``, ``12 min``, ``3 h 5 min``, ``9 days``."""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    if seconds < 48 * 3600:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{round(seconds / 86400)} days"


def _relative(name: str, value: float, now: float) -> str:
    if name == "exp":
        return (
            f"expires in {span(value - now)}" if value > now else f"expired {span(now - value)} ago"
        )
    if name == "nbf":
        return (
            f"not valid for another {span(value - now)}"
            if value > now
            else f"valid since {span(now - value)} ago"
        )
    return (
        f"issued {span(value - now)} in the future"
        if value > now
        else f"issued {span(now - value)} ago"
    )


def times(claims: Mapping[str, Any], now: float) -> dict[str, dict[str, Any]]:
    """UTC and relative renderings of the token's numeric exp, nbf and iat."""
    found: dict[str, dict[str, Any]] = {}
    for name in ("iat", "nbf", "exp"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if 0 <= value <= MAX_NUMERIC_DATE:
            found[name] = {
                "value": value,
                "utc": utc(value),
                "relative": _relative(name, float(value), now),
            }
    return found


# -- explanations ------------------------------------------------------------------


def key_server_fix(error: KeySetError, url: str) -> str:
    if isinstance(error, KeySetFetchError):
        return (
            f"check that the Better Auth server is running and reachable from here, and that "
            f"{url} is its key set (the jwt plugin serves {{baseURL}}/api/auth/jwks; pass "
            "--jwks-url for a custom basePath or jwks.jwksPath)"
        )
    return (
        f"{url} answered, but not with a usable JSON Web Key Set: check --jwks-url, that the "
        "jwt plugin is enabled on the server, and its keys' algorithms (--algorithms)"
    )


def explain(
    error: BetterAuthError, parsed: ParsedToken | None, verifier: TokenVerifier | None
) -> str | None:
    """What to do about a refusal: the fix, in the words of both sides' settings."""
    claims: Mapping[str, Any] = parsed.claims if parsed is not None else {}
    header: Mapping[str, Any] = parsed.header if parsed is not None else {}
    rules = verifier.rules if verifier is not None else None
    access = verifier is not None and verifier.typ == ACCESS_TOKEN_TYP
    if isinstance(error, TokenTypeError):
        return typ_fix(header.get("typ"), claims)
    if isinstance(error, DPoPBindingError):
        return dpop_fix()
    if isinstance(error, OpaqueTokenError):
        return None  # its message already says what to send instead
    if access and isinstance(error, InvalidIssuerError) and rules and rules.issuer is not None:
        return access_token_issuer_fix(claims.get("iss"), rules.issuer)
    if access and isinstance(error, InvalidAudienceError) and rules is not None:
        return resource_fix(claims.get("aud"), rules.audiences or frozenset())
    if (
        not access
        and isinstance(error, InvalidIssuerError | InvalidAudienceError)
        and _is_access_token_header(header)
    ):
        return oauth_token_fix(claims)
    if isinstance(error, MalformedTokenError):
        return (
            "copy the whole JWT: three base64url parts joined by dots, without quotes, "
            "spaces or line breaks"
        )
    if isinstance(error, InvalidIssuerError) and rules is not None and rules.issuer is not None:
        return _issuer_fix(claims.get("iss"), rules.issuer)
    if isinstance(error, InvalidAudienceError) and rules is not None:
        return _audience_fix(claims.get("aud"), rules.audiences or frozenset())
    if isinstance(error, ExpiredTokenError):
        return _EXPIRED_FIX
    if isinstance(error, ImmatureTokenError):
        return _immature_fix(rules.leeway if rules is not None else DEFAULT_LEEWAY)
    if isinstance(error, UnknownKeyError):
        return _UNKNOWN_KID_FIX
    if isinstance(error, UnsupportedAlgorithmError):
        alg = header.get("alg")
        if verifier is not None and not (isinstance(alg, str) and alg in verifier.algorithms):
            return _alg_fix(alg)
        return _FORGED_FIX
    if isinstance(error, InvalidSignatureError):
        return (
            "the token was changed after signing, or another key has the same kid: get a "
            "fresh token from the server whose key set you check against"
        )
    if isinstance(error, BannedUserError):
        return (
            "the admin plugin marks this user banned; the middleware answers 403 unless "
            "allow_banned=True (--allow-banned). A token keeps the flag it was issued with"
        )
    if isinstance(error, InvalidClaimError):
        return _CLAIMS_FIX
    return None


_EXPIRED_FIX = (
    "get a fresh token (GET /api/auth/token); Better Auth's tokens live 15 min unless "
    "jwt.expirationTime says otherwise. If it should still be valid, compare this "
    "machine's clock with the server's (the doctor command does)"
)
_UNKNOWN_KID_FIX = (
    "the token was signed by another Better Auth server (check --base-url / --jwks-url), "
    "or its key has left the key set (rotation grace period over)"
)
_FORGED_FIX = (
    "the header's alg is not the algorithm of the key its kid names: the token was altered "
    "or forged; get a fresh one from the server"
)
_CLAIMS_FIX = (
    "Better Auth puts sub and exp in every session JWT: if the server customises "
    "jwt.definePayload, keep them (exp, nbf and iat as numbers)"
)


def _immature_fix(leeway: float) -> str:
    return (
        "this machine's clock is behind the server's: sync both with NTP, or raise the "
        f"leeway (--leeway, leeway=; now {leeway:g} s)"
    )


def _alg_fix(alg: object) -> str:
    if isinstance(alg, str) and alg in SUPPORTED_ALGORITHMS:
        return (
            f"add {alg} to the accepted algorithms (--algorithms, algorithms=), or change "
            "jwks.keyPairConfig.alg on the server"
        )
    return (
        f"{quote(alg)} is never accepted: Better Auth's jwt plugin signs with an asymmetric "
        f"key ({', '.join(sorted(SUPPORTED_ALGORITHMS))}; EdDSA by default), so this token "
        "was not made by it"
    )


def _issuer_fix(iss: object, expected: str) -> str:
    if iss == "":
        return (
            "the server signed with an empty iss, as Better Auth does when it cannot "
            f"resolve its baseURL: set baseURL (or BETTER_AUTH_URL) on the server to {expected!r}"
        )
    if not isinstance(iss, str):
        return f"set jwt.issuer on the Better Auth server to {expected!r}"
    slash = (
        " (they differ only by a trailing slash)" if iss.rstrip("/") == expected.rstrip("/") else ""
    )
    return (
        f"set issuer={clean(repr(iss))} (--issuer) if that is the server you trust, or fix "
        f"jwt.issuer (or baseURL) on the server so it signs {expected!r}{slash}"
    )


def _audience_fix(aud: object, expected: frozenset[str]) -> str:
    wanted = one_of(expected)
    if aud is None:
        return f"the token has no aud: set jwt.audience on the Better Auth server to {wanted}"
    offered = (
        aud
        if isinstance(aud, str)
        else next((a for a in aud if isinstance(a, str)), None)
        if isinstance(aud, list)
        else None
    )
    if offered is None:
        return (
            f"aud must be a string or a list of strings: set jwt.audience on the server to {wanted}"
        )
    return (
        f"set audience={clean(repr(offered))} (--audience) if this API should accept it, or "
        f"set jwt.audience on the Better Auth server to {wanted}"
    )


# -- OAuth access tokens -------------------------------------------------------------


def _is_access_token_header(header: Mapping[str, Any]) -> bool:
    typ = header.get("typ")
    return isinstance(typ, str) and typ.lower() in ("at+jwt", "application/at+jwt")


def oauth_token_fix(claims: Mapping[str, Any]) -> str:
    """Where a session-JWT check meets a token of Better Auth's OAuth provider (typ at+jwt)."""
    aud = claims.get("aud")
    resource = (
        aud
        if isinstance(aud, str)
        else next((a for a in aud if isinstance(a, str) and "/oauth2/userinfo" not in a), None)
        if isinstance(aud, list)
        else None
    )
    named = f" {clean(resource)}" if resource else " <the resource it names in aud>"
    return (
        "this is an OAuth access token of Better Auth's OAuth provider (typ at+jwt), not a "
        f"session JWT: check it with --resource{named}; in the app, accept it with "
        f"AccessToken(resource=...). Its issuer is baseURL + basePath ({DEFAULT_BASE_PATH}), "
        "not baseURL"
    )


def access_token_issuer_fix(iss: object, expected: str) -> str:
    """What to change when an access token's ``iss`` is not the expected OAuth issuer."""
    if not isinstance(iss, str) or not iss:
        return f"set jwt.issuer on the Better Auth server, or expect its issuer ({expected!r})"
    if expected.startswith(iss.rstrip("/")) and expected.endswith(DEFAULT_BASE_PATH):
        return (
            f"the token names {clean(repr(iss))}: the server sets jwt.issuer, which replaces "
            "the OAuth provider's issuer (baseURL + basePath) too: pass "
            f"issuer={clean(repr(iss))} (--issuer) to AccessToken"
        )
    return (
        "Better Auth's OAuth provider names baseURL + basePath as issuer (default basePath "
        f"{DEFAULT_BASE_PATH}, so {expected!r} here); if the server's basePath is another, pass "
        f"issuer={clean(repr(iss))} (--issuer) or discovery_url= (its "
        "/.well-known/oauth-authorization-server) to AccessToken"
    )


def typ_fix(typ: object, claims: Mapping[str, Any]) -> str:
    """What to do with a token that is not an access token (``typ`` is not ``at+jwt``)."""
    if "nonce" in claims or "at_hash" in claims or "auth_time" in claims:
        return (
            "the client sent its ID token: send the access_token of the token response "
            "instead (a JWT when the client asks for it with resource=<this API>)"
        )
    if typ in (None, "JWT", "jwt"):
        return (
            "session JWTs (GET /api/auth/token) are accepted with BearerJWT(); check this one "
            "without --resource. An OAuth access token carries typ at+jwt"
        )
    return (
        "Better Auth's OAuth provider marks access tokens with typ at+jwt; this one says "
        f"{quote(typ)}"
    )


def resource_fix(aud: object, resources: frozenset[str]) -> str:
    """What to change when an access token was issued for another resource."""
    wanted = one_of(resources)
    return (
        f"the client must ask for the token with resource={wanted} (RFC 8707) in its authorize "
        "and token requests, and the provider must list it (oauthProvider({ resources: [...] })); "
        f"or, if this API is the resource the token names ({quote(aud)}), pass it as --resource "
        "(AccessToken(resource=...))"
    )


def dpop_fix() -> str:
    """What to do with a DPoP-bound token (``cnf.jkt``)."""
    return (
        "the token is bound to the client's DPoP key (cnf.jkt, RFC 9449): the client must send "
        "it as 'Authorization: DPoP <token>' with a fresh DPoP proof header signed by that key "
        "on every request (a Bearer header is refused); the app accepts that with "
        "AccessToken(dpop=True), the default"
    )


async def check_access_token(
    token: str, kind: AccessTokenAuthenticator, server_ok: bool, checks: list[Check]
) -> None:
    """The checks of an OAuth access token against ``kind`` (AccessToken's rules)."""
    verifier = kind.verifier
    assert verifier is not None  # no discovery from the command line
    try:
        parsed = parse_token(token)
    except MalformedTokenError as exc:
        opaque_advice = (
            "an opaque access token (Better Auth issues one when the client asks for no "
            "resource) is checked only by introspection: ask for the token with "
            "resource=<this API> to get a JWT"
        )
        checks.append(Check("token", "fail", exc.message, opaque_advice))
        return
    before = len(checks)
    header, claims, rules = parsed.header, parsed.claims, verifier.rules
    typ = header_typ(token)
    if typ in ("at+jwt", "application/at+jwt"):
        checks.append(Check("token typ", "ok", "at+jwt: an OAuth access token (RFC 9068)"))
    else:
        error = type_error(typ, claims, kind.base_url)
        typ_advice = typ_fix(header.get("typ"), claims)
        checks.append(Check("token typ", "fail", error.message, typ_advice))
    checks.append(_alg_kid_check(header, verifier, server_ok))
    iss, iss_error = claims.get("iss"), rules.issuer_error(claims)
    if typ not in ("at+jwt", "application/at+jwt"):
        checks.append(Check("token iss/aud", "skip", "not an access token: not compared"))
    elif iss_error is None:
        checks.append(Check("token iss", "ok", f"{quote(iss)} is the OAuth issuer"))
    else:
        issuer_advice = access_token_issuer_fix(iss, kind.issuer)
        checks.append(Check("token iss", "fail", iss_error.message, issuer_advice))
    aud, aud_error = claims.get("aud"), rules.audience_error(claims)
    if typ not in ("at+jwt", "application/at+jwt"):
        pass
    elif aud_error is None:
        checks.append(Check("token aud", "ok", f"{quote(aud)} names {one_of(kind.audiences)}"))
    else:
        resource_advice = resource_fix(aud, kind.audiences)
        checks.append(Check("token aud", "fail", aud_error.message, resource_advice))
    checks.append(_times_check(claims, verifier))
    if "cnf" in claims:
        confirmation = claims["cnf"]
        jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else confirmation
        checks.append(
            Check(
                "token binding",
                "warn",
                f"DPoP-bound to the key {quote(jkt)}: refused as a Bearer token",
                dpop_fix(),
            )
        )
    if not server_ok:
        checks.append(Check("verdict", "skip", "not verified: no usable key set"))
        return
    try:
        user, _ = await kind.authenticate(token, Presented(token, None, None, None))
    except BetterAuthError as exc:
        checks.append(_refused_verdict(exc, checks[before:], parsed, verifier))
        return
    who = f"client {user.id!r} (client_credentials)" if user.is_machine else f"user {user.id!r}"
    scopes = ", ".join(sorted(user.scopes)) or "none"
    checks.append(
        Check("verdict", "ok", f"accepted: {who}, client {user.client_id!r}, scopes {scopes}")
    )


# -- sessions ----------------------------------------------------------------------


def session_server_fix(url: str) -> str:
    """What to do when get-session gives no usable answer (``url`` is where it was asked)."""
    return (
        f"check that the Better Auth server is running and reachable from here, and that "
        f"{url} is its get-session (Better Auth serves {{baseURL}}/api/auth/get-session; pass "
        "--get-session-url for a custom basePath, as get_session_url= to the credential kind)"
    )


def cookie_prefix_fix(prefixes: tuple[str, ...], prefix: str) -> str:
    """Where the session cookies are when none is found under ``prefix``."""
    if prefixes:
        other = prefixes[0]
        return (
            f"these cookies are named with the prefix {other!r} (Better Auth's "
            f"advanced.cookiePrefix): pass --cookie-prefix {other}, and give the middleware "
            f"SessionCookie(cookie_prefix={other!r})"
        )
    return (
        f"Better Auth's session cookies are {prefix}.session_token and {prefix}.session_data "
        "(__Secure- in front on https; advanced.cookiePrefix replaces better-auth): copy the "
        "request's whole Cookie header, or pass --cookie-prefix"
    )


def explain_session(
    error: BetterAuthError,
    *,
    cookie: bool,
    asked: bool,
    parsed: ParsedToken | None = None,
    verifier: TokenVerifier | None = None,
) -> str | None:
    """What to do about a refused session token or session cookie.

    Args:
        error: the refusal.
        cookie: the credential was a session cookie (else a session token).
        asked: get-session was asked (the refusal is its answer).
        parsed: the ``session_data`` cookie, decoded, when there was one.
        verifier: the verifier whose settings the cookie was checked with.
    """
    if isinstance(error, InvalidSessionError):
        if asked:
            return _SIGNED_OUT_FIX
        if not cookie:
            return _SIGNED_FORM_FIX
        return _CACHE_MISMATCH_FIX
    if isinstance(error, BannedUserError):
        return (
            "Better Auth's admin plugin marks this user banned; the middleware answers 403 "
            "unless allow_banned=True (--allow-banned)"
        )
    if not cookie:
        return explain(error, parsed, verifier)
    if isinstance(error, ExpiredTokenError):
        return _CACHE_EXPIRED_FIX
    if isinstance(error, InvalidIssuerError) and verifier is not None:
        return (
            "Better Auth signs the session_data cookie with iss = its baseURL (whatever "
            "jwt.issuer says): the cookie comes from another server, or --base-url "
            "(base_url=) is not this server's baseURL"
        )
    alg = parsed.header.get("alg") if parsed is not None else None
    foreign = isinstance(error, MalformedTokenError) or (
        isinstance(error, UnsupportedAlgorithmError) and alg not in SUPPORTED_ALGORITHMS
    )
    if foreign or type(error) is InvalidTokenError:  # typ is not the cookie cache's
        return _NOT_JWKS_CACHE_FIX
    return explain(error, parsed, verifier)


_SIGNED_OUT_FIX = (
    "sign in again: the session was signed out, revoked or has expired (a ban deletes a "
    "user's sessions too). If it should be live, check that --base-url is the server that "
    "issued it: a signed token or cookie must be signed with that server's BETTER_AUTH_SECRET"
)
_SIGNED_FORM_FIX = (
    "copy the whole signed token (the set-auth-token header, or the session_token cookie's "
    "value): <token>.<signature>, the signature 44 base64 characters ending in '=' (%3D in a "
    "cookie); or the raw token sign-in returns, without the dot"
)
_CACHE_MISMATCH_FIX = (
    "send the session_token and session_data cookies of one browser, as Better Auth last set "
    "them: the session_data cookie must name the session_token cookie's session (sid) and its "
    "user (sub)"
)
_CACHE_EXPIRED_FIX = (
    "the session_data cookie lives session.cookieCache.maxAge seconds (5 min by default); "
    "the browser gets a fresh one from get-session. Copy the whole Cookie header, with the "
    "session_token cookie: then the middleware asks get-session, as this command does"
)
_NOT_JWKS_CACHE_FIX = (
    "this session_data cookie is not signed with the key set: Better Auth's compact, jwe and "
    "HS256 jwt strategies need the secret, so SessionCookie checks the session_token cookie "
    "with get-session instead. To check cookies without a call, set session.cookieCache.strategy "
    '"jwt" with jwt({ sessionCookieCache: true }) on the server (Better Auth 1.7)'
)


def _refused_verdict(
    error: BetterAuthError,
    token_checks: list[Check],
    parsed: ParsedToken | None,
    verifier: TokenVerifier | None,
) -> Check:
    """The verdict of a refused token; its fix only when no earlier check explained it."""
    explained = any(c.status == "fail" for c in token_checks)
    return Check(
        "verdict",
        "fail",
        f"refused with HTTP {error.status_code}: {error.message} ({type(error).__name__})",
        None if explained else explain(error, parsed, verifier),
    )


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report: what was checked, how it went, and the fix."""

    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None


async def check_server(cache: JWKSCache, verifier: TokenVerifier, checks: list[Check]) -> bool:
    try:
        await cache.refresh()
    except KeySetError as exc:
        name = "key server" if isinstance(exc, KeySetFetchError) else "key set"
        checks.append(Check(name, "fail", exc.message, key_server_fix(exc, cache.url)))
        offset = cache.status().server_clock_offset
        if offset is not None:  # it answered, if not with keys: its clock still tells
            checks.append(clock_check(offset, verifier.rules.leeway))
        return False
    status = cache.status()
    took = status.last_fetch_duration or 0.0
    checks.append(Check("key server", "ok", f"answered with a key set in {took * 1000:.0f} ms"))
    keys = list(cache.keys.values())
    algorithms = sorted({alg for key in keys for alg in key.algorithms})
    described = ", ".join(f"{','.join(sorted(k.algorithms))} {k.kid!r}" for k in keys)
    plural = "s" if len(keys) != 1 else ""
    checks.append(Check("key set", "ok", f"{len(keys)} usable key{plural}: {described}"))
    for label, reason in status.skipped:
        checks.append(
            Check(
                "key set",
                "warn",
                f"key {label} is skipped: {reason}",
                "tokens signed with it will be refused; if that key should be used, widen "
                "--algorithms (algorithms=) or fix it on the server",
            )
        )
    unused = sorted(verifier.algorithms - set(algorithms))
    checks.append(
        Check(
            "algorithms",
            "ok",
            f"the key set signs with {', '.join(algorithms)}"
            + (f"; also accepted: {', '.join(unused)}" if unused else ""),
        )
    )
    checks.append(clock_check(status.server_clock_offset, verifier.rules.leeway))
    return True


def clock_check(offset: float | None, leeway: float) -> Check:
    if offset is None:
        return Check("clock", "skip", "the server sent no Date header; clocks not compared")
    direction = "ahead of" if offset > 0 else "behind"
    size = abs(offset)
    if size <= _CLOCK_OK:
        return Check("clock", "ok", f"within {_CLOCK_OK:g} s of the server's (its Date header)")
    detail = f"the server's clock is about {size:.0f} s {direction} this machine's"
    if size <= leeway:
        return Check(
            "clock",
            "warn",
            f"{detail}; tokens still pass within the {leeway:g} s leeway",
            "sync both machines with NTP",
        )
    effect = (
        "fresh tokens will be refused as issued in the future"
        if offset > 0
        else "tokens will be refused before they expire"
    )
    return Check(
        "clock",
        "fail",
        f"{detail}, more than the {leeway:g} s leeway: {effect}",
        "sync both machines with NTP, or raise the leeway (--leeway, leeway=)",
    )


async def check_token(
    token: str, verifier: TokenVerifier, server_ok: bool, checks: list[Check]
) -> None:
    try:
        parsed = parse_token(token)
    except MalformedTokenError as exc:
        checks.append(Check("token", "fail", exc.message, explain(exc, None, verifier)))
        return
    before = len(checks)
    header, claims, rules = parsed.header, parsed.claims, verifier.rules
    oauth = _is_access_token_header(header)
    if oauth:
        checks.append(
            Check("token typ", "warn", "typ at+jwt: an OAuth access token", oauth_token_fix(claims))
        )
    checks.append(_alg_kid_check(header, verifier, server_ok))
    if rules.issuer is not None:
        iss, iss_error = claims.get("iss"), rules.issuer_error(claims)
        if iss_error is None:
            checks.append(Check("token iss", "ok", f"{quote(iss)} is the expected issuer"))
        else:
            iss_fix = oauth_token_fix(claims) if oauth else _issuer_fix(iss, rules.issuer)
            checks.append(Check("token iss", "fail", iss_error.message, iss_fix))
    if rules.audiences is not None:
        aud, aud_error = claims.get("aud"), rules.audience_error(claims)
        if aud_error is None:
            names = f"{quote(aud)} names {one_of(rules.audiences)}"
            checks.append(Check("token aud", "ok", names))
        else:
            aud_fix = oauth_token_fix(claims) if oauth else _audience_fix(aud, rules.audiences)
            checks.append(Check("token aud", "fail", aud_error.message, aud_fix))
    checks.append(_times_check(claims, verifier))
    if not server_ok:
        checks.append(Check("verdict", "skip", "not verified: no usable key set"))
        return
    try:
        verified: VerifiedToken = await verifier.verify_token(token)
        user, _ = UserBuilder().build(verified.claims)
    except BetterAuthError as exc:
        checks.append(_refused_verdict(exc, checks[before:], parsed, verifier))
        return
    roles = ", ".join(sorted(user.roles)) or "none"
    checks.append(Check("verdict", "ok", f"accepted: user {user.id!r}, roles {roles}"))


def _alg_kid_check(header: Mapping[str, Any], verifier: TokenVerifier, server_ok: bool) -> Check:
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in verifier.algorithms:
        return Check(
            "token alg",
            "fail",
            f"alg {quote(alg)} is not accepted ({', '.join(sorted(verifier.algorithms))})",
            _alg_fix(alg),
        )
    if not server_ok:
        return Check("token alg/kid", "skip", f"alg {alg}; kid {quote(kid)} not checked")
    key = verifier.jwks.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        kids = ", ".join(repr(k) for k in verifier.jwks.keys)
        return Check(
            "token kid",
            "fail",
            f"kid {quote(kid)} is not in the key set ({kids})",
            _UNKNOWN_KID_FIX,
        )
    if alg not in key.algorithms:
        return Check(
            "token alg",
            "fail",
            f"alg {alg} is not the algorithm of key {kid!r} ({', '.join(sorted(key.algorithms))})",
            _FORGED_FIX,
        )
    return Check("token alg/kid", "ok", f"{alg}, signed by key {kid!r} of the key set")


def _times_check(claims: Mapping[str, Any], verifier: TokenVerifier) -> Check:
    now = time.time()
    text = "; ".join(f"{when['relative']} ({when['utc']})" for when in times(claims, now).values())
    error = verifier.rules.times_error(claims, now)
    if error is None:
        return Check("token times", "ok", text)
    detail = "; ".join(part for part in (text, error.message) if part)
    return Check("token times", "fail", detail, explain(error, None, verifier))
