"""The command line: ``python -m starlette_betterauth`` or ``starlette-betterauth``.

``inspect`` says which Better Auth credential it is given (a JWT, a session
token, a ``session_data`` cookie or a Cookie header) and decodes what can be
decoded without verifying it; ``verify`` verifies it as the middleware's
credential kinds do (:class:`TokenVerifier` for a JWT, ``SessionCookie`` and
``SessionToken`` for sessions); ``jwks`` shows a key set as the cache sees it;
``doctor`` checks a server end to end and explains why a token does not fit;
``dev-issuer`` serves a local key set with ready tokens for demos. The network
is reached only through :class:`JWKSCache` and the get-session client.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NoReturn, TextIO
from urllib.parse import unquote

import anyio

from . import _doctor as doctor
from ._access_tokens import AccessTokenAuthenticator, bind_standalone
from ._compact import MAX_TOKEN_LENGTH, ParsedToken, parse_token
from ._cookies import DEFAULT_COOKIE_PREFIX, MAX_HEADER_BYTES, split_signed_token
from ._headers import Presented
from ._jwks import JWKSCache
from ._keys import SUPPORTED_ALGORITHMS
from ._observability import logger, token_fingerprint
from ._pasted import Pasted, classify
from ._sessions import session_expiry
from ._settings import (
    DEFAULT_LEEWAY,
    ENV_BASE_URL,
    KeySetOptions,
    ResolvedSettings,
    VerifierSettings,
    resolve_settings,
)
from ._token_cache import TokenCache
from ._user import BetterAuthUser, UserBuilder
from ._verifier import TokenVerifier
from .credentials import (
    GET_SESSION_PATH,
    SESSION_CACHE_TYP,
    AccessToken,
    Context,
    Credential,
    SessionCookie,
    SessionToken,
    _cookie_credential,
    bind_kinds,
)
from .errors import (
    BetterAuthError,
    ConfigurationError,
    InvalidSessionError,
    KeySetError,
    MalformedTokenError,
    SessionServiceError,
)

__all__ = ["EXIT_KEY_SERVER", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "build_parser", "run"]

#: The credential is valid, the key set usable, or doctor found nothing wrong.
EXIT_OK = 0
#: The credential is refused (or a doctor check failed).
EXIT_REFUSED = 1
#: Bad usage or configuration: unknown option, no server, bad URL, no token.
EXIT_USAGE = 2
#: The server is unreachable, or answers no usable key set or get-session answer.
EXIT_KEY_SERVER = 3

_PROG = "starlette-betterauth"
_EPILOG = f"""\
exit codes:
  0  ok: the credential is valid, the key set usable, doctor found no failure
  1  the credential is refused, or a doctor check failed
  2  usage or configuration error (bad option, no server given, bad URL, no token)
  3  the key server is unreachable or answers no usable key set (or, for a
     session, get-session gives no usable answer)

TOKEN is a JWT, a Better Auth session token (raw, or signed <token>.<signature>),
a session_data cookie's value, or a Cookie header (or one name=value pair) with
the better-auth.session_token and session_data cookies.
Server options default to the {ENV_BASE_URL} environment variable (Better Auth's
baseURL). Pass - as TOKEN to read it from stdin and keep it out of shell history.
Tokens are never written to logs; commands show a fingerprint (sha256:...) that
matches the one in the middleware's log lines.
"""
_MAX_STDIN = max(MAX_TOKEN_LENGTH, MAX_HEADER_BYTES) + 1024
_TOKEN_HELP = "a JWT, session token, session_data cookie or Cookie header, or - for stdin"


class _UsageError(Exception):
    """Bad command-line input; reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


# -- entry point -----------------------------------------------------------------


