"""The public testing kit: tokens and sessions shaped like Better Auth's, server, fixtures."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import httpx
import jwt
import pytest
from _better_auth import SERVER_DIR, require_server
from _helpers import asgi_client, bearer, guarded_app
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import TokenVerifier, requires_scope
from starlette_betterauth._cookies import (
    CookieNames,
    encode_cookie_value,
    find_session_cookies,
    parse_cookies,
    sign_session_token,
    split_signed_token,
)
from starlette_betterauth.errors import InvalidSessionError
from starlette_betterauth.testing import (
    ALGORITHMS,
    DEFAULT_SESSION_PATH,
    SESSION_COOKIE_AUDIENCE,
    SESSION_COOKIE_TYPE,
    Issuer,
    JWKSServer,
    SigningKey,
    TestSession,
    jwks_transport,
)

pytestmark = pytest.mark.anyio


async def test_pytest_fixtures_serve_a_verifiable_token(
    betterauth_issuer: Issuer, betterauth_jwks_server: JWKSServer
) -> None:
    assert betterauth_issuer.base_url == betterauth_jwks_server.url
    verifier = TokenVerifier.for_server(betterauth_jwks_server.url)
    claims = await verifier.verify(betterauth_issuer.token(role="admin", user_id="u"))
    assert (claims["sub"], claims["id"], claims["role"]) == ("u", "u", "admin")
    assert betterauth_jwks_server.requests == 1


def test_tokens_are_shaped_like_better_auths(betterauth_issuer: Issuer) -> None:
    token = betterauth_issuer.token(email="e@example.com")
    header, payload, _ = token.split(".")
    decoded_header = json.loads(_pad(header))
    claims = betterauth_issuer.claims()
    assert decoded_header == {"alg": "EdDSA", "kid": betterauth_issuer.current_key.kid}
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iss"] == claims["aud"] == betterauth_issuer.base_url
    assert claims["sub"] == claims["id"]
    assert set(claims) >= {"name", "email", "emailVerified", "createdAt", "role", "banned"}
    assert "role" not in betterauth_issuer.claims(role=None)
    assert len(betterauth_issuer.current_key.kid) == 32
    assert payload


def _pad(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _decode_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(_pad(header)), json.loads(_pad(payload))


RESOURCE = "https://api.example.com"


def test_access_tokens_are_shaped_like_better_auths_oauth_tokens() -> None:
    issuer = Issuer("https://auth.example.com")
    header, claims = _decode_token(
        issuer.access_token(scope="openid reports:read", audience=RESOURCE)
    )
    assert header == {"alg": "EdDSA", "kid": issuer.current_key.kid, "typ": "at+jwt"}
    names = "iss aud sub client_id azp sid scope iat exp jti"
    assert claims.keys() == set(names.split())
    assert claims["iss"] == issuer.oauth_issuer == "https://auth.example.com/api/auth"
    assert claims["aud"] == RESOURCE
    assert claims["scope"] == "openid reports:read"
    assert claims["client_id"] == claims["azp"]
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize(
    ("scope", "expected"),
    [("a b", "a b"), (["a", "b"], "a b"), (("a",), "a"), ("", ""), ([], "")],
)
def test_access_token_scope_is_space_separated(scope: str | list[str], expected: str) -> None:
    _, claims = _decode_token(Issuer().access_token(scope=scope, audience=RESOURCE))
    assert claims["scope"] == expected


def test_access_token_claims_can_be_overridden_and_left_out() -> None:
    issuer = Issuer()
    token = issuer.access_token(
        scope=None,
        audience=[RESOURCE, "https://other.example"],
        user_id="u1",
        client_id="c1",
        sid=None,
        iss=issuer.base_url,
        custom=7,
    )
    _, claims = _decode_token(token)
    assert "scope" not in claims
    assert "sid" not in claims
    assert claims["aud"] == [RESOURCE, "https://other.example"]
    assert (claims["sub"], claims["client_id"], claims["azp"]) == ("u1", "c1", "c1")
    assert claims["iss"] == issuer.base_url
    assert claims["custom"] == 7


@requires_scope("reports:read")
async def _reports(request: Request) -> JSONResponse:
    return JSONResponse({"scopes": sorted(request.state.user.scopes)})


async def test_access_token_passes_a_middleware_configured_for_the_resource(
    issuer: Issuer, server: JWKSServer
) -> None:
    app = guarded_app(
        [Route("/reports", _reports)],
        base_url=server.url,
        issuer=issuer.oauth_issuer,
        audience=RESOURCE,
    )
    async with asgi_client(app) as client:
        token = issuer.access_token(scope="openid reports:read", audience=RESOURCE)
        granted = await client.get("/reports", headers=bearer(token))
        token = issuer.access_token(scope="openid", audience=RESOURCE)
        refused = await client.get("/reports", headers=bearer(token))
    assert granted.json() == {"scopes": ["openid", "reports:read"]}
    assert refused.status_code == 403


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_public_jwks_have_alg_and_kid_and_no_private_members(alg: str) -> None:
    jwk = SigningKey(alg).public_jwk
    assert jwk["alg"] == alg
    assert not {"d", "p", "q"} & jwk.keys()


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="alg must be one of"):
        SigningKey("HS256")


async def test_transport_serves_the_key_set_and_404s_elsewhere() -> None:
    issuer = Issuer("https://auth.example")
    async with httpx.AsyncClient(transport=jwks_transport(issuer)) as client:
        keys = (await client.get("https://auth.example/api/auth/jwks")).json()["keys"]
        missing = await client.get("https://auth.example/other")
    assert [k["kid"] for k in keys] == [issuer.current_key.kid]
    assert missing.status_code == 404


def test_rotate_and_remove_key() -> None:
    issuer = Issuer()
    first = issuer.current_key.kid
    second = issuer.rotate().kid
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [first, second]
    issuer.remove_key(first)
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [second]


# -- sessions ----------------------------------------------------------------------------


def _decode(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(_pad(segment))
    return decoded


def _iso_seconds(stamp: str) -> float:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    return datetime.fromisoformat(stamp).timestamp()


def test_sessions_are_shaped_like_better_auths_get_session_answer() -> None:
    issuer = Issuer()
    session = issuer.session("u1", email="a@example.com", name="Ann", role="admin")
    assert re.fullmatch(r"[A-Za-z0-9]{32}", session.token)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", session.id)
    assert session.user_id == "u1"
    # The key order of a real 1.7.25 answer (admin plugin, in-memory database).
    assert list(session.session) == [
        "expiresAt",
        "token",
        "createdAt",
        "updatedAt",
        "ipAddress",
        "userAgent",
        "userId",
        "id",
    ]
    assert list(session.user) == [
        "name",
        "email",
        "emailVerified",
        "createdAt",
        "updatedAt",
        "role",
        "banned",
        "id",
    ]
    assert (session.session["token"], session.session["userId"]) == (session.token, "u1")
    assert (session.user["id"], session.user["role"], session.user["banned"]) == (
        "u1",
        "admin",
        False,
    )
    expires = _iso_seconds(session.session["expiresAt"])
    assert expires == pytest.approx(session.expires_at, abs=0.001)
    assert expires - _iso_seconds(session.session["createdAt"]) == pytest.approx(604800, abs=0.002)
    assert issuer.get_session(session.token) == session.answer()


def test_session_fields_can_be_added_and_removed() -> None:
    issuer = Issuer()
    plain = issuer.session(role=None, image="https://img", emailVerified=None)
    assert {"role", "banned", "emailVerified"}.isdisjoint(plain.user)
    assert plain.user["image"] == "https://img"
    custom = issuer.session(session_fields={"impersonatedBy": "admin1", "ipAddress": None})
    assert custom.session["impersonatedBy"] == "admin1"
    assert "ipAddress" not in custom.session


def test_signed_tokens_use_the_issuers_secret() -> None:
    issuer = Issuer(secret="s3cret")
    session = issuer.session()
    assert session.signed_token == sign_session_token(session.token, "s3cret")
    assert len(Issuer().secret) >= 32


def test_revocation_expiry_bans_and_user_updates_show_in_answers() -> None:
    issuer = Issuer()
    first, second = issuer.session("u1"), issuer.session("u1")
    other = issuer.session("u2")
    assert issuer.get_session(issuer.session(expires_in=-1).token) is None
    assert issuer.get_session("unknown") is None
    issuer.update_user("u1", role="admin,editor", name=None)
    answer = issuer.get_session(first.token)
    assert answer is not None
    assert answer["user"]["role"] == "admin,editor"
    assert "name" not in answer["user"]
    assert first.user["role"] == "user"  # the snapshot does not change
    issuer.revoke_session(first)
    assert issuer.get_session(first.token) is None
    assert issuer.get_session(second.token) is not None
    issuer.revoke_session(second.token)
    assert issuer.get_session(second.token) is None
    assert issuer.revoke_user_sessions("u2") == 1
    assert issuer.get_session(other.token) is None
    with pytest.raises(KeyError):
        issuer.update_user("nobody", role="admin")


def test_ban_revokes_sessions_unless_told_not_to() -> None:
    issuer = Issuer()
    revoked, kept = issuer.session("u1"), issuer.session("u2")
    issuer.ban("u1")
    assert issuer.get_session(revoked.token) is None
    issuer.ban("u2", reason="spam", revoke_sessions=False)
    answer = issuer.get_session(kept.token)
    assert answer is not None
    assert (answer["user"]["banned"], answer["user"]["banReason"]) == (True, "spam")


def test_the_session_data_cookie_is_shaped_like_better_auth_17s() -> None:
    issuer = Issuer("https://auth.example")
    session = issuer.session("u1", role="admin")
    before = int(time.time())
    ((name, value),) = issuer.session_data_cookie(session, max_age=120).items()
    assert name == "better-auth.session_data"
    header_segment, payload_segment, _ = value.split(".")
    assert _decode(header_segment) == {
        "alg": "EdDSA",
        "kid": issuer.current_key.kid,
        "typ": SESSION_COOKIE_TYPE,
    }
    claims = _decode(payload_segment)
    assert list(claims) == [
        "session",
        "user",
        "updatedAt",
        "version",
        "sid",
        "iat",
        "exp",
        "iss",
        "aud",
        "sub",
    ]
    assert claims["session"] == session.session
    assert claims["user"] == session.user
    assert (claims["sid"], claims["sub"]) == (session.token, "u1")
    assert (claims["iss"], claims["aud"]) == ("https://auth.example", SESSION_COOKIE_AUDIENCE)
    assert claims["exp"] - claims["iat"] == 120
    assert claims["iat"] >= before
    assert claims["updatedAt"] // 1000 == claims["iat"]
    assert claims["version"] == "1"
    verified = jwt.decode(
        value,
        issuer.current_key.private_key.public_key(),
        algorithms=["EdDSA"],
        audience=SESSION_COOKIE_AUDIENCE,
        issuer="https://auth.example",
    )
    assert verified["sid"] == session.token


def test_the_session_data_cookie_follows_the_issuers_current_user() -> None:
    issuer = Issuer()
    session = issuer.session("u1")
    issuer.ban("u1", revoke_sessions=False)
    (value,) = issuer.session_data_cookie(session).values()
    assert _decode(value.split(".")[1])["user"]["banned"] is True
    issuer.revoke_session(session)  # revoked: the snapshot is what is left
    (value,) = issuer.session_data_cookie(session).values()
    assert _decode(value.split(".")[1])["user"]["banned"] is False


def test_session_data_cookie_overrides() -> None:
    issuer = Issuer()
    session, other = issuer.session(), issuer.session()
    old = issuer.rotate("ES256")
    issuer.rotate()
    (value,) = issuer.session_data_cookie(
        session,
        key=old,
        issued_at=time.time() - 600,
        header={"typ": "JWT"},
        sid=other.token,
        version=None,
    ).values()
    header_segment, payload_segment, _ = value.split(".")
    assert _decode(header_segment) == {"alg": "ES256", "kid": old.kid, "typ": "JWT"}
    claims = _decode(payload_segment)
    assert claims["sid"] == other.token
    assert "version" not in claims
    assert claims["exp"] < time.time()
    with pytest.raises(ValueError, match="chunk_size"):
        issuer.session_data_cookie(session, chunk_size=0)


def test_a_long_session_data_cookie_is_chunked_in_order() -> None:
    issuer = Issuer()
    session = issuer.session(bio="x" * 9000)
    cookies = issuer.session_data_cookie(session, secure=True, prefix="myapp")
    assert list(cookies) == [f"__Secure-myapp.session_data.{i}" for i in range(len(cookies))]
    assert len(cookies) == 4  # about 12 KB in 3800-character pieces
    assert all(len(v) == 3800 for v in list(cookies.values())[:-1])
    found = find_session_cookies(
        parse_cookies("; ".join(f"{k}={v}" for k, v in cookies.items())),
        CookieNames.for_prefix("myapp"),
    )
    assert found.data is not None
    assert found.data_names == tuple(cookies)
    jwt.decode(
        found.data,
        issuer.current_key.private_key.public_key(),
        algorithms=["EdDSA"],
        audience=SESSION_COOKIE_AUDIENCE,
    )
    small = issuer.session_data_cookie(session, chunk_size=100_000)
    assert list(small) == ["better-auth.session_data"]


def test_session_cookies_are_what_a_browser_holds_after_sign_in() -> None:
    issuer = Issuer()
    session = issuer.session()
    cookies = issuer.session_cookies(session)
    assert list(cookies) == ["better-auth.session_token", "better-auth.session_data"]
    wire = cookies["better-auth.session_token"]
    assert wire == encode_cookie_value(session.signed_token)
    assert wire.endswith("%3D")
    found = find_session_cookies(parse_cookies("; ".join(f"{k}={v}" for k, v in cookies.items())))
    assert found.token_value == session.signed_token
    assert split_signed_token(found.token_value, secret=issuer.secret)[0] == session.token
    secure = issuer.session_cookies(session, secure=True, session_data=False, prefix="myapp")
    assert list(secure) == ["__Secure-myapp.session_token"]
    forged = issuer.session_cookies(session, secret="not the secret", session_data=False)
    with pytest.raises(InvalidSessionError):
        split_signed_token(unquote(forged["better-auth.session_token"]), secret=issuer.secret)


def test_test_session_is_not_collected_as_a_test_class() -> None:
    assert TestSession.__test__ is False


# -- the server's get-session ------------------------------------------------------------


async def test_the_server_answers_get_session_for_cookies_and_bearer_tokens(
    betterauth_jwks_server: JWKSServer, betterauth_issuer: Issuer, betterauth_session: TestSession
) -> None:
    server, issuer, session = betterauth_jwks_server, betterauth_issuer, betterauth_session
    assert server.session_url == server.url + DEFAULT_SESSION_PATH
    cookies = issuer.session_cookies(session)
    token_cookie = f"better-auth.session_token={cookies['better-auth.session_token']}"
    async with httpx.AsyncClient(base_url=server.url) as client:

        async def ask(**headers: str) -> Any:
            response = await client.get(
                DEFAULT_SESSION_PATH + "?disableCookieCache=true", headers=headers
            )
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            return response.json()

        assert await ask(cookie=token_cookie) == session.answer()
        assert await ask(cookie="__Secure-" + token_cookie) == session.answer()
        assert await ask(authorization=f"Bearer {session.token}") == session.answer()
        assert await ask(authorization=f"bearer {session.signed_token}") == session.answer()
        encoded = encode_cookie_value(session.signed_token)
        assert await ask(authorization=f"Bearer {encoded}") == session.answer()
        assert await ask() is None
        assert await ask(authorization="Bearer unknown") is None
        assert await ask(cookie=f"better-auth.session_token={session.token}") is None  # unsigned
        forged = issuer.session_cookies(session, secret="wrong", session_data=False)
        assert await ask(cookie="; ".join(f"{k}={v}" for k, v in forged.items())) is None
        # A bearer value that does not verify falls back to the cookie, as with the bearer plugin.
        bad_bearer = f"Bearer {session.token}.{'A' * 43}="
        assert await ask(authorization=bad_bearer, cookie=token_cookie) == session.answer()
        issuer.revoke_session(session)
        assert await ask(cookie=token_cookie) is None
        jwks = await client.get("/api/auth/jwks")
    assert jwks.status_code == 200
    assert server.session_requests == 11
    assert server.requests == 12
    assert server.session_request_headers[0]["cookie"] == token_cookie


async def test_the_servers_get_session_misbehaves_on_demand() -> None:
    issuer = Issuer()
    with JWKSServer(issuer, session_path="/auth/session", cookie_prefix="myapp") as server:
        session = issuer.session()
        cookies = issuer.session_cookies(session, prefix="myapp", session_data=False)
        async with httpx.AsyncClient(base_url=server.url, cookies=cookies) as client:
            assert (await client.get("/auth/session")).json() == session.answer()
            server.session_status = 503
            server.session_headers = {"Retry-After": "7"}
            failing = await client.get("/auth/session")
            assert (failing.status_code, failing.headers["retry-after"]) == (503, "7")
            server.session_status, server.session_body = 200, b"not json"
            assert (await client.get("/auth/session")).content == b"not json"
            assert (await client.get("/api/auth/jwks")).status_code == 200  # untouched
            server.reset()
            assert (server.session_requests, server.requests) == (0, 0)
            assert not server.session_request_headers
            assert (await client.get("/auth/session")).json() == session.answer()


def test_session_fixture_belongs_to_the_issuer_fixture(
    betterauth_issuer: Issuer, betterauth_session: TestSession
) -> None:
    assert betterauth_issuer.get_session(betterauth_session.token) == betterauth_session.answer()
    assert betterauth_session.user["role"] == "user"


_BETTER_AUTH_CHECK = """
import { readFileSync } from "node:fs";
import { getCookieCache, getSessionCookie } from "better-auth/cookies";
const cases = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const c of cases) {
  const headers = new Headers({ cookie: c.cookie });
  const payload = await getCookieCache(headers, {
    strategy: "jwt", isSecure: c.secure, jwt: { jwks: c.jwks, issuer: c.issuer },
  });
  results.push({ sid: payload?.sid ?? null, role: payload?.user?.role ?? null,
                 token: getSessionCookie(headers) });
}
console.log(JSON.stringify(results));
"""


@pytest.mark.integration
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_better_auths_own_reader_accepts_the_minted_cookies(alg: str) -> None:
    """Better Auth's ``getCookieCache`` (jwt strategy, JWKS) reads the cookies the kit mints."""
    require_server()
    issuer = Issuer("http://127.0.0.1:3000", alg=alg)
    session = issuer.session(role="admin", bio="\u00e9" * 5000)  # chunked
    cases = []
    for secure in (False, True):
        cookies = issuer.session_cookies(session, secure=secure)
        assert len(cookies) > 2
        cases.append(
            {
                "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
                "secure": secure,
                "jwks": issuer.jwks(),
                "issuer": issuer.base_url,
            }
        )
    node = shutil.which("node")
    assert node is not None
    completed = subprocess.run(
        [node, "--input-type=module", "-e", _BETTER_AUTH_CHECK],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        cwd=SERVER_DIR,
        timeout=60,
        check=True,
    )
    results = json.loads(completed.stdout)
    assert [r["sid"] for r in results] == [session.token, session.token]
    assert [r["role"] for r in results] == ["admin", "admin"]
    assert [r["token"] for r in results] == [session.signed_token, session.signed_token]


def _get_keep_alive(connection: socket.socket, path: str) -> tuple[bytes, bytes]:
    """Send one HTTP/1.1 GET on ``connection`` (left open) and read its status line and body."""
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    reader = connection.makefile("rb")
    status = reader.readline().strip()
    length = 0
    while (line := reader.readline().strip()) != b"":
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)


def test_stop_hangs_up_on_keep_alive_connections(issuer: Issuer) -> None:
    with JWKSServer(issuer) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            status, body = _get_keep_alive(connection, server.path)
            assert status == b"HTTP/1.1 200 OK"
            assert json.loads(body) == issuer.jwks()
            server.stop()
            # The end of the stream, not an answer and not a wait for the timeout.
            assert connection.recv(1) == b""
        assert server.requests == 1


def test_a_stopped_server_starts_again(issuer: Issuer) -> None:
    server = JWKSServer(issuer).start()
    server.stop()
    with server:
        response = httpx.get(server.jwks_url)
    assert response.json() == issuer.jwks()
    assert server.requests == 1
