"""TokenVerifier: each verification rule, against a real loopback key server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from starlette_betterauth import JWKSCache, KeySetOptions, TokenVerifier
from starlette_betterauth.errors import (
    ConfigurationError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MalformedTokenError,
    OpaqueTokenError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey, b64url

pytestmark = pytest.mark.anyio


@pytest.fixture
async def verifier(server: JWKSServer) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier.for_server(server.url)
    yield verifier
    await verifier.jwks.aclose()


async def test_valid_token_gives_claims(verifier: TokenVerifier, issuer: Issuer) -> None:
    claims = await verifier.verify(issuer.token(user_id="abc", role="user"))
    assert claims["sub"] == "abc"
    assert claims["role"] == "user"
    verified = await verifier.verify_token(issuer.token())
    assert verified.alg == "EdDSA"
    assert verified.kid == issuer.current_key.kid
    assert dict(verified.header) == {"alg": "EdDSA", "kid": issuer.current_key.kid}


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"sig") -> str:
    return f"{b64url(header)}.{b64url(claims)}.{b64url(signature)}"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "HS512", "ES384", "RS512", ""])
async def test_algorithms_outside_the_list_are_refused(
    verifier: TokenVerifier, issuer: Issuer, alg: str
) -> None:
    token = forge({"alg": alg, "kid": issuer.current_key.kid}, issuer.claims())
    with pytest.raises(UnsupportedAlgorithmError):
        await verifier.verify(token)


async def test_token_alg_must_be_the_keys_alg(verifier: TokenVerifier, issuer: Issuer) -> None:
    other = SigningKey("ES256", kid=issuer.current_key.kid)
    with pytest.raises(UnsupportedAlgorithmError, match="not the algorithm of key"):
        await verifier.verify(other.sign(issuer.claims()))


async def test_configured_algorithms_restrict(server: JWKSServer, issuer: Issuer) -> None:
    verifier = TokenVerifier.for_server(server.url, algorithms=["RS256"])
    with pytest.raises(UnsupportedAlgorithmError):
        await verifier.verify(issuer.token())


async def test_rsa_key_without_alg_is_rs256_only() -> None:
    rs = SigningKey("RS256")
    ps_same_key = SigningKey("PS256", kid=rs.kid)
    ps_same_key.private_key = rs.private_key
    issuer = Issuer()
    with JWKSServer(issuer) as server:
        jwk = rs.public_jwk
        del jwk["alg"]
        server.body = json.dumps({"keys": [jwk]}).encode()
        verifier = TokenVerifier.for_server(server.url)
        claims = issuer.claims()
        assert (await verifier.verify(rs.sign(claims)))["sub"] == claims["sub"]
        with pytest.raises(UnsupportedAlgorithmError, match=r"not the algorithm .* \(RS256\)"):
            await verifier.verify(ps_same_key.sign(claims))


async def test_embedded_keys_and_urls_are_ignored(
    verifier: TokenVerifier, issuer: Issuer, server: JWKSServer
) -> None:
    attacker = SigningKey("EdDSA", kid=issuer.current_key.kid)
    header = {"jwk": attacker.public_jwk, "jku": server.jwks_url, "x5u": server.url}
    with pytest.raises(InvalidSignatureError):
        await verifier.verify(attacker.sign(issuer.claims(), header))


async def test_tampered_payload_fails_signature(verifier: TokenVerifier, issuer: Issuer) -> None:
    header, _, signature = issuer.token().split(".")
    forged = f"{header}.{b64url(issuer.claims(role='admin'))}.{signature}"
    with pytest.raises(InvalidSignatureError):
        await verifier.verify(forged)


async def test_unknown_crit_is_refused(verifier: TokenVerifier, issuer: Issuer) -> None:
    with pytest.raises(MalformedTokenError, match="crit"):
        await verifier.verify(issuer.token(header={"crit": ["exp"], "exp": 1}))


async def test_b64_false_is_refused(verifier: TokenVerifier, issuer: Issuer) -> None:
    with pytest.raises(MalformedTokenError, match="b64"):
        await verifier.verify(issuer.token(header={"b64": False}))


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+jwt"])
async def test_jwt_typ_values_pass(verifier: TokenVerifier, issuer: Issuer, typ: str) -> None:
    assert await verifier.verify(issuer.token(header={"typ": typ}))


async def test_other_typ_is_refused(verifier: TokenVerifier, issuer: Issuer) -> None:
    with pytest.raises(InvalidTokenError, match="typ"):
        await verifier.verify(issuer.token(header={"typ": "dpop+jwt"}))


@pytest.mark.parametrize(
    ("kid", "error"),
    [(None, MalformedTokenError), (7, MalformedTokenError), ("x" * 300, MalformedTokenError)],
)
async def test_kid_must_be_a_short_string(
    verifier: TokenVerifier, issuer: Issuer, kid: object, error: type[Exception]
) -> None:
    token = issuer.token(header={"kid": kid})
    with pytest.raises(error):
        await verifier.verify(token)


async def test_unknown_kid_is_refused(server: JWKSServer, issuer: Issuer) -> None:
    verifier = TokenVerifier.for_server(server.url, key_set=KeySetOptions(refresh_cooldown=0.05))
    stranger = SigningKey("EdDSA")
    with pytest.raises(UnknownKeyError):
        await verifier.verify(stranger.sign(issuer.claims()))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "empty"),
        ("abc", "3 dot-separated segments"),
        ("a.b.c.d", "3 dot-separated segments"),
        ("a..c", "payload segment is empty"),
        ("eyJ.e30=.c2ln", "padded"),
        ("eyJ.e3+.c2ln", "alphabet"),
        ("eyJ .e30.c2ln", "alphabet"),
        ("eyJhbGciOiJFZERTQSJ9.e30.c2lnA", "impossible length"),
        ("eyJhbGciOiJFZERTQSJ9.e31.c2ln", "non-zero trailing bits"),
        (f"{b64url('nope')}.e30.c2ln", "not valid UTF-8 JSON"),
        (f"{b64url('[1]')}.e30.c2ln", "not a JSON object"),
        (f"{b64url(bytes([0xFF, 0xFE]))}.e30.c2ln", "not valid UTF-8 JSON"),
        (b64url('{"a":1,"a":2}') + ".e30.c2ln", "duplicate"),
        (b64url('{"a":NaN}') + ".e30.c2ln", "NaN"),
        ("a" * 20000, "longer than"),
        (f"{'e' * 2000}.e30.c2ln", "header is longer"),
    ],
)
async def test_malformed_compact_forms(verifier: TokenVerifier, token: str, reason: str) -> None:
    with pytest.raises(MalformedTokenError, match=reason):
        await verifier.verify(token)


async def test_opaque_session_token_has_its_own_reason(verifier: TokenVerifier) -> None:
    session = "7E3wGHXlmP2MgwRF3DRQMxU0QVChzZTX.92gDPwEDUminkEKqyytvp6KpE6CtxSxBC6iOcqMsGvQ="
    with pytest.raises(OpaqueTokenError, match="session token, not a JWT"):
        await verifier.verify(session)


async def test_exp_is_required(verifier: TokenVerifier, issuer: Issuer) -> None:
    with pytest.raises(InvalidClaimError, match="exp claim is missing"):
        await verifier.verify(issuer.token(exp=None))


async def test_require_exp_opt_out(server: JWKSServer, issuer: Issuer) -> None:
    verifier = TokenVerifier.for_server(server.url, require_exp=False)
    assert await verifier.verify(issuer.token(exp=None))


@pytest.mark.parametrize("exp", ["9999999999", True, [1], {"t": 1}, 1e300, -5])
async def test_exp_must_be_a_numeric_date(
    verifier: TokenVerifier, issuer: Issuer, exp: object
) -> None:
    with pytest.raises(InvalidClaimError):
        await verifier.verify(issuer.token(exp=exp))


async def test_expired_and_leeway(server: JWKSServer, issuer: Issuer) -> None:
    strict = TokenVerifier.for_server(server.url, leeway=0)
    lenient = TokenVerifier.for_server(server.url, leeway=30)
    token = issuer.token(issued_at=time.time() - 920)  # expired 20 s ago
    with pytest.raises(ExpiredTokenError):
        await strict.verify(token)
    assert await lenient.verify(token)


async def test_nbf_in_the_future(verifier: TokenVerifier, issuer: Issuer) -> None:
    with pytest.raises(ImmatureTokenError, match="nbf"):
        await verifier.verify(issuer.token(nbf=int(time.time()) + 120))
    assert await verifier.verify(issuer.token(nbf=int(time.time()) - 1))


async def test_iat_in_the_future(verifier: TokenVerifier, issuer: Issuer) -> None:
    with pytest.raises(ImmatureTokenError, match="issued in the future"):
        await verifier.verify(issuer.token(issued_at=time.time() + 600))


@pytest.mark.parametrize("iss", ["{base}/", "{base}/x", "HTTP://{host}", "", None, 5, ["{base}"]])
async def test_issuer_must_match_exactly(
    verifier: TokenVerifier, issuer: Issuer, server: JWKSServer, iss: object
) -> None:
    if isinstance(iss, str):
        iss = iss.format(base=server.url, host=server.url.removeprefix("http://"))
    token = issuer.token(iss=iss) if iss is not None else issuer.token(iss=None)
    with pytest.raises(InvalidIssuerError):
        await verifier.verify(token)


async def test_issuer_mismatch_message_names_both(verifier: TokenVerifier, issuer: Issuer) -> None:
    with pytest.raises(InvalidIssuerError, match="but the expected issuer is"):
        await verifier.verify(issuer.token(iss="https://elsewhere.example"))


@pytest.mark.parametrize("aud", ["{base}/", "other", [], ["other"], 5, None, [5]])
async def test_audience_must_be_accepted(
    verifier: TokenVerifier, issuer: Issuer, server: JWKSServer, aud: object
) -> None:
    if isinstance(aud, str):
        aud = aud.format(base=server.url)
    with pytest.raises(InvalidAudienceError):
        await verifier.verify(issuer.token(aud=aud))


async def test_audience_list_in_token(
    verifier: TokenVerifier, issuer: Issuer, server: JWKSServer
) -> None:
    assert await verifier.verify(issuer.token(aud=["x", server.url]))


async def test_issuer_and_audience_opt_outs(server: JWKSServer, issuer: Issuer) -> None:
    verifier = TokenVerifier.for_server(server.url, verify_issuer=False, verify_audience=False)
    assert await verifier.verify(issuer.token(iss="anything", aud=None))


@pytest.mark.parametrize("sub", [None, "", 42])
async def test_sub_is_required(verifier: TokenVerifier, issuer: Issuer, sub: object) -> None:
    token = issuer.token(sub=sub) if sub is not None else issuer.token(sub=None)
    with pytest.raises(InvalidClaimError, match="sub"):
        await verifier.verify(token)


def test_bad_settings_are_configuration_errors() -> None:
    cache = JWKSCache("https://a.example/jwks")
    with pytest.raises(ConfigurationError):
        TokenVerifier(cache, issuer="x", audience="y", algorithms=["HS256"])
    with pytest.raises(ConfigurationError):
        TokenVerifier(cache, issuer="x", audience="y", leeway=-1)
    with pytest.raises(ConfigurationError):
        TokenVerifier.for_server(jwks_url="https://a.example/jwks", issuer="x")


@pytest.mark.parametrize(("issuer", "audience"), [("", "api"), ("iss", ""), ("iss", [])])
def test_empty_issuer_or_audience_is_a_configuration_error(
    issuer: str, audience: str | list[str]
) -> None:
    with pytest.raises(ConfigurationError):
        TokenVerifier(JWKSCache("https://a.example/jwks"), issuer=issuer, audience=audience)
