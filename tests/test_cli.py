"""The command line, run in-process through ``main`` against real loopback key servers.

Two commands also run as real subprocesses: ``--help`` and ``dev-issuer`` (stopped
by signal, by PID).
"""

from __future__ import annotations

import io
import json
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

import pytest

from starlette_betterauth.__main__ import main
from starlette_betterauth.middleware import token_fingerprint
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey, b64url

RunCLI = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> RunCLI:
    """Run the command line in-process; return (exit code, stdout, stderr)."""
    monkeypatch.delenv("BETTER_AUTH_URL", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


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
        ("7E3wGHXlmP2MgwRF3DRQMxU0QVChzZTX.92gDPwEDUminkEKqyytvp6KpE6Ct", "session token"),
        ("abc", "3 dot-separated segments"),
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
