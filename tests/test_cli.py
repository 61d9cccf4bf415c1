"""The command line, run in-process through ``main`` against real loopback key servers.

Two commands also run as real subprocesses: ``--help`` and ``dev-issuer`` (stopped
by signal, by PID).
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import unquote

import anyio
import jwt
import pytest
from _helpers import RunCLI, asgi_client, guarded_app, ok
from starlette.routing import Route

from starlette_betterauth._cookies import encode_cookie_value
from starlette_betterauth.credentials import SessionCookie
from starlette_betterauth.middleware import token_fingerprint
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey, TestSession, b64url


def stopped_server_url() -> str:
    """The URL of a loopback port that was just closed: nothing listens there."""
    gone = JWKSServer().start()
    gone.stop()
    return gone.url


@contextmanager
def skewed_key_server(issuer: Issuer, offset: float) -> Iterator[str]:
    """A real loopback key server whose Date header is ``offset`` seconds off."""
    body = json.dumps(issuer.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            return formatdate(time.time() + offset, usegmt=True)

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# -- usage -----------------------------------------------------------------------------


def test_help_lists_commands_and_exit_codes(cli: RunCLI) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("inspect", "verify", "jwks", "doctor", "dev-issuer"):
        assert command in out
    assert "exit codes:" in out
    assert "3  the key server is unreachable" in out


def test_version(cli: RunCLI) -> None:
    from starlette_betterauth import __version__

    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == f"starlette-betterauth {__version__}"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "required: COMMAND"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("verify",), "required: TOKEN"),
        (("verify", "x", "--algorithms", "HS256"), "choose from ES256"),
        (("verify", "x", "--leeway", "soon"), "invalid float value"),
        (("inspect", "x", "--nope"), "unrecognized arguments: --nope"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    cli: RunCLI, args: tuple[str, ...], fragment: str
) -> None:
    code, out, err = cli(*args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert fragment in err


def test_no_server_configured_is_exit_2(cli: RunCLI, issuer: Issuer) -> None:
    code, _, err = cli("verify", issuer.token())
    assert code == 2
    assert err.strip() == (
        "error: no Better Auth server given: pass --base-url URL (the server's baseURL), or "
        "--jwks-url URL with --issuer and --audience, or set BETTER_AUTH_URL"
    )


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://auth.example.com", "must be an http(s) URL"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://xn--", "not a valid URL"),
    ],
)
def test_bad_base_url_is_exit_2(cli: RunCLI, issuer: Issuer, url: str, fragment: str) -> None:
    code, _, err = cli("verify", issuer.token(), "--base-url", url)
    assert code == 2
    assert err.count("\n") == 1
    assert fragment in err


def test_bad_settings_are_exit_2(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    code, _, err = cli("verify", issuer.token(), "--base-url", server.url, "--leeway", "-1")
    assert (code, err.strip()) == (2, "error: leeway must be a number of seconds >= 0")
    code, _, err = cli("jwks", "--base-url", server.url, "--timeout", "0")
    assert (code, err.strip()) == (2, "error: timeout must be a positive number of seconds")
    assert server.requests == 0


@pytest.mark.parametrize(
    "junk",
    ["", "   ", "a.b.c.d", "\x1b[31mred", "é.é.é", "x" * 20_000, "Bearer ", "..", "e30.e30."],
)
def test_junk_input_never_gives_a_traceback(
    cli: RunCLI, server: JWKSServer, junk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for args in (("inspect", junk), ("verify", junk, "--base-url", server.url)):
        code, out, err = cli(*args)
        assert code in (1, 2)
        assert "\x1b" not in out + err
        monkeypatch.setattr("sys.stdin", io.StringIO(junk))
        code, out, err = cli(args[0], "-", *args[2:])
        assert code in (1, 2)


# -- inspect ---------------------------------------------------------------------------


def test_inspect_shows_everything_unverified(cli: RunCLI, issuer: Issuer) -> None:
    token = issuer.token(user_id="u-1", role="user,admin")
    code, out, _ = cli("inspect", token)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("UNVERIFIED: decoded without checking the signature")
    assert f"fingerprint  {token_fingerprint(token)}" in lines
    assert f'  kid  "{issuer.current_key.kid}"' in lines
    assert '  role           "user,admin"' in lines
    exp_line = next(line for line in lines if line.startswith("  exp "))
    assert " UTC, expires in 15 min)" in exp_line
    iat_line = next(line for line in lines if line.startswith("  iat "))
    assert "issued 0 s ago" in iat_line or "issued 1 s ago" in iat_line
    assert f"  starlette-betterauth verify - --base-url {issuer.base_url}" in lines
    assert token not in out


def test_inspect_reads_stdin_and_drops_bearer(
    cli: RunCLI, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issuer.expired_token(user_id="u-2")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"Bearer {token}\n"))
    code, out, _ = cli("inspect", "-")
    assert code == 0
    assert '"u-2"' in out
    assert "expired 60 min ago" in out


def test_inspect_json(cli: RunCLI, issuer: Issuer) -> None:
    token = issuer.token(user_id="u-3", nbf=int(time.time()) + 600)
    code, out, _ = cli("inspect", "--json", token)
    assert code == 0
    document = json.loads(out)
    assert document["verified"] is False
    assert document["header"] == {"alg": "EdDSA", "kid": issuer.current_key.kid}
    assert document["claims"]["sub"] == "u-3"
    assert document["fingerprint"] == token_fingerprint(token)
    assert document["times"]["exp"]["relative"] == "expires in 15 min"
    assert document["times"]["nbf"]["relative"] == "not valid for another 10 min"
    assert document["times"]["exp"]["utc"].endswith(" UTC")


def test_inspect_escapes_control_characters_from_the_token(cli: RunCLI, issuer: Issuer) -> None:
    claims = issuer.claims(name="evil\x1b]0;pwned\x07\u009b")
    claims["\x1bkey"] = 1
    token = issuer.current_key.sign(claims)
    code, out, _ = cli("inspect", token)
    assert code == 0
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\u009b" not in out
    assert "\\u001b" in out


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("abc", "3 dot-separated segments"),
        ("abc.def", "this looks like a Better Auth session token, not a JWT"),
        (f"{b64url('[]')}.{b64url('{}')}.c2ln", "the header is not a JSON object"),
    ],
)
def test_inspect_refuses_what_is_not_a_jwt(cli: RunCLI, token: str, reason: str) -> None:
    code, out, _ = cli("inspect", token)
    assert code == 1
    assert out.startswith("not a JWT: ")
    assert reason in out
    code, out, _ = cli("inspect", "--json", token)
    assert code == 1
    assert reason in json.loads(out)["error"]["message"]


def test_empty_stdin_is_exit_2(cli: RunCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, _, err = cli("inspect", "-")
    assert code == 2
    assert err.strip() == "error: no token given: pass it as TOKEN, or - to read it from stdin"


# -- verify ----------------------------------------------------------------------------


def test_verify_valid_token(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    token = issuer.token(user_id="u-4", email="a@example.com", role="user,admin")
    code, out, err = cli("verify", token, "--base-url", server.url)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == (
        f"valid: signature verified with EdDSA key '{issuer.current_key.kid}', iss and aud match"
    )
    assert "user         'u-4' 'a@example.com'" in lines
    assert "roles        admin, user" in lines
    assert any(line.startswith("exp          ") and "expires in 15 min" in line for line in lines)
    assert server.requests == 1


def test_verify_from_environment_and_stdin(
    cli: RunCLI, server: JWKSServer, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BETTER_AUTH_URL", server.url)
    monkeypatch.setattr("sys.stdin", io.StringIO(issuer.token() + "\n"))
    code, out, _ = cli("verify", "-")
    assert code == 0
    assert out.startswith("valid: ")


def test_verify_json(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    token = issuer.token(user_id="u-5", role="editor")
    code, out, _ = cli("verify", "--json", token, "--base-url", server.url)
    assert code == 0
    document = json.loads(out)
    assert document["valid"] is True
    assert document["user"] == {"id": "u-5", "email": "user@example.com", "roles": ["editor"]}
    assert document["kid"] == issuer.current_key.kid
    assert document["claims"]["iss"] == server.url


def test_verify_custom_jwks_url_issuer_and_audiences(cli: RunCLI, issuer: Issuer) -> None:
    with JWKSServer(issuer, path="/auth/keys") as server:
        token = issuer.token(iss="https://id.example.com", aud=["api-1", "api-2"])
        code, out, _ = cli(
            "verify",
            token,
            "--jwks-url",
            server.url + "/auth/keys",
            "--issuer",
            "https://id.example.com",
            "--audience",
            "api-0",
            "--audience",
            "api-2",
        )
        assert code == 0, out
        code, out, _ = cli(
            "verify", token, "--jwks-url", server.url + "/auth/keys", "--no-verify-issuer",
            "--no-verify-audience",
        )  # fmt: skip
        assert code == 0
        assert "iss and aud not checked" in out


def test_verify_issuer_mismatch_names_both_sides_and_the_fix(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    token = issuer.token(iss=server.url + "/")
    code, out, _ = cli("verify", token, "--base-url", server.url)
    assert code == 1
    refused, fix = out.splitlines()
    assert refused == (
        f"refused: iss is '{server.url}/' but the expected issuer is '{server.url}' "
        "(InvalidIssuerError, HTTP 401)"
    )
    assert fix == (
        f"fix: set issuer='{server.url}/' (--issuer) if that is the server you trust, or fix "
        f"jwt.issuer (or baseURL) on the server so it signs '{server.url}' "
        "(they differ only by a trailing slash)"
    )
    code, out, _ = cli("verify", token, "--base-url", server.url, "--issuer", server.url + "/")
    assert code == 0, out


def test_verify_empty_issuer_points_at_the_servers_base_url(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    code, out, _ = cli("verify", issuer.token(iss=""), "--base-url", server.url)
    assert code == 1
    assert "signed with an empty iss" in out
    assert "set baseURL (or BETTER_AUTH_URL) on the server" in out


def other_key_token(issuer: Issuer) -> str:
    return issuer.token(key=SigningKey("EdDSA"))


def forged_alg_token(issuer: Issuer) -> str:
    header = b64url({"alg": "ES256", "kid": issuer.current_key.kid})
    body = issuer.token().split(".")[1]
    return f"{header}.{body}.{b64url(b'x' * 64)}"


def tampered_token(issuer: Issuer) -> str:
    header, _, signature = issuer.token(role="user").split(".")
    return f"{header}.{issuer.token(role='admin').split('.')[1]}.{signature}"


@pytest.mark.parametrize(
    ("make", "extra", "message", "fix"),
    [
        (
            lambda i: i.token(aud="https://other.example"),
            (),
            "aud is 'https://other.example' but the accepted audience is",
            "set audience='https://other.example' (--audience) if this API should accept it, "
            "or set jwt.audience on the Better Auth server to",
        ),
        (
            lambda i: i.token(aud=None),
            (),
            "aud is None but the accepted audience is",
            "the token has no aud",
        ),
        (
            lambda i: i.expired_token(),
            (),
            "the token has expired (ExpiredTokenError, HTTP 401)",
            "get a fresh token (GET /api/auth/token)",
        ),
        (
            lambda i: i.token(issued_at=time.time() + 3600),
            (),
            "the token was issued in the future (check the clocks) (ImmatureTokenError",
            "sync both with NTP, or raise the leeway (--leeway, leeway=; now 10 s)",
        ),
        (
            other_key_token,
            (),
            "no key in the key set has the token's kid (UnknownKeyError, HTTP 401)",
            "signed by another Better Auth server (check --base-url / --jwks-url)",
        ),
        (
            tampered_token,
            (),
            "the token's signature does not verify (InvalidSignatureError, HTTP 401)",
            "changed after signing",
        ),
        (
            forged_alg_token,
            (),
            "is not the algorithm of key",
            "the token was altered or forged",
        ),
        (
            lambda i: i.token(),
            ("--algorithms", "ES256,RS256"),
            "the token's alg 'EdDSA' is not accepted (accepted: ES256, RS256)",
            "add EdDSA to the accepted algorithms (--algorithms, algorithms=)",
        ),
        (
            lambda i: i.token(header={"alg": "HS256"}),
            (),
            "the token's alg 'HS256' is not accepted",
            "'HS256' is never accepted: Better Auth's jwt plugin signs with an asymmetric key",
        ),
        (
            lambda i: i.token(sub=None),
            (),
            "the sub claim is missing or not a non-empty string (InvalidClaimError",
            "keep them (exp, nbf and iat as numbers)",
        ),
        (
            lambda i: i.token(banned=True),
            (),
            "this user is banned (BannedUserError, HTTP 403)",
            "unless allow_banned=True (--allow-banned)",
        ),
        (
            lambda i: "7E3wGHXlmP2MgwRF3DRQMxU0QVChzZTX.92gDPwEDUminkEKqyytvp6KpE6Ct",
            (),
            "the session token is not of the form <token>.<signature>: the signature is not "
            "44 base64 characters ending in '=' (InvalidSessionError, HTTP 401)",
            "copy the whole signed token (the set-auth-token header, or the session_token",
        ),
        (
            lambda i: "abc.def",
            (),
            "this looks like a Better Auth session token, not a JWT: send the JWT from "
            "/api/auth/token",
            None,
        ),
        (
            lambda i: i.token() + "=",
            (),
            "the signature segment is padded",
            "copy the whole JWT",
        ),
    ],
)
def test_verify_refusals_give_the_reason_and_the_fix(
    cli: RunCLI,
    server: JWKSServer,
    issuer: Issuer,
    make: Callable[[Issuer], str],
    extra: tuple[str, ...],
    message: str,
    fix: str | None,
) -> None:
    token = make(issuer)
    code, out, _ = cli("verify", token, "--base-url", server.url, *extra)
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].startswith("refused: ")
    assert message in lines[0]
    if fix is None:
        assert len(lines) == 1
    else:
        assert lines[1].startswith("fix: ")
        assert fix in lines[1]
    code, out, _ = cli("verify", "--json", token, "--base-url", server.url, *extra)
    document = json.loads(out)
    assert (code, document["valid"], document["exit_code"]) == (1, False, 1)
    assert message.split(" (")[0] in document["error"]["message"]
    assert document["error"]["fix"] == (None if fix is None else lines[1][len("fix: ") :])


def test_verify_allow_banned(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    code, _, _ = cli(
        "verify", issuer.token(banned=True), "--base-url", server.url, "--allow-banned"
    )
    assert code == 0


def test_verify_key_server_unreachable_is_exit_3(cli: RunCLI, issuer: Issuer) -> None:
    url = stopped_server_url()
    code, out, err = cli("verify", issuer.token(), "--base-url", url)
    assert code == 3
    assert out == ""
    error, fix = err.splitlines()
    assert error == "error: the key server could not be reached (ConnectError)"
    assert fix.startswith("fix: check that the Better Auth server is running")
    assert f"{url}/api/auth/jwks is its key set" in fix


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, None, "error: the key server answered HTTP 500"),
        (200, b"<html>login</html>", "error: the key set is not valid JSON"),
        (200, b'{"keys": []}', "error: the key set has no usable key (its keys list is empty)"),
    ],
)
def test_verify_key_server_errors_are_exit_3(
    cli: RunCLI,
    server: JWKSServer,
    issuer: Issuer,
    status: int,
    body: bytes | None,
    message: str,
) -> None:
    server.status, server.body = status, body
    code, _, err = cli("verify", issuer.token(), "--base-url", server.url)
    assert code == 3
    assert err.splitlines()[0] == message
    code, out, _ = cli("verify", "--json", issuer.token(), "--base-url", server.url)
    document = json.loads(out)
    assert (code, document["exit_code"]) == (3, 3)
    assert document["error"]["message"] == message[len("error: ") :]
    assert document["error"]["fix"]


# -- session tokens and session cookies ------------------------------------------------


def cookie_header(cookies: dict[str, str]) -> str:
    """A Cookie header value carrying ``cookies``, as a browser sends them."""
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def assert_no_secret(text: str, *secrets: str) -> None:
    """No session token (raw or signed, encoded or not) and no cookie value in ``text``."""
    for secret in secrets:
        assert secret not in text
        assert unquote(secret) not in text


def session_secrets(session: TestSession, *cookies: dict[str, str]) -> list[str]:
    return [
        session.token,
        session.signed_token,
        *(value for jar in cookies for value in jar.values()),
    ]


@pytest.mark.parametrize("form", ["raw", "signed", "encoded"])
def test_inspect_session_token(cli: RunCLI, issuer: Issuer, form: str) -> None:
    session = issuer.session()
    token = {
        "raw": session.token,
        "signed": session.signed_token,
        "encoded": encode_cookie_value(session.signed_token),
    }[form]
    code, out, _ = cli("inspect", token)
    assert code == 0
    lines = out.splitlines()
    described = "a raw session token" if form == "raw" else "a signed session token"
    assert lines[0].startswith(f"credential   {described}")
    assert f"fingerprint  {token_fingerprint(token)}" in lines
    assert "token        32 letters and digits, as Better Auth makes them" in lines
    assert ("encoding     percent-encoded" in out) is (form == "encoded")
    assert "Only the server can check a session token" in out
    assert "  starlette-betterauth verify - --base-url BASE_URL" in lines
    assert_no_secret(out, *session_secrets(session))
    code, out, _ = cli("inspect", "--json", token)
    assert code == 0
    document = json.loads(out)
    assert document == {
        "ok": True,
        "verified": False,
        "kind": "session_token",
        "form": "raw" if form == "raw" else "signed",
        "fingerprint": token_fingerprint(token),
        "length": 32,
        "percent_encoded": form == "encoded",
        "checked_by": "get-session",
    }


def test_inspect_malformed_signed_session_token(cli: RunCLI, issuer: Issuer) -> None:
    token = issuer.session().signed_token[:-5]
    code, out, _ = cli("inspect", token)
    assert code == 1
    refused, fix = out.splitlines()
    assert refused == (
        "not a session token: the session token is not of the form <token>.<signature>: the "
        "signature is not 44 base64 characters ending in '='"
    )
    assert fix.startswith("fix: copy the whole signed token")
    code, out, _ = cli("inspect", "--json", token)
    document = json.loads(out)
    assert (code, document["error"]["type"]) == (1, "InvalidSessionError")
    assert document["fingerprint"] == token_fingerprint(token)


def test_inspect_session_data_cookie(cli: RunCLI, issuer: Issuer, server: JWKSServer) -> None:
    session = issuer.session(email="ada@example.com", role="user,admin")
    cookies = issuer.session_data_cookie(session)
    (value,) = cookies.values()
    code, out, _ = cli("inspect", value)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("UNVERIFIED: ")
    assert lines[1] == "credential     a session_data cookie: Better Auth's session cookie cache"
    assert f"user           '{session.user_id}' 'ada@example.com', role 'user,admin'" in lines
    session_line = next(line for line in lines if line.startswith("session        "))
    assert f"'{session.id}', expires " in session_line
    assert session_line.endswith("(expires in 7 days)")
    cache = lines.index(next(line for line in lines if line.startswith("cache          ")))
    assert lines[cache].endswith("(expires in 5 min)")
    assert "then, without the session_token cookie, it is refused" in lines[cache + 2]
    hidden = f"<session token, {token_fingerprint(session.token)}>"
    assert f'  sid        "{hidden}"' in lines
    assert f'"token": "{hidden}"' in out
    assert f"  starlette-betterauth verify - --base-url {server.url}" in lines
    assert_no_secret(out, *session_secrets(session, cookies))
    code, out, _ = cli("inspect", "--json", value)
    document = json.loads(out)
    assert (code, document["kind"], document["source"]) == (0, "session_cookie", "session_data")
    data = document["session_data"]
    assert data["names"] == ["better-auth.session_data"]
    assert data["user"]["id"] == session.user_id
    assert data["session"]["id"] == session.id
    assert data["claims"]["sid"] == hidden
    assert data["sid_matches"] is None
    assert data["times"]["exp"]["relative"] == "expires in 5 min"
    assert document["session_token"] is None
    assert_no_secret(out, *session_secrets(session, cookies))


def test_inspect_cookie_header_with_chunks_and_other_cookies(cli: RunCLI, issuer: Issuer) -> None:
    session = issuer.session(name="N" * 3000)
    cookies = issuer.session_cookies(session, chunk_size=1500)
    header = "Cookie: theme=dark; " + cookie_header(cookies) + "; _ga=GA1.2"
    code, out, _ = cli("inspect", header)
    assert code == 0
    lines = out.splitlines()
    assert "credential     Better Auth's session cookies, cookie prefix 'better-auth'" in lines
    token_line = next(line for line in lines if line.startswith("session_token  "))
    assert "better-auth.session_token: signed session token" in token_line
    data_line = next(line for line in lines if line.startswith("session_data   "))
    chunks = len(cookies) - 1
    assert chunks > 1
    assert "better-auth.session_data.0, better-auth.session_data.1, " in data_line
    assert f"({chunks} chunks, joined): the cookie cache, signed with the key set" in data_line
    assert "sid            names the session_token cookie's session" in lines
    assert "not read       theme, _ga" in lines
    assert "then it asks get-session with the session_token cookie" in out
    assert_no_secret(out, *session_secrets(session, cookies))
    document = json.loads(cli("inspect", "--json", header)[1])
    assert document["source"] == "cookie_header"
    assert document["session_token"]["name"] == "better-auth.session_token"
    assert document["session_token"]["form"] == "signed"
    assert len(document["session_data"]["names"]) == chunks
    assert document["session_data"]["sid_matches"] is True
    assert document["other_cookies"] == ["theme", "_ga"]


def test_inspect_session_token_cookie_alone(cli: RunCLI, issuer: Issuer) -> None:
    session = issuer.session()
    cookies = issuer.session_cookies(session, session_data=False)
    code, out, _ = cli("inspect", cookie_header(cookies))
    assert code == 0
    assert "UNVERIFIED" not in out
    assert "Only the server can check the session_token cookie" in out
    assert "The middleware's SessionCookie() asks get-session" in out
    assert_no_secret(out, *session_secrets(session, cookies))


def test_cookie_fingerprint_is_the_one_the_middleware_logs(
    cli: RunCLI, issuer: Issuer, server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    session = issuer.session()
    # The cookie cache of another server's key: refused, so the middleware logs it.
    cookies = {
        **issuer.session_cookies(session, session_data=False),
        **issuer.session_data_cookie(session, key=SigningKey()),
    }
    header = cookie_header(cookies)

    async def request() -> int:
        app = guarded_app([Route("/me", ok)], base_url=server.url, accept=[SessionCookie()])
        async with asgi_client(app) as client:
            return (await client.get("/me", headers={"cookie": header})).status_code

    caplog.set_level(logging.INFO, logger="starlette_betterauth")
    assert anyio.run(request) == 401
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(logged) == 1
    code, out, _ = cli("inspect", header)
    assert code == 0
    fingerprint = out.split("fingerprint    ")[1].split()[0]
    assert logged[0].endswith(f"(token {fingerprint})")
    code, out, _ = cli("verify", header, "--base-url", server.url)
    assert code == 1
    assert out.startswith("refused: no key in the key set has the token's kid (UnknownKeyError")
    assert (
        json.loads(cli("verify", "--json", header, "--base-url", server.url)[1])["fingerprint"]
        == fingerprint
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("a=1; b=2", "among the cookies given (cookies: a, b)"),
        ("Cookie: ", "among the cookies given (cookies: none)"),
        (
            "better-auth.session_token=",
            "among the cookies given (cookies: better-auth.session_token)",
        ),
    ],
)
def test_no_session_cookie_is_refused_with_the_names_seen(
    cli: RunCLI, server: JWKSServer, header: str, message: str
) -> None:
    code, out, _ = cli("inspect", header)
    assert code == 1
    first, fix = out.splitlines()
    assert first.startswith("no session cookie: no Better Auth session cookie")
    assert message in first
    assert fix.startswith("fix: Better Auth's session cookies are better-auth.session_token")
    code, out, _ = cli("verify", header, "--base-url", server.url)
    assert code == 1
    assert "the middleware sees none (InvalidSessionError, HTTP 401)" in out
    assert server.requests == 0


def test_another_cookie_prefix(cli: RunCLI, issuer: Issuer, server: JWKSServer) -> None:
    session = issuer.session()
    cookies = issuer.session_cookies(session, prefix="my-app", secure=True)
    assert "__Secure-my-app.session_token" in cookies
    header = cookie_header(cookies)
    code, out, _ = cli("inspect", header)
    assert code == 0
    assert "credential     Better Auth's session cookies, cookie prefix 'my-app'" in out
    assert "(the middleware needs SessionCookie(cookie_prefix='my-app'))" in out
    # verify reads the names the middleware would: better-auth.* unless told otherwise.
    code, out, _ = cli("verify", header, "--base-url", server.url)
    assert code == 1
    assert "fix: these cookies are named with the prefix 'my-app'" in out
    assert "pass --cookie-prefix my-app, and give the middleware" in out
    code, out, _ = cli("verify", header, "--base-url", server.url, "--cookie-prefix", "my-app")
    assert code == 0, out
    assert out.startswith("valid: session_data cookie verified with EdDSA key")
    code, _, err = cli("verify", header, "--base-url", server.url, "--cookie-prefix", "a b")
    assert code == 2
    assert "cookie_prefix must be a non-empty cookie name" in err


@pytest.mark.parametrize("form", ["raw", "signed", "encoded", "bearer header"])
def test_verify_session_token_asks_get_session(
    cli: RunCLI, issuer: Issuer, server: JWKSServer, form: str
) -> None:
    session = issuer.session(email="ada@example.com", role="user,admin")
    token = {
        "raw": session.token,
        "signed": session.signed_token,
        "encoded": encode_cookie_value(session.signed_token),
        "bearer header": f"Authorization: Bearer {session.token}",
    }[form]
    code, out, err = cli("verify", token, "--base-url", server.url)
    assert code == 0, out + err
    lines = out.splitlines()
    assert (
        lines[0] == "valid: get-session answered for this session token, as SessionToken() asks it"
    )
    assert lines[1] == f"       ({server.session_url})"
    assert f"user         '{session.user_id}' 'ada@example.com'" in lines
    assert "roles        admin, user" in lines
    assert f"session      '{session.id}', expires " in out
    assert server.session_requests == 1
    assert server.session_request_headers[0]["authorization"] == f"Bearer {token.split()[-1]}"
    assert_no_secret(out + err, *session_secrets(session))
    code, out, _ = cli("verify", "--json", token, "--base-url", server.url)
    document = json.loads(out)
    assert code == 0
    assert document["kind"] == "session_token"
    assert document["checked_with"] == "get-session"
    assert document["get_session_url"] == server.session_url
    assert document["user"] == {
        "id": session.user_id,
        "email": "ada@example.com",
        "roles": ["admin", "user"],
    }
    assert document["session"]["id"] == session.id
    assert document["session"]["expires"]["relative"] == "expires in 7 days"
    assert document["claims"]["sub"] == session.user_id
    assert_no_secret(out, *session_secrets(session))


@pytest.mark.parametrize("given", ["session_data", "cookie header"])
def test_verify_session_data_locally(
    cli: RunCLI, issuer: Issuer, server: JWKSServer, given: str
) -> None:
    session = issuer.session(role="admin")
    cookies = issuer.session_cookies(session)
    value = (
        cookies["better-auth.session_data"] if given == "session_data" else cookie_header(cookies)
    )
    code, out, _ = cli("verify", value, "--base-url", server.url)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == (
        f"valid: session_data cookie verified with EdDSA key '{issuer.current_key.kid}', "
        "typ, aud and iss match"
    )
    assert lines[1] == "       as SessionCookie() does: with the key set alone, no get-session call"
    assert "roles        admin" in lines
    assert any(line.startswith("cache exp    ") and "expires in 5 min" in line for line in lines)
    assert server.session_requests == 0
    assert_no_secret(out, *session_secrets(session, cookies))
    code, out, _ = cli("verify", "--json", value, "--base-url", server.url, "--no-verify-issuer")
    document = json.loads(out)
    assert (code, document["kind"], document["checked_with"]) == (0, "session_cookie", "key set")
    assert document["kid"] == issuer.current_key.kid
    assert document["get_session_url"] is None
    assert document["session"]["id"] == session.id
    assert server.session_requests == 0
    code, out, _ = cli("verify", value, "--base-url", server.url, "--no-verify-issuer")
    assert "typ and aud match, iss not checked" in out.splitlines()[0]


def test_verify_expired_session_data_falls_back_to_get_session(
    cli: RunCLI, issuer: Issuer, server: JWKSServer
) -> None:
    session = issuer.session()
    stale = issuer.session_data_cookie(session, issued_at=time.time() - 600)
    cookies = {**issuer.session_cookies(session, session_data=False), **stale}
    code, out, _ = cli("verify", cookie_header(cookies), "--base-url", server.url)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == (
        "valid: get-session answered for the session_token cookie, as SessionCookie() asks it"
    )
    assert lines[1] == f"       (the session_data cookie has expired; {server.session_url})"
    assert server.session_requests == 1
    # Only the session_token cookie is sent, as the middleware sends it.
    sent = server.session_request_headers[0]
    assert sent["cookie"].startswith("better-auth.session_token=")
    assert ";" not in sent["cookie"]
    # The stale cookie cache alone: nothing to ask get-session with.
    (value,) = stale.values()
    code, out, _ = cli("verify", value, "--base-url", server.url)
    assert code == 1
    refused, fix = out.splitlines()
    assert refused == "refused: the token has expired (ExpiredTokenError, HTTP 401)"
    assert fix.startswith("fix: the session_data cookie lives session.cookieCache.maxAge seconds")
    code, out, _ = cli("inspect", cookie_header(cookies))
    assert "(expired 5 min ago)" in out
    assert "SessionCookie() asks get-session with the session_token cookie" in out
    code, out, _ = cli("inspect", value)
    assert "and without the session_token cookie the request is refused" in out


def test_verify_session_data_names_its_servers_base_url(
    cli: RunCLI, issuer: Issuer, server: JWKSServer
) -> None:
    session = issuer.session()
    # JWTs may have another issuer (jwt.issuer); the cookie cache's iss is the baseURL.
    (value,) = issuer.session_data_cookie(session).values()
    custom = ("--base-url", server.url, "--issuer", "https://id.example")
    code, out, _ = cli("verify", value, *custom)
    assert code == 0, out
    (value,) = issuer.session_data_cookie(session, iss="https://id.example").values()
    code, out, _ = cli("verify", value, *custom)
    assert code == 1
    refused, fix = out.splitlines()
    assert refused.startswith("refused: iss is 'https://id.example' but the expected issuer is")
    assert fix == (
        "fix: Better Auth signs the session_data cookie with iss = its baseURL (whatever "
        "jwt.issuer says): the cookie comes from another server, or --base-url (base_url=) is "
        "not this server's baseURL"
    )


def test_verify_session_refusals(cli: RunCLI, issuer: Issuer, server: JWKSServer) -> None:
    session = issuer.session()
    cookies = issuer.session_cookies(session, session_data=False)
    issuer.revoke_session(session)
    for value in (session.token, cookie_header(cookies)):
        code, out, _ = cli("verify", value, "--base-url", server.url)
        assert code == 1
        refused, fix = out.splitlines()
        assert refused == (
            "refused: the session is unknown, expired or signed out (Better Auth's get-session "
            "answered null) (InvalidSessionError, HTTP 401)"
        )
        assert fix.startswith("fix: sign in again: the session was signed out")
    # A cookie signed with another server's secret: get-session does not know it.
    other = issuer.session()
    forged = issuer.session_cookies(other, secret="another-secret", session_data=False)
    code, out, _ = cli("verify", cookie_header(forged), "--base-url", server.url)
    assert code == 1
    assert "signed with that server's BETTER_AUTH_SECRET" in out
    assert_no_secret(out, *session_secrets(other, forged))


def test_verify_banned_session_user(cli: RunCLI, issuer: Issuer, server: JWKSServer) -> None:
    session = issuer.session()
    issuer.ban(session.user_id, revoke_sessions=False)
    cookies = issuer.session_cookies(session)  # minted after the ban: it says banned
    for value in (session.token, cookie_header(cookies)):
        code, out, _ = cli("verify", value, "--base-url", server.url)
        assert code == 1
        refused, fix = out.splitlines()
        assert refused == "refused: this user is banned (BannedUserError, HTTP 403)"
        assert "unless allow_banned=True (--allow-banned)" in fix
        code, out, _ = cli("verify", value, "--base-url", server.url, "--allow-banned")
        assert code == 0, out
    code, out, _ = cli("inspect", cookies["better-auth.session_data"])
    assert ", BANNED" in out


def test_verify_session_data_of_another_session(
    cli: RunCLI, issuer: Issuer, server: JWKSServer
) -> None:
    mine, theirs = issuer.session(), issuer.session()
    cookies = {
        **issuer.session_cookies(mine, session_data=False),
        **issuer.session_data_cookie(theirs),
    }
    header = cookie_header(cookies)
    code, out, _ = cli("inspect", header)
    assert code == 0
    assert "sid            names ANOTHER session than the session_token cookie: refused" in out
    assert json.loads(cli("inspect", "--json", header)[1])["session_data"]["sid_matches"] is False
    code, out, _ = cli("verify", header, "--base-url", server.url)
    assert code == 1
    refused, fix = out.splitlines()
    assert refused == (
        "refused: the session_data cookie belongs to another session than the session_token "
        "(InvalidSessionError, HTTP 401)"
    )
    assert fix.startswith("fix: send the session_token and session_data cookies of one browser")
    assert server.session_requests == 0
    assert_no_secret(out, *session_secrets(mine, cookies), *session_secrets(theirs))


def test_session_data_not_signed_with_the_key_set(
    cli: RunCLI, issuer: Issuer, server: JWKSServer
) -> None:
    session = issuer.session()
    # Better Auth's secret-based "jwt" strategy: HS256 with the secret, no session-cache typ.
    hs256 = jwt.encode(
        {"session": session.session, "user": session.user, "exp": int(time.time()) + 300},
        issuer.secret,
        algorithm="HS256",
    )
    cookies = {
        **issuer.session_cookies(session, session_data=False),
        "better-auth.session_data": hs256,
    }
    header = cookie_header(cookies)
    code, out, _ = cli("inspect", header)
    assert code == 0
    assert "session_data   better-auth.session_data: not a session cache JWT signed" in out
    assert "fix: this session_data cookie is not signed with the key set" in out
    # As the middleware does: the session_token cookie is checked with get-session.
    code, out, _ = cli("verify", header, "--base-url", server.url)
    assert code == 0, out
    assert "get-session" in out
    assert server.session_requests == 1
    assert_no_secret(out, *session_secrets(session, cookies))


def test_verify_session_server_failures_are_exit_3(
    cli: RunCLI, issuer: Issuer, server: JWKSServer
) -> None:
    session = issuer.session()
    server.session_status, server.session_headers = 503, {"Retry-After": "7"}
    code, out, err = cli("verify", session.token, "--base-url", server.url)
    assert (code, out) == (3, "")
    error, fix = err.splitlines()
    assert error == "error: get-session answered HTTP 503"
    assert fix.startswith("fix: check that the Better Auth server is running and reachable")
    assert f"{server.session_url} is its get-session" in fix
    code, out, _ = cli("verify", "--json", session.token, "--base-url", server.url)
    document = json.loads(out)
    assert (code, document["exit_code"]) == (3, 3)
    assert document["error"]["type"] == "SessionServiceError"
    url = stopped_server_url()
    code, _, err = cli("verify", session.token, "--base-url", url)
    assert code == 3
    assert err.splitlines()[0] == "error: get-session could not be reached (ConnectError)"
    # A cookie cache needs the key set first.
    code, _, err = cli(
        "verify", issuer.session_data_cookie(session).popitem()[1], "--base-url", url
    )
    assert code == 3
    assert err.splitlines()[0] == "error: the key server could not be reached (ConnectError)"
    assert_no_secret(out + err, *session_secrets(session))


def test_verify_session_needs_get_session(cli: RunCLI, issuer: Issuer) -> None:
    with JWKSServer(issuer, path="/auth/keys", session_path="/auth/session") as server:
        session = issuer.session()
        keys = (
            "--jwks-url", server.url + "/auth/keys", "--issuer", server.url, "--audience", "x"
        )  # fmt: skip
        code, _, err = cli("verify", session.token, *keys)
        assert code == 2
        assert err.strip() == (
            "error: a session is checked with Better Auth's get-session: pass --base-url URL "
            "(the server's baseURL), or --get-session-url URL"
        )
        code, out, _ = cli(
            "verify", session.token, *keys, "--get-session-url", server.url + "/auth/session"
        )
        assert code == 0, out
        assert f"({server.url}/auth/session)" in out
        code, _, err = cli("verify", session.token, *keys, "--get-session-url", "ftp://x")
        assert code == 2
        assert "must be an http(s) URL" in err


def test_session_output_escapes_control_characters(
    cli: RunCLI, issuer: Issuer, server: JWKSServer
) -> None:
    session = issuer.session(email="evil\x1b]0;pwned\x07@example.com", name="\u009b31m")
    cookies = issuer.session_cookies(session)
    for args in (
        ("inspect", cookies["better-auth.session_data"]),
        ("verify", session.token, "--base-url", server.url),
        ("verify", cookie_header(cookies), "--base-url", server.url),
    ):
        code, out, _ = cli(*args)
        assert code == 0
        for control in ("\x1b", "\x07", "\u009b"):
            assert control not in out
        assert "\\x1b" in out or "\\u001b" in out


@pytest.mark.parametrize(
    "junk",
    [
        "Cookie:",
        "better-auth.session_data=a.b.c",
        "better-auth.session_data.0=x; better-auth.session_data.2=y",
        "better-auth.session_token=\x1b[31m",
        "a=b;c",
        "%%%.%%%",
        "A" * 16 + "." + "B" * 43 + "=",
    ],
)
def test_session_junk_never_gives_a_traceback(cli: RunCLI, server: JWKSServer, junk: str) -> None:
    for args in (("inspect", junk), ("verify", junk, "--base-url", server.url)):
        code, out, err = cli(*args)
        assert code in (0, 1, 2)
        assert "\x1b" not in out + err


# -- jwks ------------------------------------------------------------------------------


def test_jwks_lists_the_keys(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    first = issuer.current_key.kid
    second = issuer.rotate("ES256").kid
    third = issuer.rotate("RS256").kid
    code, out, _ = cli("jwks", "--base-url", server.url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"key set  {server.jwks_url}"
    assert lines[1].startswith("fetched  ")
    assert " UTC in " in lines[1]
    assert lines[1].endswith(" ms")
    assert lines[3].split() == ["KID", "KTY", "CRV", "ALG"]
    assert lines[4].split() == [first, "OKP", "Ed25519", "EdDSA"]
    assert lines[5].split() == [second, "EC", "P-256", "ES256"]
    assert lines[6].split() == [third, "RSA", "-", "RS256"]
    assert len(lines) == 7


def key_set_with_bad_keys(issuer: Issuer) -> bytes:
    good = issuer.current_key.public_jwk
    encryption = dict(SigningKey("ES256", kid="enc-key").public_jwk, use="enc")
    secret = {"kty": "oct", "kid": "hmac-key", "k": "c2VjcmV0", "alg": "HS256"}
    return json.dumps({"keys": [good, encryption, secret]}).encode()


def test_jwks_shows_skipped_keys_and_why(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    server.body = key_set_with_bad_keys(issuer)
    code, out, _ = cli("jwks", "--base-url", server.url)
    assert code == 0
    skipped = [line for line in out.splitlines() if line.startswith("skipped")]
    assert skipped == [
        "skipped  'enc-key': its use is 'enc', not 'sig'",
        "skipped  'hmac-key': it holds private or symmetric key material",
    ]
    code, out, _ = cli("jwks", "--json", "--base-url", server.url)
    document = json.loads(out)
    assert [k["kid"] for k in document["keys"]] == [issuer.current_key.kid]
    assert document["keys"][0] == {
        "kid": issuer.current_key.kid,
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "algorithms": ["EdDSA"],
    }
    assert document["skipped"] == [
        {"key": "'enc-key'", "reason": "its use is 'enc', not 'sig'"},
        {"key": "'hmac-key'", "reason": "it holds private or symmetric key material"},
    ]
    assert document["fetched_at"] > 0
    assert document["duration"] >= 0


def test_jwks_with_no_usable_key_says_why_each_was_skipped(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    code, _, err = cli("jwks", "--base-url", server.url, "--algorithms", "RS256")
    assert code == 3
    assert err.splitlines()[0] == (
        f"error: the key set has no usable key ('{issuer.current_key.kid}': none of its "
        "algorithms (EdDSA) is accepted)"
    )
    assert "does not serve" not in err
    assert "not with a usable JSON Web Key Set" in err


def test_jwks_unreachable_is_exit_3(cli: RunCLI) -> None:
    code, out, _ = cli("jwks", "--json", "--base-url", stopped_server_url())
    assert code == 3
    assert json.loads(out)["error"]["type"] == "KeySetFetchError"


# -- doctor ----------------------------------------------------------------------------


def check_lines(out: str) -> dict[str, list[str]]:
    """Doctor's check lines by check name: {"token iss": ["[FAIL] ...", "fix: ..."]}."""
    found: dict[str, list[str]] = {}
    name = ""
    for line in out.splitlines():
        if line[:1] == "[":
            name = line[7 : line.index(":")]
            found.setdefault(name, []).append(line)
        elif line.startswith("       fix: "):
            found[name].append(line.strip())
    return found