def run(argv: Sequence[str]) -> int:
    """Run the command line with ``argv`` (without the program name); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except _UsageError as exc:
        _err(f"error: {exc} (see --help)")
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    handler: Callable[[argparse.Namespace], int] = args.handler
    with _package_logging(args.verbose):
        try:
            return handler(args)
        except _UsageError as exc:
            return _fail(args, EXIT_USAGE, "usage", str(exc))
        except ConfigurationError as exc:
            return _fail(args, EXIT_USAGE, type(exc).__name__, exc.message)
        except KeySetError as exc:
            return _fail(args, EXIT_KEY_SERVER, type(exc).__name__, exc.message)
        except KeyboardInterrupt:
            _err("interrupted")
            return 130
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, as other tools do.
            _discard_stdout()
            return EXIT_OK


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line (subcommands and their options)."""
    from . import __version__

    parser = _Parser(
        prog=_PROG,
        description=(
            "Inspect and verify Better Auth JWTs, session tokens and session cookies, and "
            "diagnose a Better Auth server."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument(
        "-v", "--verbose", action="store_true", help="show the package's log lines on stderr"
    )

    server = _Parser(add_help=False)
    group = server.add_argument_group("server")
    group.add_argument(
        "--base-url", metavar="URL", help=f"Better Auth's baseURL (default: ${ENV_BASE_URL})"
    )
    group.add_argument(
        "--jwks-url", metavar="URL", help="the key set URL (default: BASE_URL/api/auth/jwks)"
    )
    group.add_argument("--issuer", metavar="ISS", help="the iss required (default: BASE_URL)")
    group.add_argument(
        "--audience",
        metavar="AUD",
        action="append",
        help="an accepted aud; repeatable (default: BASE_URL)",
    )
    group.add_argument("--no-verify-issuer", action="store_true", help="skip the iss check")
    group.add_argument("--no-verify-audience", action="store_true", help="skip the aud check")
    group.add_argument(
        "--algorithms",
        metavar="LIST",
        type=_algorithm_list,
        help=f"accepted algorithms, comma-separated (default: {','.join(_SORTED_ALGS)})",
    )
    group.add_argument(
        "--resource",
        metavar="URL",
        help="check an OAuth access token of Better Auth's OAuth provider for this resource "
        "(its aud; the issuer is then BASE_URL/api/auth unless --issuer)",
    )
    group.add_argument(
        "--leeway",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_LEEWAY,
        help=f"clock skew tolerated on exp, nbf, iat (default: {DEFAULT_LEEWAY:g})",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="seconds a key-set fetch or get-session call may take (default: 5)",
    )

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, parents: list[_Parser]) -> _Parser:
        sub: _Parser = commands.add_parser(
            name,
            help=help,
            description=help,
            parents=parents,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    prefix_help = "Better Auth's advanced.cookiePrefix (default: better-auth{})"
    inspect = command(
        "inspect", "say what a credential is and decode it WITHOUT verifying it", [common]
    )
    inspect.add_argument("token", metavar="TOKEN", help=_TOKEN_HELP)
    inspect.add_argument(
        "--cookie-prefix",
        metavar="PREFIX",
        help=prefix_help.format(", or the prefix of the session cookies given"),
    )
    inspect.set_defaults(handler=_cmd_inspect)

    verify = command(
        "verify", "verify a credential exactly as the middleware does", [common, server]
    )
    verify.add_argument("token", metavar="TOKEN", help=_TOKEN_HELP)
    verify.add_argument(
        "--allow-banned", action="store_true", help="accept users marked banned (as allow_banned=)"
    )
    verify.add_argument(
        "--cookie-prefix",
        metavar="PREFIX",
        help=prefix_help.format("; as SessionCookie(cookie_prefix=)"),
    )
    verify.add_argument(
        "--get-session-url",
        metavar="URL",
        help="Better Auth's get-session, for session tokens and cookies "
        f"(default: BASE_URL{GET_SESSION_PATH})",
    )
    verify.set_defaults(handler=_cmd_verify)

    jwks = command("jwks", "fetch the key set and show its keys", [common, server])
    jwks.set_defaults(handler=_cmd_jwks)

    doctor = command(
        "doctor",
        "check the server (reachability, keys, clock) and explain a token's mismatches",
        [common, server],
    )
    doctor.add_argument(
        "--token", metavar="TOKEN", help="a JWT to check against the server, or - for stdin"
    )
    doctor.set_defaults(handler=_cmd_doctor)

    dev = command(
        "dev-issuer",
        "serve a local key set and print ready tokens (for demos and tests only)",
        [common],
    )
    dev.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    dev.add_argument(
        "--alg", choices=_SORTED_ALGS, default="EdDSA", help="signing algorithm (default: EdDSA)"
    )
    dev.add_argument("--role", default="admin", help="role of the second token (default: admin)")
    dev.add_argument(
        "--expires-in",
        metavar="SECONDS",
        type=float,
        default=3600.0,
        help="token lifetime (default: 3600)",
    )
    dev.add_argument(
        "--api-url",
        metavar="URL",
        default="http://127.0.0.1:8000",
        help="the API the printed curl commands call (default: http://127.0.0.1:8000)",
    )
    dev.set_defaults(handler=_cmd_dev_issuer)
    return parser


_SORTED_ALGS = sorted(SUPPORTED_ALGORITHMS)


def _algorithm_list(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in SUPPORTED_ALGORITHMS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(_SORTED_ALGS)} (got {value!r})")
    return names


# -- output ------------------------------------------------------------------------


def _out(text: str = "") -> None:
    _write(sys.stdout, text)


def _err(text: str) -> None:
    _write(sys.stderr, text)


def _write(stream: TextIO, text: str) -> None:
    """Print ``text`` for a terminal: every line goes through :func:`doctor.clean`.

    Values from a token or a key server may hold C1 controls (U+009B starts an
    escape sequence), bidi overrides or lone surrogates; those are escaped, and a
    stream that cannot encode some character gets a backslash escape, never an
    error.
    """
    if not text.isprintable():
        text = "\n".join(doctor.clean(line) for line in text.split("\n"))
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    print(text, file=stream)


def _print_json(document: Mapping[str, Any]) -> None:
    # ASCII only: every non-ASCII character, lone surrogates and controls included,
    # is a \u escape, so any terminal or pipe takes it and any JSON parser reads it back.
    print(json.dumps(document, indent=2, ensure_ascii=True), file=sys.stdout)


def _show(value: object) -> str:
    """A claim or header value as one printable line (JSON, strings quoted)."""
    return doctor.clean(json.dumps(value, ensure_ascii=False))


def _fail(
    args: argparse.Namespace, code: int, kind: str, message: str, fix: str | None = None
) -> int:
    """Report an error that stops the command: JSON on stdout, or text on stderr."""
    if getattr(args, "json", False):
        _print_json({"ok": False, "exit_code": code, "error": _error_doc(kind, message, fix)})
    else:
        _err(f"error: {doctor.clean(message)}")
        if fix:
            _err(f"fix: {doctor.clean(fix)}")
    return code


def _error_doc(kind: str, message: str, fix: str | None) -> dict[str, Any]:
    return {"type": kind, "message": message, "fix": fix}


@contextmanager
def _package_logging(verbose: bool) -> Iterator[None]:
    """Keep the package's log lines off the terminal unless ``--verbose`` asks for them.

    The commands report everything those lines say; without a handler Python
    would print warnings a second time.
    """
    package = logger
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("log: %(levelname)s %(message)s"))
    else:
        handler = logging.NullHandler()
    previous = package.level
    package.addHandler(handler)
    if verbose:
        package.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)


# -- token input -------------------------------------------------------------------


