"""Project Wycheproof's JOSE vectors, run through the verifier and a real key server.

The vectors live in ``tests/vectors/wycheproof/`` (Apache-2.0: see the README and
the license notice there); without them the suite fails (it does not skip). Each
vector's key is served by a loopback :class:`JWKSServer` and read by a
:class:`JWKSCache`; its token goes to :meth:`TokenVerifier.verify_token`.

A Wycheproof payload is opaque bytes (``"foo"``), never a JWT claims set, so the
verifier refuses it before reaching the signature. The verdict therefore has two
steps: the verifier must object to nothing but the payload not being a claims
set; then the same header and signature with an empty claims set (``{}``) must
get as far as the signature check, and the key the cache returned decides the
signature over the original bytes.

A vector *applies* when the package must agree with it: every vector expected
invalid (the package must refuse it, whatever its algorithm) and every vector
expected valid whose token and key algorithms the package supports. The others
(valid HS256, RS384, PS512, ... signatures) are checked to be refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from starlette_betterauth import JWKSCache, KeySetOptions, TokenVerifier
from starlette_betterauth._compact import parse_token
from starlette_betterauth._keys import SUPPORTED_ALGORITHMS
from starlette_betterauth.errors import (
    BetterAuthError,
    InvalidSignatureError,
    MalformedTokenError,
)
from starlette_betterauth.testing import JWKSServer

WYCHEPROOF = Path(__file__).parent / "vectors" / "wycheproof"
FILES = ("json_web_signature_test.json", "json_web_key_test.json", "json_web_crypto_test.json")
# Vector types that hold JWS tokens (the crypto file also has JWE groups).
JWS_TYPES = frozenset({"JsonWebSignature", "JsonWebKey", "JsonWebCrypto"})
# Loading the CA bundle dominates creating an httpx client: do it once.
TLS = ssl.create_default_context()


@dataclass(frozen=True)
class Vector:
    """One Wycheproof JWS case, with the key set a server would publish for it."""

    id: str
    jws: str
    valid: bool
    key_set: dict[str, Any]
    applies: bool


def _segment_json(segment: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        return None


def _applies(jws: str, valid: bool, key_set: dict[str, Any]) -> bool:
    if not valid:
        return True
    header = _segment_json(jws.split(".")[0])
    alg = header.get("alg") if isinstance(header, dict) else None
    key_algs = {key.get("alg") for key in key_set["keys"]} - {None}
    return alg in SUPPORTED_ALGORITHMS and key_algs <= SUPPORTED_ALGORITHMS


def _vectors_of(name: str, document: dict[str, Any]) -> Iterator[Vector]:
    prefix = name.removeprefix("json_web_").removesuffix("_test.json")
    for group in document["testGroups"]:
        if group["type"] not in JWS_TYPES:
            continue
        # The public key when the vector has one; else its only key material (a
        # symmetric or private key), which the package must refuse to use.
        material = group.get("public") or group["private"]
        key_set = material if "keys" in material else {"keys": [material]}
        for test in group["tests"]:
            if "jws" not in test:
                continue
            jws = test["jws"]
            # A JSON-serialized JWS arrives as text in an Authorization header.
            token = jws if isinstance(jws, str) else json.dumps(jws, separators=(",", ":"))
            valid = test["result"] == "valid"
            yield Vector(
                id=f"{prefix}-{test['tcId']}-{test['comment']}",
                jws=token,
                valid=valid,
                key_set=key_set,
                applies=_applies(token, valid, key_set),
            )


def load_vectors() -> list[Vector]:
    """Every JWS vector of the Wycheproof files ([] when the folder is missing)."""
    vectors: list[Vector] = []
    for name in FILES:
        path = WYCHEPROOF / name
        if path.is_file():
            vectors.extend(_vectors_of(name, json.loads(path.read_text("utf-8"))))
    return vectors


VECTORS = load_vectors()


def _payload_refusal(token: str) -> str:
    try:
        parse_token(token)
    except MalformedTokenError as exc:
        return exc.message
    raise AssertionError(f"{token!r} should not parse")


# The verifier's own reasons for "the payload is not a claims set": not JSON,
# JSON but not an object, empty. Header "{}" ("e30") parses; only the payload fails.
PAYLOAD_NOT_CLAIMS = frozenset(
    _payload_refusal(token) for token in ("e30.Zm9v.AA", "e30.W10.AA", "e30..AA")
)


async def signature_verdict(verifier: TokenVerifier, token: str) -> bool:
    """Whether the verifier's pipeline accepts ``token``'s signature (payload aside)."""
    try:
        await verifier.verify_token(token)
    except MalformedTokenError as exc:
        if exc.message not in PAYLOAD_NOT_CLAIMS:
            return False
    except BetterAuthError:
        return False
    else:  # pragma: no cover - no Wycheproof payload is a claims set
        return True
    header_b64, payload_b64, signature_b64 = token.split(".")
    surrogate = f"{header_b64}.e30.{signature_b64}"
    try:
        await verifier.verify_token(surrogate)
    except InvalidSignatureError:
        pass  # every check before the signature passed
    except BetterAuthError:
        return False
    else:  # pragma: no cover - a signature over the real payload cannot fit "{}"
        raise AssertionError("a signature verified over a substituted payload")
    parsed = parse_token(surrogate)
    key = await verifier.jwks.get_key(parsed.header["kid"])
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return key.verify(parsed.header["alg"], signing_input, parsed.signature)


@pytest.fixture(scope="module")
def key_server() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


def test_vectors_are_present() -> None:
    missing = [name for name in FILES if not (WYCHEPROOF / name).is_file()]
    assert not missing, f"Wycheproof vectors missing from {WYCHEPROOF}: {missing}"
    applicable = [v for v in VECTORS if v.applies]
    summary = (
        f"Wycheproof: {len(VECTORS)} JWS vectors, {len(applicable)} applicable "
        f"({sum(v.valid for v in applicable)} valid, {sum(not v.valid for v in applicable)} "
        f"invalid), {len(VECTORS) - len(applicable)} valid with unsupported algorithms"
    )
    print(summary)
    assert len(applicable) > 0, summary
    assert any(v.valid for v in applicable), summary


@pytest.mark.anyio
@pytest.mark.parametrize("vector", VECTORS, ids=[v.id for v in VECTORS])
async def test_vector(key_server: JWKSServer, vector: Vector) -> None:
    key_server.body = json.dumps(vector.key_set).encode("utf-8")
    async with httpx.AsyncClient(verify=TLS) as client:
        cache = JWKSCache(
            key_server.jwks_url, client=client, options=KeySetOptions(refresh_cooldown=0)
        )
        accepted = await signature_verdict(
            TokenVerifier(cache, issuer=None, audience=None), vector.jws
        )
    expected = vector.valid and vector.applies
    assert accepted is expected, (
        f"{vector.id}: expected {'valid' if vector.valid else 'invalid'}"
        + ("" if vector.applies else " (unsupported algorithm: must be refused)")
    )