def test_doctor_on_a_healthy_server(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    token = issuer.token(user_id="u-6", role="admin")
    code, out, _ = cli("doctor", "--base-url", server.url, "--token", token)
    assert code == 0, out
    checks = check_lines(out)
    assert all(line.startswith("[ ok ]") for lines in checks.values() for line in lines), out
    assert set(checks) == {
        "key server",
        "key set",
        "algorithms",
        "clock",
        "token alg/kid",
        "token iss",
        "token aud",
        "token times",
        "verdict",
    }
    assert checks["verdict"] == ["[ ok ] verdict: accepted: user 'u-6', roles admin"]
    assert f"token     {token_fingerprint(token)}" in out.splitlines()
    assert out.rstrip().endswith("all checks passed.")
    assert server.requests == 1


def test_doctor_diagnoses_an_issuer_mismatch(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    token = issuer.token(iss="https://auth.example.com/")
    code, out, _ = cli("doctor", "--base-url", server.url, "--token", token)
    assert code == 1
    checks = check_lines(out)
    assert checks["token iss"] == [
        f"[FAIL] token iss: iss is 'https://auth.example.com/' but the expected issuer is "
        f"'{server.url}'",
        "fix: set issuer='https://auth.example.com/' (--issuer) if that is the server you "
        f"trust, or fix jwt.issuer (or baseURL) on the server so it signs '{server.url}'",
    ]
    assert checks["token aud"][0].startswith("[ ok ]")
    assert checks["verdict"] == [
        f"[FAIL] verdict: refused with HTTP 401: iss is 'https://auth.example.com/' but the "
        f"expected issuer is '{server.url}' (InvalidIssuerError)"
    ]
    assert out.rstrip().endswith("2 check(s) failed.")


def test_doctor_explains_every_mismatch_at_once(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    token = issuer.token(
        key=SigningKey("EdDSA", kid="elsewhere"),
        iss="https://a.example",
        aud=["https://b.example"],
        issued_at=time.time() - 7200,
    )
    code, out, _ = cli("doctor", "--json", "--base-url", server.url, "--token", token)
    assert code == 1
    document = json.loads(out)
    failed = {c["name"]: c for c in document["checks"] if c["status"] == "fail"}
    assert set(failed) == {"token kid", "token iss", "token aud", "token times", "verdict"}
    assert failed["token kid"]["detail"] == (
        f"kid 'elsewhere' is not in the key set ('{issuer.current_key.kid}')"
    )
    assert "another Better Auth server" in failed["token kid"]["fix"]
    assert failed["token aud"]["detail"] == (
        f"aud is ['https://b.example'] but the accepted audience is '{server.url}'"
    )
    assert failed["token times"]["detail"].startswith("issued 2 h ago (")
    assert "expired 1 h 45 min ago" in failed["token times"]["detail"]
    assert failed["verdict"]["fix"] is None  # the checks above already explain it
    assert document["exit_code"] == 1
    assert document["fingerprint"] == token_fingerprint(token)


def test_doctor_names_an_algorithm_the_api_does_not_accept(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    issuer.rotate("ES256")
    token = issuer.token(key=issuer.keys[0])
    code, out, _ = cli(
        "doctor", "--base-url", server.url, "--algorithms", "ES256", "--token", token
    )
    assert code == 1
    checks = check_lines(out)
    assert checks["token alg"] == [
        "[FAIL] token alg: alg 'EdDSA' is not accepted (ES256)",
        "fix: add EdDSA to the accepted algorithms (--algorithms, algorithms=), or change "
        "jwks.keyPairConfig.alg on the server",
    ]
    assert checks["key set"][1] == (
        f"[warn] key set: key '{issuer.keys[0].kid}' is skipped: none of its algorithms "
        "(EdDSA) is accepted"
    )


def test_doctor_with_a_malformed_token(cli: RunCLI, server: JWKSServer) -> None:
    code, out, _ = cli("doctor", "--base-url", server.url, "--token", "a.b")
    assert code == 1
    assert "[FAIL] token: this looks like a Better Auth session token" in out


def test_doctor_unreachable_server_still_checks_the_token(cli: RunCLI, issuer: Issuer) -> None:
    url = stopped_server_url()
    code, out, _ = cli("doctor", "--base-url", url, "--token", issuer.token(iss="https://x"))
    assert code == 3
    checks = check_lines(out)
    assert checks["key server"] == [
        "[FAIL] key server: the key server could not be reached (ConnectError)",
        checks["key server"][1],
    ]
    assert checks["key server"][1].startswith("fix: check that the Better Auth server is running")
    assert checks["token iss"][0].startswith("[FAIL] token iss: iss is 'https://x'")
    assert checks["token alg/kid"][0].startswith("[skip]")
    assert checks["verdict"] == ["[skip] verdict: not verified: no usable key set"]


def test_doctor_key_server_answering_an_error(cli: RunCLI, server: JWKSServer) -> None:
    server.status = 404
    code, out, _ = cli("doctor", "--base-url", server.url)
    assert code == 3
    checks = check_lines(out)
    assert checks["key server"][0] == "[FAIL] key server: the key server answered HTTP 404"
    assert checks["clock"][0].startswith("[ ok ]")  # it answered, so its Date was read


@pytest.mark.parametrize(
    ("offset", "status", "detail"),
    [
        (-3600, "[FAIL]", "behind this machine's, more than the 10 s leeway"),
        (3600, "[FAIL]", "ahead of this machine's, more than the 10 s leeway"),
        (6, "[warn]", "ahead of this machine's; tokens still pass within the 10 s leeway"),
    ],
)
def test_doctor_compares_the_clocks(
    cli: RunCLI, issuer: Issuer, offset: float, status: str, detail: str
) -> None:
    with skewed_key_server(issuer, offset) as url:
        code, out, _ = cli("doctor", "--base-url", url)
    clock = check_lines(out)["clock"]
    assert clock[0].startswith(f"{status} clock: the server's clock is about ")
    assert detail in clock[0]
    assert clock[1].startswith("fix: sync both machines with NTP")
    assert code == (1 if status == "[FAIL]" else 0)


# -- dev-issuer ------------------------------------------------------------------------


def test_dev_issuer_usage_errors(cli: RunCLI, server: JWKSServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    for args, message in [
        (("--port", "70000"), "--port must be between 0 and 65535"),
        (("--expires-in", "0"), "--expires-in must be a number of seconds above 0"),
        (("--role", "a,b"), "--role must be one non-empty role name"),
        (("--port", port), f"cannot listen on 127.0.0.1:{port}"),
    ]:
        code, _, err = cli("dev-issuer", *args)
        assert code == 2
        assert message in err
        assert err.count("\n") == 1


class Process:
    """A child process whose stdout lines arrive through a queue (bounded waits)."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "starlette_betterauth", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.popen.stdout is not None
        stdout = self.popen.stdout
        self.reader = threading.Thread(target=self._pump, args=(stdout,), daemon=True)
        self.reader.start()
        self.stderr = ""

    def _pump(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Kill the child by its PID if it still runs, reap it and close its pipes."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self.reader.join(timeout=10)
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        self.stderr = self.popen.stderr.read()
        self.popen.stdout.close()
        self.popen.stderr.close()

    def read_until(self, predicate: Callable[[str], bool], timeout: float = 30) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            seen.append(line.rstrip("\n"))
            if predicate(line):
                return seen

    def stop(self, sig: signal.Signals) -> int:
        os.kill(self.popen.pid, sig)
        return self.popen.wait(timeout=30)


def test_python_m_help_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "starlette_betterauth", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    assert result.stderr == ""


def test_dev_issuer_json_tokens_verify_and_sigterm_exits_0(cli: RunCLI) -> None:
    with Process("dev-issuer", "--json", "--expires-in", "600", "--role", "editor") as process:
        document = json.loads(process.read_until(lambda line: line.startswith("{"))[-1])
        url = document["base_url"]
        assert url.startswith("http://127.0.0.1:")
        assert document["jwks_url"] == url + "/api/auth/jwks"
        assert document["curl"][2] == (
            'curl -i http://127.0.0.1:8000/me -H "Authorization: Bearer $USER_TOKEN"'
        )
        code, out, _ = cli("verify", "--json", document["user_token"], "--base-url", url)
        assert code == 0
        user = json.loads(out)
        assert user["user"]["roles"] == ["user"]
        assert 590 <= user["claims"]["exp"] - user["claims"]["iat"] <= 600
        code, out, _ = cli("verify", "--json", document["admin_token"], "--base-url", url)
        assert code == 0
        assert json.loads(out)["user"]["roles"] == ["editor"]
        assert process.stop(signal.SIGTERM) == 0
    assert process.stderr == "stopped.\n"


def test_dev_issuer_text_and_ctrl_c_exits_0(cli: RunCLI) -> None:
    with Process("dev-issuer", "--alg", "ES256", "--api-url", "http://127.0.0.1:9000/") as process:
        lines = process.read_until(lambda line: line.startswith("Serving"))
        url = next(line.split()[-1] for line in lines if line.startswith("  base URL"))
        tokens = {
            line.split("=")[0].split()[-1]: line.split("=", 1)[1]
            for line in lines
            if "_TOKEN=" in line
        }
        assert set(tokens) == {"USER_TOKEN", "ADMIN_TOKEN"}
        assert f"  export BETTER_AUTH_URL={url}" in lines
        assert any(
            line.startswith('  curl -i http://127.0.0.1:9000/admin -H "Authorization: Bearer '
            '$ADMIN_TOKEN"') and line.endswith("# 200: role admin")
            for line in lines
        )  # fmt: skip
        code, out, _ = cli("verify", tokens["ADMIN_TOKEN"], "--base-url", url)
        assert code == 0
        assert "valid: signature verified with ES256 key" in out
        assert "roles        admin" in out
        assert process.stop(signal.SIGINT) == 0
    assert process.stderr == "stopped.\n"


# -- OAuth access tokens (--resource) ------------------------------------------------------

API = "https://api.example.com"


def test_verify_an_access_token(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    token = issuer.access_token(scope="reports:read openid", audience=API, user_id="u-6")
    code, out, err = cli("verify", token, "--base-url", server.url, "--resource", API)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == f"valid: an OAuth access token for {API}, issued by {server.url}/api/auth"
    assert "user         'u-6'" in lines
    assert "client       'test-client'" in lines
    assert "scopes       openid, reports:read" in lines
    machine = issuer.client_credentials_token(scope="x", audience=API, client_id="cron")
    code, out, _ = cli("verify", "--json", machine, "--base-url", server.url, "--resource", API)
    assert code == 0
    assert json.loads(out)["access_token"] == {
        "subject": "cron",
        "client_id": "cron",
        "machine": True,
        "scopes": ["x"],
        "dpop_jkt": None,
    }


def test_verify_explains_access_token_mismatches(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    from starlette_betterauth.testing import DPoPKey

    cases = {
        issuer.access_token(scope="x", audience="https://other.example.com"): (
            "InvalidAudienceError",
            "the client must ask for the token with resource='https://api.example.com'",
        ),
        issuer.access_token(scope="x", audience=API, iss=server.url): (
            "InvalidIssuerError",
            "the server sets jwt.issuer, which replaces the OAuth provider's issuer",
        ),
        issuer.access_token(scope="x", audience=API, iss=server.url + "/identity"): (
            "InvalidIssuerError",
            "Better Auth's OAuth provider names baseURL + basePath as issuer",
        ),
        issuer.id_token(): ("TokenTypeError", "the client sent its ID token"),
        issuer.token(): ("TokenTypeError", "session JWTs (GET /api/auth/token)"),
    }
    for token, (reason, fix) in cases.items():
        code, out, _ = cli("verify", token, "--base-url", server.url, "--resource", API)
        assert code == 1, out
        assert f"({reason}, HTTP 401)" in out
        assert fix in out.split("fix: ", 1)[1]
    bound = issuer.access_token(scope="x", audience=API, dpop_key=DPoPKey())
    code, out, _ = cli("verify", bound, "--base-url", server.url, "--resource", API)
    assert code == 0
    assert "DPoP-bound" in out
    assert "'Authorization: DPoP <token>'" in out
    code, _, err = cli(
        "verify", bound, "--base-url", server.url, "--resource", API, "--audience", API
    )
    assert code == 2
    assert "--audience names session-JWT audiences" in err


def test_an_access_token_checked_as_a_session_jwt_points_to_resource(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    token = issuer.access_token(scope="x", audience=[API, f"{server.url}/api/auth/oauth2/userinfo"])
    code, out, _ = cli("verify", token, "--base-url", server.url)
    assert code == 1
    assert f"check it with --resource {API};" in out
    code, out, _ = cli("doctor", "--token", token, "--base-url", server.url)
    assert code == 1
    assert "[warn] token typ: typ at+jwt: an OAuth access token" in out


def test_doctor_with_a_resource(cli: RunCLI, server: JWKSServer, issuer: Issuer) -> None:
    from starlette_betterauth.testing import DPoPKey

    good = issuer.access_token(scope="x", audience=API, dpop_key=DPoPKey())
    code, out, _ = cli("doctor", "--token", good, "--base-url", server.url, "--resource", API)
    assert code == 0, out
    assert f"issuer    {server.url}/api/auth" in out
    assert f"audience  {API}" in out
    assert "[ ok ] token typ: at+jwt: an OAuth access token (RFC 9068)" in out
    assert "[warn] token binding: DPoP-bound to the key" in out
    assert "[ ok ] verdict: accepted: user" in out
    session_jwt = issuer.token()
    code, out, _ = cli(
        "doctor", "--json", "--token", session_jwt, "--base-url", server.url, "--resource", API
    )
    assert code == 1
    checks = {check["name"]: check for check in json.loads(out)["checks"]}
    assert checks["token typ"]["status"] == "fail"
    assert checks["token iss/aud"]["status"] == "skip"
    assert checks["verdict"]["detail"].endswith("(TokenTypeError)")