def _read_token(value: str) -> str:
    """The token from an argument or, for ``-``, from stdin.

    A ``Bearer`` scheme is dropped, with the ``Authorization:`` header name before it.
    """
    if value == "-":
        try:
            value = sys.stdin.read(_MAX_STDIN)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise _UsageError(f"could not read a token from stdin ({type(exc).__name__})") from exc
    token = value.strip()
    name, colon, rest = token.partition(":")
    if colon and name.strip().lower() == "authorization":
        token = rest.strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        token = rest.strip()
    if not token:
        raise _UsageError("no token given: pass it as TOKEN, or - to read it from stdin")
    return token


def _try_parse(token: str) -> ParsedToken | None:
    try:
        return parse_token(token)
    except MalformedTokenError:
        return None


# -- server settings ---------------------------------------------------------------


def _settings(args: argparse.Namespace, *, identity: bool = True) -> ResolvedSettings:
    """The command line's options as the middleware's settings, resolved the same way."""
    if args.base_url is None and args.jwks_url is None and not os.environ.get(ENV_BASE_URL):
        raise _UsageError(
            "no Better Auth server given: pass --base-url URL (the server's baseURL), or "
            f"--jwks-url URL with --issuer and --audience, or set {ENV_BASE_URL}"
        )
    settings: VerifierSettings = {
        "base_url": args.base_url,
        "jwks_url": args.jwks_url,
        "issuer": args.issuer,
        "audience": args.audience,
        "verify_issuer": identity and not args.no_verify_issuer,
        "verify_audience": identity and not args.no_verify_audience,
        "algorithms": args.algorithms,
        "leeway": args.leeway,
        "key_set": KeySetOptions(timeout=args.timeout),
    }
    return resolve_settings(settings)


def _refusal_doc(error: BetterAuthError, fix: str | None) -> dict[str, Any]:
    doc = _error_doc(type(error).__name__, error.message, fix)
    doc["status"] = error.status_code
    return doc


# -- inspect -----------------------------------------------------------------------

_UNVERIFIED = "UNVERIFIED: decoded without checking the signature or any claim; do not trust it."


def _cmd_inspect(args: argparse.Namespace) -> int:
    text = _read_token(args.token)
    pasted = classify(text, cookie_prefix=args.cookie_prefix)
    if pasted.kind == "session_token":
        return _inspect_session_token(args, pasted)
    if pasted.kind == "session_cookie":
        return _inspect_session_cookie(args, pasted)
    return _inspect_jwt(args, text)


def _not_recognised(
    args: argparse.Namespace, what: str, fingerprint: str, error: BetterAuthError, fix: str | None
) -> int:
    """``inspect`` could not read the credential: say why (exit code 1)."""
    if args.json:
        _print_json(
            {
                "ok": False,
                "verified": False,
                "fingerprint": fingerprint,
                "exit_code": EXIT_REFUSED,
                "error": _refusal_doc(error, fix),
            }
        )
    else:
        _out(f"{what}: {doctor.clean(error.message)}")
        if fix:
            _out(f"fix: {doctor.clean(fix)}")
    return EXIT_REFUSED


def _inspect_jwt(args: argparse.Namespace, token: str) -> int:
    fingerprint = token_fingerprint(token)
    try:
        parsed = parse_token(token)
    except MalformedTokenError as exc:
        return _not_recognised(args, "not a JWT", fingerprint, exc, doctor.explain(exc, None, None))
    times = doctor.times(parsed.claims, time.time())
    if args.json:
        _print_json(
            {
                "ok": True,
                "verified": False,
                "kind": "jwt",
                "fingerprint": fingerprint,
                "header": parsed.header,
                "claims": parsed.claims,
                "times": times,
            }
        )
        return EXIT_OK
    _out(_UNVERIFIED)
    _out(f"fingerprint  {fingerprint}")
    _out("header")
    _print_members(parsed.header, {})
    _out("claims")
    _print_members(parsed.claims, times)
    _verify_hint(parsed.claims.get("iss"))
    return EXIT_OK


def _verify_hint(iss: object) -> None:
    if isinstance(iss, str) and iss.startswith(("http://", "https://")):
        # The URL comes from the unverified token: quoted, so pasting the line runs
        # no command of its author's; and said to be the token's own word, since a
        # forged token names a server whose keys would call it valid.
        _out()
        _out("to verify it against the server its iss names (that trusts the token's own")
        _out("word: a forged token names its forger's server; prefer your server's URL):")
        _out(f"  {_PROG} verify - --base-url {shlex.quote(doctor.clean(iss))}")


def _session_hint(what: str, kind: str) -> None:
    """How a credential only the server can check is checked."""
    _out()
    _out(f"Only the server can check {what}: it names a session in")
    _out("Better Auth's database, and only the server knows whose it is and whether")
    _out(f"it is still live. The middleware's {kind}() asks get-session; so does:")
    _out(f"  {_PROG} verify - --base-url BASE_URL")


def _print_members(members: Mapping[str, Any], times: Mapping[str, Mapping[str, Any]]) -> None:
    width = max((len(doctor.clean(k)) for k in members), default=0)
    for name, value in members.items():
        line = f"  {doctor.clean(name):<{width}}  {_show(value)}"
        when = times.get(name)
        if when is not None:
            line += f"  ({when['utc']}, {when['relative']})"
        _out(line)


