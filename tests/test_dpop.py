"""DPoP (RFC 9449): the proof checks of _dpop, and sender-constrained tokens through the middleware.

Proofs are minted by the testing kit's DPoPKey; tokens by the Issuer, served by
the loopback JWKSServer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from _serving import denial, websocket_session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from starlette_betterauth import BetterAuthMiddleware
from starlette_betterauth._dpop import (
    DPoPVerifier,
    ReplayCache,
    access_token_hash,
    jwk_thumbprint,
    normalize_htu,
)
from starlette_betterauth.credentials import AccessToken, BearerJWT
from starlette_betterauth.errors import ConfigurationError, InvalidDPoPProofError
from starlette_betterauth.testing import DPoPKey, Issuer, JWKSServer, SigningKey, b64url

API = "http://testserver"
URL = f"{API}/me"


# -- the proof checks, without an app ------------------------------------------------------


def test_thumbprint_is_rfc_7638() -> None:
    # RFC 7638 section 3.1's example key and thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
            "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
            "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWh"
            "AI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    with pytest.raises(ValueError, match="no thumbprint"):
        jwk_thumbprint({"kty": "oct", "k": "c2VjcmV0"})
    with pytest.raises(ValueError, match="missing"):
        jwk_thumbprint({"kty": "OKP", "crv": "Ed25519"})


def test_ath_is_the_base64url_sha256_of_the_token() -> None:
    # RFC 9449 section 7.1's example: token "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU".
    assert (
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
        == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://API.example.com:443/a/b?q=1#f", "https://api.example.com/a/b"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com:8080/%7Euser", "http://example.com:8080/~user"),
        ("HTTP://[::1]:80/x", "http://[::1]/x"),
    ],
)
def test_htu_normalization(url: str, normalized: str) -> None:
    assert normalize_htu(url) == normalized


@pytest.mark.parametrize("url", ["ftp://example.com/x", "/relative", "http://:80/x"])
def test_htu_must_be_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        normalize_htu(url)


@pytest.fixture
def key() -> DPoPKey:
    return DPoPKey()


def check(verifier: DPoPVerifier, proof: str | None, key: DPoPKey, **overrides: Any) -> None:
    options: dict[str, Any] = {"method": "GET", "url": URL, "token": "the-token", "jkt": key.jkt}
    options.update(overrides)
    verifier.verify(proof, **options)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "ES512", "RS256", "PS256"])
def test_a_fresh_proof_of_each_algorithm_passes_once(alg: str) -> None:
    key = DPoPKey(alg)
    verifier = DPoPVerifier()
    proof = key.proof("GET", URL, token="the-token")
    check(verifier, proof, key)
    with pytest.raises(InvalidDPoPProofError, match="used before"):
        check(verifier, proof, key)


def _refusal(verifier: DPoPVerifier, proof: str | None, key: DPoPKey, **overrides: Any) -> str:
    with pytest.raises(InvalidDPoPProofError) as refused:
        check(verifier, proof, key, **overrides)
    assert refused.value.error_code == "invalid_dpop_proof"
    assert "the-token" not in refused.value.message
    return refused.value.message


def _signed(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    return f"{signing_input}.{b64url(key.sign_bytes(signing_input.encode()))}"


def test_each_broken_rule_is_named(key: DPoPKey) -> None:
    verifier = DPoPVerifier(max_age=60)
    now = time.time()
    cases = {
        "no DPoP header": None,
        "not a JWT": "A" * 32,
        "3 dot-separated segments": "abc",
        "malformed": "a.b.c",
        "typ": key.proof("GET", URL, token="the-token", header={"typ": "JWT"}),
        "alg 'HS256' is not accepted": key.proof(
            "GET", URL, token="the-token", header={"alg": "HS256"}
        ),
        "crit": key.proof("GET", URL, token="the-token", header={"crit": ["exp"]}),
        "no jwk": key.proof("GET", URL, token="the-token", header={"jwk": None}),
        "private or symmetric": key.proof(
            "GET", URL, token="the-token", header={"jwk": {**key.jwk, "d": "AAAA"}}
        ),
        "signature does not verify": key.proof(
            "GET", URL, token="the-token", header={"jwk": DPoPKey().jwk}
        ),
        "needs htm, htu and jti": key.proof("GET", URL, token="the-token", htm=None),
        "iat": key.proof("GET", URL, token="the-token", iat="now"),
        "jti is too long": key.proof("GET", URL, token="the-token", jti="j" * 513),
        "for 'POST' requests": key.proof("POST", URL, token="the-token"),
        "is not this request's URL": key.proof("GET", f"{API}/other", token="the-token"),
        "htu is not an http(s) URL": key.proof("GET", "/me", token="the-token"),
        "issued in the future": key.proof(
            "GET", URL, token="the-token", issued_at=now + 60, jti="future"
        ),
        "older than 60 s": key.proof("GET", URL, token="the-token", issued_at=now - 61),
        "has no ath": key.proof("GET", URL),
        "ath is not the hash": key.proof("GET", URL, token="another-token"),
    }
    for reason, proof in cases.items():
        assert reason in _refusal(verifier, proof, key), reason
    for jwk in ({"kty": ["EC"]}, {"kty": "EC", "crv": "P-256", "x": 1, "y": 2}, {"kty": "oct"}):
        proof = key.proof("GET", URL, token="the-token", header={"jwk": jwk})
        assert "jwk" in _refusal(verifier, proof, key)
    for htu in ("http://[::1", "http://a:99999/x", 5):
        proof = key.proof("GET", URL, token="the-token", htu=htu)
        assert "htu" in _refusal(verifier, proof, key)
    other = DPoPKey()
    assert "another key" in _refusal(verifier, other.proof("GET", URL, token="the-token"), key)


def test_an_rsa_jwk_of_1024_bits_is_not_usable() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    signing = SigningKey("RS256")
    signing.private_key = private
    proof = _signed(
        signing,
        {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk},
        {"htm": "GET", "htu": URL, "jti": "j", "iat": int(time.time())},
    )
    key = DPoPKey()
    assert "jwk is not usable" in _refusal(DPoPVerifier(), proof, key)


def test_proof_algorithms_can_be_narrowed(key: DPoPKey) -> None:
    verifier = DPoPVerifier(algorithms=["EdDSA"])
    assert verifier.algs == ("EdDSA",)
    assert "ES256" in _refusal(verifier, key.proof("GET", URL, token="the-token"), key)


def test_public_origin_replaces_the_scheme_and_host_the_app_sees() -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "scheme": "http",
        "path": "/v1/me",
        "headers": [(b"host", b"internal:8000")],
        "server": ("10.0.0.1", 8000),
        "query_string": b"a=1",
    }
    assert DPoPVerifier().request_url(scope) == "http://internal:8000/v1/me"
    behind = DPoPVerifier(public_origin="https://API.example.com")
    assert behind.request_url(scope) == "https://api.example.com/v1/me"
    websocket = {**scope, "type": "websocket", "scheme": "wss", "headers": []}
    assert DPoPVerifier().request_url(websocket) == "https://10.0.0.1:8000/v1/me"
    for host in (b"[::1", b"a:99999", b"\xff"):
        odd = {**scope, "headers": [(b"host", host)], "server": None}
        assert DPoPVerifier().request_url(odd).startswith("http://")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_age": 0}, "dpop_max_age must be a positive"),
        ({"max_age": 7200}, "at most 3600"),
        ({"replay_cache_size": 0}, "dpop_replay_cache_size"),
        ({"public_origin": "https://api.example.com/v1"}, "scheme://host"),
        ({"public_origin": "api.example.com"}, "public_origin"),
        ({"algorithms": ["HS256"]}, "algorithms"),
    ],
)
def test_bad_settings_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DPoPVerifier(**options)


def test_the_replay_cache_is_bounded_and_narrows_its_window_when_full() -> None:
    cache = ReplayCache(2)
    now = time.time()
    assert cache.reserve(b"a", now - 3, now + 100) is None
    assert cache.reserve(b"b", now - 2, now + 100) is None
    assert cache.reserve(b"a", now - 3, now + 100) is not None  # a replay
    assert cache.reserve(b"c", now - 1, now + 100) is None  # evicts "a"
    assert len(cache) == 2
    refusal = cache.reserve(b"a", now - 3, now + 100)  # "a" again: its iat is too old now
    assert refusal is not None
    assert "older than the proofs" in refusal
    assert cache.reserve(b"d", now, now + 100) is None  # fresh proofs still pass
    # Entries past their proof's lifetime leave first, without narrowing the window.
    lasting = ReplayCache(3)
    assert lasting.reserve(b"x", now - 10, now - 1) is None
    assert lasting.reserve(b"y", now, now + 100) is None
    assert lasting.reserve(b"z", now, now + 100) is None
    assert len(lasting) == 2
    assert lasting.reserve(b"x", now - 10, now + 100) is None  # x's lifetime was over


# -- through the middleware -------------------------------------------------------------------


async def me(request: Request) -> JSONResponse:
    user = request.state.user
    return JSONResponse({"id": user.id, "kind": user.kind, "jkt": user.dpop_jkt})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.user.identity)
    await websocket.close()


def make_app(server: JWKSServer, **options: Any) -> BetterAuthMiddleware:
    app = Starlette(routes=[Route("/me", me, methods=["GET", "POST"]), WebSocketRoute("/ws", echo)])
    options.setdefault("accept", [BearerJWT(), AccessToken(resource=API)])
    return BetterAuthMiddleware(app, base_url=server.url, **options)


@pytest.fixture
async def client(server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(server)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as c:
            yield c
    finally:
        await app.aclose()


def dpop(token: str, proof: str | None) -> dict[str, str]:
    headers = {"authorization": f"DPoP {token}"}
    if proof is not None:
        headers["dpop"] = proof
    return headers


@pytest.mark.anyio
async def test_a_bound_token_with_fresh_proofs(
    client: httpx.AsyncClient, issuer: Issuer, key: DPoPKey
) -> None:
    token = issuer.access_token(scope="read", audience=API, dpop_key=key)
    for method in ("GET", "POST", "GET"):
        proof = key.proof(method, URL, token=token)
        response = await client.request(method, "/me", headers=dpop(token, proof))
        assert response.status_code == 200, response.text
    assert response.json()["jkt"] == key.jkt


@pytest.mark.anyio
async def test_refusals_carry_the_dpop_challenge(
    client: httpx.AsyncClient, issuer: Issuer, key: DPoPKey
) -> None:
    token = issuer.access_token(scope="read", audience=API, dpop_key=key)
    proof = key.proof("GET", URL, token=token)
    assert (await client.get("/me", headers=dpop(token, proof))).status_code == 200
    cases = {
        "replayed": (dpop(token, proof), "used before"),
        "wrong htu": (dpop(token, key.proof("GET", f"{API}/ws", token=token)), "htu"),
        "another key": (dpop(token, DPoPKey().proof("GET", URL, token=token)), "another key"),
        "no proof": (dpop(token, None), "no DPoP header"),
    }
    for case, (headers, reason) in cases.items():
        response = await client.get("/me", headers=headers)
        assert response.status_code == 401, case
        assert reason in response.json()["error_description"], case
        challenges = response.headers.get_list("www-authenticate")
        assert challenges[0] == (
            'Bearer resource_metadata="http://testserver/.well-known/oauth-protected-resource"'
        )
        assert challenges[1].startswith(
            'DPoP algs="ES256 ES512 EdDSA PS256 RS256", error="invalid_dpop_proof", '
        ), case


@pytest.mark.anyio
async def test_bound_tokens_are_never_bearer_tokens_for_any_kind(
    client: httpx.AsyncClient, issuer: Issuer, key: DPoPKey
) -> None:
    access = issuer.access_token(scope="read", audience=API, dpop_key=key)
    session_jwt = issuer.token(cnf={"jkt": key.jkt})
    for token in (access, session_jwt, access):  # the last one from the token cache
        response = await client.get("/me", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["error_description"] == (
            "the token is bound to a DPoP key (cnf.jkt): send it as Authorization: DPoP "
            "with a DPoP proof, not as Bearer"
        )
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.anyio
async def test_a_sole_bearer_jwt_kind_refuses_bound_tokens_too(
    server: JWKSServer, issuer: Issuer, key: DPoPKey
) -> None:
    app = make_app(server, accept=None)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as c:
            bound = issuer.token(cnf={"jkt": key.jkt})
            refused = await c.get("/me", headers={"authorization": f"Bearer {bound}"})
            assert refused.status_code == 401
            assert "cnf.jkt" in refused.json()["error_description"]
            mtls = issuer.token(cnf={"x5t#S256": "abc"})
            refused = await c.get("/me", headers={"authorization": f"Bearer {mtls}"})
            assert "only DPoP bindings" in refused.json()["error_description"]
            plain = issuer.token()
            refused = await c.get("/me", headers=dpop(plain, key.proof("GET", URL, token=plain)))
            assert refused.status_code == 401
            assert refused.json() == {
                "error": "invalid_request",
                "error_description": "the DPoP authorization scheme is not accepted here (only "
                "AccessToken(dpop=True) takes it): send the token as Bearer",
            }
    finally:
        await app.aclose()


@pytest.mark.anyio
async def test_an_unbound_token_is_refused_with_the_dpop_scheme(
    client: httpx.AsyncClient, issuer: Issuer, key: DPoPKey
) -> None:
    token = issuer.access_token(scope="read", audience=API)
    response = await client.get("/me", headers=dpop(token, key.proof("GET", URL, token=token)))
    assert response.status_code == 401
    assert "needs a DPoP-bound token" in response.json()["error_description"]
    assert response.headers.get_list("www-authenticate")[1].startswith(
        'DPoP algs="ES256 ES512 EdDSA PS256 RS256", error="invalid_token"'
    )


@pytest.mark.anyio
async def test_dpop_can_be_switched_off(server: JWKSServer, issuer: Issuer, key: DPoPKey) -> None:
    app = make_app(server, accept=[AccessToken(resource=API, dpop=False)])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as c:
            token = issuer.access_token(scope="read", audience=API, dpop_key=key)
            response = await c.get("/me", headers=dpop(token, key.proof("GET", URL, token=token)))
            assert response.status_code == 401
            assert "DPoP authorization scheme is not accepted" in response.text
            assert "DPoP algs" not in response.headers["www-authenticate"]
    finally:
        await app.aclose()
    with pytest.raises(ConfigurationError, match="public_origin only serves DPoP"):
        make_app(server, accept=[AccessToken(resource=API, dpop=False, public_origin=API)])


@pytest.mark.anyio
async def test_a_websocket_handshake_with_a_proof(
    server: JWKSServer, issuer: Issuer, key: DPoPKey
) -> None:
    app = make_app(server)
    token = issuer.access_token(scope="read", audience=API, user_id="u1", dpop_key=key)
    proof = key.proof("GET", "http://testserver/ws", token=token)
    headers = [(b"authorization", f"DPoP {token}".encode()), (b"dpop", proof.encode())]
    try:
        sent = await websocket_session(app, "/ws", headers=headers)
        kinds = [message["type"] for message in sent]
        assert kinds == ["websocket.accept", "websocket.send", "websocket.close"]
        assert sent[1]["text"] == "u1"
        sent = await websocket_session(app, "/ws", headers=headers)  # the same proof again
        status, _, body = denial(sent)
        assert status == 401
        assert b"used before" in body
    finally:
        await app.aclose()


@pytest.mark.anyio
async def test_the_dpop_header_is_read_once(
    client: httpx.AsyncClient, issuer: Issuer, key: DPoPKey
) -> None:
    token = issuer.access_token(scope="read", audience=API, dpop_key=key)
    proof = key.proof("GET", URL, token=token)
    headers = [("authorization", f"DPoP {token}"), ("dpop", proof), ("dpop", proof)]
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error_description"] == "more than one DPoP header"
    oversized = [("authorization", f"DPoP {token}"), ("dpop", "x" * 9000)]
    response = await client.get("/me", headers=oversized)
    assert response.json()["error_description"] == "the DPoP header is too long"
    empty = await client.get("/me", headers={"authorization": "DPoP "})
    assert empty.json()["error_description"] == "the DPoP token is empty"