def _inspect_session_token(args: argparse.Namespace, pasted: Pasted) -> int:
    token = pasted.text
    fingerprint = token_fingerprint(token)
    if pasted.token_form == "malformed":
        error = _malformed_signed_token(token)
        fix = doctor.explain_session(error, cookie=False, asked=False)
        return _not_recognised(args, "not a session token", fingerprint, error, fix)
    signed = pasted.token_form == "signed"
    raw = unquote(token).rpartition(".")[0] if signed else token
    encoded = signed and "%" in token
    if args.json:
        _print_json(
            {
                "ok": True,
                "verified": False,
                "kind": "session_token",
                "form": pasted.token_form,
                "fingerprint": fingerprint,
                "length": len(raw),
                "percent_encoded": encoded,
                "checked_by": "get-session",
            }
        )
        return EXIT_OK
    if signed:
        _out(
            "credential   a signed session token, <token>.<signature>: the form of the "
            "set-auth-token header and of the session_token cookie"
        )
    else:
        _out("credential   a raw session token: what sign-in returns as token")
    _out(f"fingerprint  {fingerprint}")
    if len(raw) == 32 and raw.isalnum():
        _out("token        32 letters and digits, as Better Auth makes them")
    else:
        _out(f"token        {len(raw)} characters (Better Auth's are 32 letters and digits)")
    if signed:
        _out("signature    HMAC-SHA256 with the server's BETTER_AUTH_SECRET (not checked here)")
    if encoded:
        _out("encoding     percent-encoded, as in a Cookie header (Better Auth decodes it)")
    _session_hint("a session token", "SessionToken")
    return EXIT_OK


def _malformed_signed_token(token: str) -> InvalidSessionError:
    return InvalidSessionError(
        "the session token is not of the form <token>.<signature>: the signature is not "
        "44 base64 characters ending in '='"
    )


def _hidden(token: object) -> object:
    """A session token (a credential) in a claim: only its fingerprint is shown."""
    return f"<session token, {token_fingerprint(token)}>" if isinstance(token, str) else token


def _redacted(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The cookie cache's claims without the session token (``sid``, ``session.token``)."""
    shown = dict(claims)
    if "sid" in shown:
        shown["sid"] = _hidden(shown["sid"])
    session = shown.get("session")
    if isinstance(session, Mapping) and "token" in session:
        shown["session"] = {**session, "token": _hidden(session["token"])}
    return shown


def _cache_summary(parsed: ParsedToken, token_value: str | None, now: float) -> dict[str, Any]:
    """What a ``session_data`` cookie says, unverified: its user, session, expiry and sid."""
    claims = parsed.claims
    session = claims.get("session")
    user = claims.get("user")
    session = session if isinstance(session, Mapping) else {}
    user = user if isinstance(user, Mapping) else {}
    expires_at = session_expiry(session.get("expiresAt"))
    sid = claims.get("sid")
    return {
        "user": {k: user.get(k) for k in ("id", "email", "name", "role", "banned")},
        "session": {
            "id": session.get("id"),
            "expires_at": expires_at,
            "expires": (
                doctor.times({"exp": int(expires_at)}, now).get("exp")
                if expires_at is not None
                else None
            ),
        },
        "sid_matches": (
            None
            if token_value is None or not isinstance(sid, str)
            else token_value.partition(".")[0] == sid
        ),
    }


def _is_session_cache(parsed: ParsedToken | None) -> bool:
    typ = parsed.header.get("typ") if parsed is not None else None
    return isinstance(typ, str) and typ.lower() == SESSION_CACHE_TYP


def _inspect_session_cookie(args: argparse.Namespace, pasted: Pasted) -> int:
    found, prefix = pasted.found, pasted.cookie_prefix
    if not found.present:
        seen = ", ".join(pasted.others) or "none"
        error = InvalidSessionError(
            f"no Better Auth session cookie ({prefix}.session_token or "
            f"{prefix}.session_data) among the cookies given (cookies: {seen})"
        )
        others = tuple(p for p in pasted.prefixes if p != prefix)
        fix = doctor.cookie_prefix_fix(others, prefix)
        return _not_recognised(
            args, "no session cookie", token_fingerprint(pasted.text), error, fix
        )
    now = time.time()
    fingerprint = token_fingerprint(_cookie_credential(found))
    parsed = pasted.parsed
    cache = _is_session_cache(parsed)
    summary = _cache_summary(parsed, found.token_value, now) if parsed and cache else None
    token_doc = None
    if found.token_value is not None:
        token_doc = {
            "name": found.token_name,
            "form": _pasted_form(found.token_value),
            "fingerprint": token_fingerprint(found.token_value),
        }
    data_doc: dict[str, Any] | None = None
    if found.data is not None:
        data_doc = {"names": list(found.data_names), "session_cache": cache}
        if parsed is not None and summary is not None:
            data_doc.update(
                header=parsed.header,
                claims=_redacted(parsed.claims),
                times=doctor.times(parsed.claims, now),
                **summary,
            )
        else:
            data_doc["fix"] = doctor.explain_session(
                MalformedTokenError("not a session cache JWT"), cookie=True, asked=False
            )
    if args.json:
        _print_json(
            {
                "ok": True,
                "verified": False,
                "kind": "session_cookie",
                "source": pasted.source,
                "fingerprint": fingerprint,
                "cookie_prefix": prefix,
                "session_token": token_doc,
                "session_data": data_doc,
                "other_cookies": list(pasted.others),
            }
        )
        return EXIT_OK
    if summary is not None:
        _out(_UNVERIFIED)
    if pasted.source == "session_data":
        _out("credential     a session_data cookie: Better Auth's session cookie cache")
    else:
        _out(f"credential     Better Auth's session cookies, cookie prefix {prefix!r}")
    if prefix != DEFAULT_COOKIE_PREFIX:
        _out(f"               (the middleware needs SessionCookie(cookie_prefix={prefix!r}))")
    _out(f"fingerprint    {fingerprint} (as the middleware logs a request with these cookies)")
    if token_doc is not None:
        form = "signed" if token_doc["form"] == "signed" else "not a signed"
        _out(
            f"session_token  {doctor.clean(str(found.token_name))}: {form} session token "
            f"({token_doc['fingerprint']}); only the server can check it (get-session)"
        )
    if data_doc is not None:
        names = ", ".join(doctor.clean(n) for n in found.data_names)
        chunks = f" ({len(found.data_names)} chunks, joined)" if len(found.data_names) > 1 else ""
        if summary is None:
            _out(f"session_data   {names}{chunks}: not a session cache JWT signed with the key set")
            _out(f"               fix: {data_doc['fix']}")
        else:
            _out(f"session_data   {names}{chunks}: the cookie cache, signed with the key set")
    if parsed is not None and summary is not None:
        _print_cache_summary(summary, parsed, found.token_value is not None, now)
    if pasted.others:
        _out(f"not read       {', '.join(doctor.clean(n) for n in pasted.others)}")
    if parsed is not None and summary is not None:
        _out("header")
        _print_members(parsed.header, {})
        _out("claims")
        _print_members(_redacted(parsed.claims), doctor.times(parsed.claims, now))
        _verify_hint(parsed.claims.get("iss"))
    else:
        _session_hint("the session_token cookie", "SessionCookie")
    return EXIT_OK


def _pasted_form(value: str) -> str | None:
    try:
        split_signed_token(value)
    except InvalidSessionError:
        return None
    return "signed"


def _print_cache_summary(
    summary: Mapping[str, Any], parsed: ParsedToken, with_token: bool, now: float
) -> None:
    user, session = summary["user"], summary["session"]
    line = f"user           {doctor.quote(user['id'])}"
    if user["email"] is not None:
        line += f" {doctor.quote(user['email'])}"
    if user["role"] is not None:
        line += f", role {doctor.quote(user['role'])}"
    if user["banned"] not in (None, False):
        line += ", BANNED"
    _out(line)
    expires = session["expires"]
    when = f", expires {expires['utc']} ({expires['relative']})" if expires else ""
    _out(f"session        {doctor.quote(session['id'])}{when}")
    exp = doctor.times(parsed.claims, now).get("exp")
    if exp is not None:
        _out(f"cache          {exp['utc']} ({exp['relative']})")
        if exp["value"] > now:
            _out("               until then SessionCookie() verifies it with the key set alone;")
            if with_token:
                _out("               then it asks get-session with the session_token cookie")
            else:
                _out("               then, without the session_token cookie, it is refused")
        elif with_token:
            _out("               SessionCookie() asks get-session with the session_token cookie")
        else:
            _out("               and without the session_token cookie the request is refused")
    matches = summary["sid_matches"]
    if matches is True:
        _out("sid            names the session_token cookie's session")
    elif matches is False:
        _out("sid            names ANOTHER session than the session_token cookie: refused")


# -- verify ------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    text = _read_token(args.token)
    if args.resource is not None:
        access: int = anyio.run(_verify_access, args, text, _access_kind(args))
        return access
    pasted = classify(text, cookie_prefix=args.cookie_prefix or DEFAULT_COOKIE_PREFIX)
    settings = _settings(args)
    verifier = TokenVerifier.from_settings(settings)
    code: int
    if pasted.kind == "jwt":
        code = anyio.run(_verify, args, text, verifier)
    else:
        url = _get_session_url(args, settings)
        code = anyio.run(_verify_session, args, pasted, settings, verifier, url)
    return code


def _access_kind(args: argparse.Namespace) -> AccessTokenAuthenticator:
    """``--resource``: the AccessToken kind, with the OAuth issuer (``--issuer``)."""
    if args.audience:
        raise _UsageError(
            "--audience names session-JWT audiences; with --resource, the token's aud must "
            "name the resource"
        )
    kind = AccessToken(
        resource=args.resource, issuer=args.issuer, dpop=False, resource_metadata=False
    )
    return bind_standalone(kind, _settings(args, identity=False))


async def _verify_access(
    args: argparse.Namespace, token: str, kind: AccessTokenAuthenticator
) -> int:
    fingerprint = token_fingerprint(token)
    verifier = kind.verifier
    assert verifier is not None
    try:
        try:
            user, _ = await kind.authenticate(token, Presented(token, None, None, None))
        except KeySetError as exc:
            server_fix = doctor.key_server_fix(exc, verifier.jwks.url)
            return _fail(args, EXIT_KEY_SERVER, type(exc).__name__, exc.message, server_fix)
        except BetterAuthError as exc:
            fix = doctor.explain(exc, _try_parse(token), verifier)
            return _refused(args, fingerprint, "access_token", exc, fix)
    finally:
        await kind.aclose()
        await kind.shared_jwks.aclose()
    claims = user.claims
    times = doctor.times(claims, time.time())
    binding = doctor.dpop_fix() if user.dpop_jkt is not None else None
    if args.json:
        _print_json(
            {
                "ok": True,
                "valid": True,
                "fingerprint": fingerprint,
                "access_token": {
                    "subject": user.id,
                    "client_id": user.client_id,
                    "machine": user.is_machine,
                    "scopes": sorted(user.scopes),
                    "dpop_jkt": user.dpop_jkt,
                },
                "claims": dict(claims),
                "times": times,
                "warning": binding,
            }
        )
        return EXIT_OK
    _out(
        f"valid: an OAuth access token for {doctor.clean(args.resource)}, issued by "
        f"{doctor.clean(kind.issuer)}"
    )
    _out(f"fingerprint  {fingerprint}")
    kind_of = "client (client_credentials)" if user.is_machine else "user"
    _out(f"{kind_of:<12} {doctor.quote(user.id)}")
    _out(f"client       {doctor.quote(user.client_id)}")
    _out(f"scopes       {', '.join(doctor.clean(s) for s in sorted(user.scopes)) or '(none)'}")
    for name, when in times.items():
        _out(f"{name:<12} {when['utc']} ({when['relative']})")
    if binding is not None:
        _out(f"DPoP-bound   {doctor.quote(user.dpop_jkt)}: {binding}")
    return EXIT_OK


def _get_session_url(args: argparse.Namespace, settings: ResolvedSettings) -> str:
    if args.get_session_url is not None:
        return str(args.get_session_url)
    if settings.base_url is None:
        raise _UsageError(
            "a session is checked with Better Auth's get-session: pass --base-url URL (the "
            "server's baseURL), or --get-session-url URL"
        )
    return settings.base_url + GET_SESSION_PATH


def _refused(
    args: argparse.Namespace,
    fingerprint: str,
    kind: str,
    error: BetterAuthError,
    fix: str | None,
) -> int:
    """The credential is refused: the reason and the fix (exit code 1)."""
    if args.json:
        _print_json(
            {
                "ok": False,
                "valid": False,
                "kind": kind,
                "fingerprint": fingerprint,
                "exit_code": EXIT_REFUSED,
                "error": _refusal_doc(error, fix),
            }
        )
    else:
        _out(
            f"refused: {doctor.clean(error.message)} "
            f"({type(error).__name__}, HTTP {error.status_code})"
        )
        if fix:
            _out(f"fix: {doctor.clean(fix)}")
    return EXIT_REFUSED


async def _verify(args: argparse.Namespace, token: str, verifier: TokenVerifier) -> int:
    fingerprint = token_fingerprint(token)
    try:
        try:
            verified = await verifier.verify_token(token)
            user, _ = UserBuilder(allow_banned=args.allow_banned).build(verified.claims)
        except KeySetError as exc:
            return _fail(
                args,
                EXIT_KEY_SERVER,
                type(exc).__name__,
                exc.message,
                doctor.key_server_fix(exc, verifier.jwks.url),
            )
        except BetterAuthError as exc:
            fix = doctor.explain(exc, _try_parse(token), verifier)
            return _refused(args, fingerprint, "jwt", exc, fix)
    finally:
        await verifier.jwks.aclose()
    times = doctor.times(verified.claims, time.time())
    if args.json:
        _print_json(
            {
                "ok": True,
                "valid": True,
                "kind": "jwt",
                "fingerprint": fingerprint,
                "kid": verified.kid,
                "alg": verified.alg,
                "user": _user_doc(user),
                "header": dict(verified.header),
                "claims": dict(verified.claims),
                "times": times,
            }
        )
        return EXIT_OK
    _out(
        f"valid: signature verified with {verified.alg} key {doctor.quote(verified.kid)}, "
        f"{_identity_summary(verifier)}"
    )
    _out(f"fingerprint  {fingerprint}")
    _print_user(user)
    for name, when in times.items():
        _out(f"{name:<12} {when['utc']} ({when['relative']})")
    return EXIT_OK


def _user_doc(user: BetterAuthUser) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "roles": sorted(user.roles)}


def _print_user(user: BetterAuthUser) -> None:
    _out(
        f"user         {doctor.quote(user.id)}"
        + (f" {doctor.quote(user.email)}" if user.email else "")
    )
    _out(f"roles        {', '.join(doctor.clean(r) for r in sorted(user.roles)) or '(none)'}")


def _identity_summary(verifier: TokenVerifier) -> str:
    checked = [
        name
        for name, rule in (("iss", verifier.rules.issuer), ("aud", verifier.rules.audiences))
        if rule is not None
    ]
    if not checked:
        return "iss and aud not checked"
    return " and ".join(checked) + (" match" if len(checked) == 2 else " matches")


async def _verify_session(
    args: argparse.Namespace,
    pasted: Pasted,
    settings: ResolvedSettings,
    verifier: TokenVerifier,
    url: str,
) -> int:
    """Verify a session token or session cookies with the middleware's own credential kind."""
    lookups: list[dict[str, Any]] = []

    def on_event(name: str, data: Mapping[str, Any]) -> None:
        if name == "session_lookup":
            lookups.append(dict(data))

    cookie = pasted.kind == "session_cookie"
    kind: Credential
    if cookie:
        # trusted_origins only matters to the middleware's cross-site check.
        kind = SessionCookie(
            cookie_prefix=pasted.cookie_prefix,
            trusted_origins=[url],
            get_session_url=url,
            timeout=args.timeout,
        )
        presented = Presented(bearer=None, cookie=pasted.text, origin=None, referer=None)
    else:
        kind = SessionToken(get_session_url=url, timeout=args.timeout)
        presented = Presented(bearer=pasted.text, cookie=None, origin=None, referer=None)
    context = Context(
        settings=settings,
        verifier=verifier,
        users=UserBuilder(allow_banned=args.allow_banned),
        cache=TokenCache(
            max_entries=0,
            ttl=0.0,
            leeway=verifier.rules.leeway,
            key_set=verifier.jwks,
        ),
        http_client=None,
        on_event=on_event,
    )
    authenticator = bind_kinds([kind], context)[0]
    name = authenticator.kind
    credential = authenticator.find(presented)
    fingerprint = token_fingerprint(credential if credential is not None else pasted.text)
    try:
        if credential is None:
            prefix = pasted.cookie_prefix
            error = InvalidSessionError(
                f"no Better Auth session cookie ({prefix}.session_token or "
                f"{prefix}.session_data) among the cookies given: the middleware sees none"
            )
            others = tuple(p for p in pasted.prefixes if p != prefix)
            fix: str | None = doctor.cookie_prefix_fix(others, prefix)
            return _refused(args, fingerprint, name, error, fix)
        if pasted.token_form == "malformed":
            error = _malformed_signed_token(pasted.text)
            fix = doctor.explain_session(error, cookie=False, asked=False)
            return _refused(args, fingerprint, name, error, fix)
        try:
            user, _ = await authenticator.authenticate(credential, presented)
        except KeySetError as exc:
            fix = doctor.key_server_fix(exc, verifier.jwks.url)
            return _fail(args, EXIT_KEY_SERVER, type(exc).__name__, exc.message, fix)
        except SessionServiceError as exc:
            fix = doctor.session_server_fix(url)
            return _fail(args, EXIT_KEY_SERVER, type(exc).__name__, exc.message, fix)
        except BetterAuthError as exc:
            fix = doctor.explain_session(
                exc, cookie=cookie, asked=bool(lookups), parsed=pasted.parsed, verifier=verifier
            )
            return _refused(args, fingerprint, name, exc, fix)
    finally:
        await authenticator.aclose()
        await verifier.jwks.aclose()
    lookup = lookups[-1] if lookups else None
    return _session_valid(args, verifier, pasted, user, fingerprint, url, lookup)


def _cache_identity(verifier: TokenVerifier) -> str:
    """What the session-cache rules checked besides the signature."""
    if verifier.rules.issuer is None:
        return "typ and aud match, iss not checked"
    return "typ, aud and iss match"


def _session_valid(
    args: argparse.Namespace,
    verifier: TokenVerifier,
    pasted: Pasted,
    user: BetterAuthUser,
    fingerprint: str,
    url: str,
    lookup: Mapping[str, Any] | None,
) -> int:
    now = time.time()
    cookie = pasted.kind == "session_cookie"
    local = lookup is None
    # Verified locally: the cookie's header and times are the verified ones.
    parsed = pasted.parsed if local else None
    expires = (
        doctor.times({"exp": int(user.expires_at)}, now).get("exp")
        if user.expires_at is not None
        else None
    )
    cache_times = doctor.times(parsed.claims, now) if parsed is not None else {}
    if args.json:
        document: dict[str, Any] = {
            "ok": True,
            "valid": True,
            "kind": user.kind,
            "checked_with": "key set" if local else "get-session",
            "fingerprint": fingerprint,
            "get_session_url": None if local else url,
            "user": _user_doc(user),
            "session": {"id": user.session_id, "expires_at": user.expires_at, "expires": expires},
            "claims": dict(user.claims),
        }
        if parsed is not None:
            document.update(
                kid=parsed.header.get("kid"), alg=parsed.header.get("alg"), times=cache_times
            )
        _print_json(document)
        return EXIT_OK
    if parsed is not None:
        _out(
            f"valid: session_data cookie verified with {parsed.header.get('alg')} key "
            f"{doctor.quote(parsed.header.get('kid'))}, {_cache_identity(verifier)}"
        )
        _out("       as SessionCookie() does: with the key set alone, no get-session call")
    else:
        if cookie:
            what = "the session_token cookie, as SessionCookie() asks it"
        else:
            what = "this session token, as SessionToken() asks it"
        _out(f"valid: get-session answered for {what}")
        expired = "the session_data cookie has expired; " if cookie and pasted.found.data else ""
        _out(f"       ({expired}{doctor.clean(url)})")
    _out(f"fingerprint  {fingerprint}")
    _print_user(user)
    when = f", expires {expires['utc']} ({expires['relative']})" if expires else ""
    _out(f"session      {doctor.quote(user.session_id)}{when}")
    cache_exp = cache_times.get("exp")
    if cache_exp is not None:
        _out(f"cache exp    {cache_exp['utc']} ({cache_exp['relative']})")
    return EXIT_OK


# -- jwks --------------------------------------------------------------------------


def _cmd_jwks(args: argparse.Namespace) -> int:
    cache = TokenVerifier.from_settings(_settings(args, identity=False)).jwks
    code: int = anyio.run(_jwks, args, cache)
    return code


async def _jwks(args: argparse.Namespace, cache: JWKSCache) -> int:
    try:
        await cache.refresh()
    except KeySetError as exc:
        return _fail(
            args,
            EXIT_KEY_SERVER,
            type(exc).__name__,
            exc.message,
            doctor.key_server_fix(exc, cache.url),
        )
    finally:
        await cache.aclose()
    status = cache.status()
    keys = [
        {
            "kid": k.kid,
            "kty": k.kty,
            "crv": k.crv,
            "alg": next(iter(k.algorithms)) if len(k.algorithms) == 1 else None,
            "algorithms": sorted(k.algorithms),
        }
        for k in cache.keys.values()
    ]
    skipped = [{"key": label, "reason": reason} for label, reason in status.skipped]
    if args.json:
        _print_json(
            {
                "ok": True,
                "url": cache.url,
                "fetched_at": status.last_fetch_at,
                "duration": status.last_fetch_duration,
                "server_clock_offset": status.server_clock_offset,
                "keys": keys,
                "skipped": skipped,
            }
        )
        return EXIT_OK
    _out(f"key set  {doctor.clean(cache.url)}")
    _out(f"fetched  {_fetch_summary(cache)}")
    _out()
    rows = [("KID", "KTY", "CRV", "ALG")]
    rows += [
        (
            doctor.clean(k.kid),
            doctor.clean(k.kty),
            doctor.clean(k.crv or "-"),
            ",".join(sorted(k.algorithms)),
        )
        for k in cache.keys.values()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for label, reason in status.skipped:
        _out(f"skipped  {doctor.clean(label)}: {doctor.clean(reason)}")
    return EXIT_OK


def _fetch_summary(cache: JWKSCache) -> str:
    status = cache.status()
    when = doctor.utc(status.last_fetch_at) if status.last_fetch_at is not None else "never"
    took = (
        f" in {status.last_fetch_duration * 1000:.0f} ms"
        if status.last_fetch_duration is not None
        else ""
    )
    return when + took


# -- doctor ------------------------------------------------------------------------


def _cmd_doctor(args: argparse.Namespace) -> int:
    token = _read_token(args.token) if args.token is not None else None
    kind = _access_kind(args) if args.resource is not None else None
    if kind is not None and kind.verifier is not None:
        verifier = kind.verifier
        settings = replace(
            _settings(args, identity=False), issuer=kind.issuer, audiences=kind.audiences
        )
    else:
        settings = _settings(args)
        verifier = TokenVerifier.from_settings(settings)
    code: int = anyio.run(_doctor, args, settings, verifier, token, kind)
    return code


async def _doctor(
    args: argparse.Namespace,
    settings: ResolvedSettings,
    verifier: TokenVerifier,
    token: str | None,
    kind: AccessTokenAuthenticator | None,
) -> int:
    cache = verifier.jwks
    checks: list[doctor.Check] = []
    try:
        server_ok = await doctor.check_server(cache, verifier, checks)
        if token is not None and kind is not None:
            await doctor.check_access_token(token, kind, server_ok, checks)
        elif token is not None:
            await doctor.check_token(token, verifier, server_ok, checks)
    finally:
        await cache.aclose()
        if kind is not None:
            await kind.aclose()
    if not server_ok:
        code = EXIT_KEY_SERVER
    elif any(c.status == "fail" for c in checks):
        code = EXIT_REFUSED
    else:
        code = EXIT_OK
    if args.json:
        _print_json(
            {
                "ok": code == EXIT_OK,
                "exit_code": code,
                "jwks_url": settings.jwks_url,
                "issuer": settings.issuer,
                "audience": sorted(settings.audiences) if settings.audiences is not None else None,
                "fingerprint": token_fingerprint(token) if token is not None else None,
                "checks": [
                    {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix}
                    for c in checks
                ],
            }
        )
        return code
    audience = (
        ", ".join(sorted(settings.audiences)) if settings.audiences is not None else "(not checked)"
    )
    _out(f"key set   {doctor.clean(settings.jwks_url)}")
    _out(f"issuer    {doctor.clean(settings.issuer or '(not checked)')}")
    _out(f"audience  {doctor.clean(audience)}")
    if token is not None:
        _out(f"token     {token_fingerprint(token)}")
    _out()
    labels = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]", "skip": "[skip]"}
    for check in checks:
        _out(f"{labels[check.status]} {check.name}: {doctor.clean(check.detail)}")
        if check.fix:
            _out(f"       fix: {doctor.clean(check.fix)}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    _out()
    if failed:
        _out(f"{failed} check(s) failed" + (f", {warned} warning(s)" if warned else "") + ".")
    else:
        _out("all checks passed" + (f", {warned} warning(s)" if warned else "") + ".")
    return code


# -- dev-issuer --------------------------------------------------------------------


def _cmd_dev_issuer(args: argparse.Namespace) -> int:
    from .testing import Issuer, JWKSServer

    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if not 0 < args.expires_in <= 366 * 86400:
        raise _UsageError("--expires-in must be a number of seconds above 0 (at most a year)")
    if not args.role or "," in args.role:
        raise _UsageError("--role must be one non-empty role name")
    issuer = Issuer(alg=args.alg)
    server = JWKSServer(issuer, port=args.port)
    try:
        server.start()
    except OSError as exc:
        raise _UsageError(
            f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc})"
        ) from exc
    try:
        _announce(args, issuer, server.url, server.jwks_url)
        _serve_until_signal()
    finally:
        server.stop()
    return EXIT_OK


def _announce(args: argparse.Namespace, issuer: Any, url: str, jwks_url: str) -> None:
    lifetime = float(args.expires_in)
    user_token = issuer.token(
        email="demo@example.com", name="Demo User", role="user", expires_in=lifetime
    )
    admin_token = issuer.token(
        email="admin@example.com", name="Demo Admin", role=args.role, expires_in=lifetime
    )
    expires_at = time.time() + lifetime
    api = args.api_url.rstrip("/")
    curls = [
        f"curl -i {api}/public",
        f"curl -i {api}/me",
        f'curl -i {api}/me -H "Authorization: Bearer $USER_TOKEN"',
        f'curl -i {api}/admin -H "Authorization: Bearer $USER_TOKEN"',
        f'curl -i {api}/admin -H "Authorization: Bearer $ADMIN_TOKEN"',
    ]
    if args.json:
        document = {
            "base_url": url,
            "jwks_url": jwks_url,
            "alg": issuer.current_key.alg,
            "kid": issuer.current_key.kid,
            "expires_at": int(expires_at),
            "user_token": user_token,
            "admin_token": admin_token,
            "admin_role": args.role,
            "api_url": api,
            "curl": curls,
        }
        print(json.dumps(document), file=sys.stdout, flush=True)
        return
    notes = [
        "# 200: public route",
        "# 401: no token",
        "# 200: the demo user",
        "# 403: the demo user is not admin",
        f"# 200: role {args.role}",
    ]
    width = max(len(curl) for curl in curls)
    lines = [
        "starlette-betterauth dev issuer: a local stand-in for a Better Auth server's keys.",
        "For demos and tests only: anyone can mint tokens it accepts.",
        "",
        f"  base URL  {url}",
        f"  key set   {jwks_url}",
        f"  signing   {issuer.current_key.alg}, kid {issuer.current_key.kid}",
        f"  tokens    valid until {doctor.utc(expires_at)} ({doctor.span(lifetime)})",
        "",
        "Point your API at it:",
        f"  export {ENV_BASE_URL}={url}",
        "",
        "Tokens (a demo user, and one with role " + repr(args.role) + "):",
        f"  export USER_TOKEN={user_token}",
        f"  export ADMIN_TOKEN={admin_token}",
        "",
        "Then try:",
        *(f"  {curl:<{width}}  {note}" for curl, note in zip(curls, notes, strict=True)),
        "",
        "Serving the key set until Ctrl-C.",
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)


def _serve_until_signal() -> None:
    """Block until SIGINT or SIGTERM; either ends the command with exit code 0."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped.", file=sys.stderr, flush=True)
