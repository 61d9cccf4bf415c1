"""``_keys.parse_jwk``: which JWKs become verification keys, and what those keys verify."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from starlette_betterauth._keys import (
    SUPPORTED_ALGORITHMS,
    KeyRejected,
    VerificationKey,
    parse_jwk,
)
from starlette_betterauth.testing import ALGORITHMS, SigningKey, b64url

MESSAGE = b"header.payload"
KEY_TYPES = {"EdDSA": "OKP", "ES256": "EC", "ES512": "EC", "RS256": "RSA", "PS256": "RSA"}


@cache
def signing_key(alg: str) -> SigningKey:
    """One key per algorithm for the module (RSA keys are slow to generate)."""
    return SigningKey(alg, kid=f"kid-{alg}")


def jwk(alg: str = "ES256", /, **changes: Any) -> dict[str, Any]:
    """The public JWK of ``alg``'s key with ``changes`` (a member given as None is removed)."""
    members = signing_key(alg).public_jwk | changes
    return {name: value for name, value in members.items() if value is not None}


def rejection(members: dict[str, Any], accepted: frozenset[str] = SUPPORTED_ALGORITHMS) -> str:
    with pytest.raises(KeyRejected) as rejected:
        parse_jwk(members, accepted)
    return str(rejected.value)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_public_jwk_becomes_a_key_for_its_algorithm(alg: str) -> None:
    key = parse_jwk(jwk(alg), SUPPORTED_ALGORITHMS)
    assert isinstance(key, VerificationKey)
    assert (key.kid, key.kty, key.algorithms) == (f"kid-{alg}", KEY_TYPES[alg], frozenset({alg}))


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_the_key_verifies_its_own_signature(alg: str) -> None:
    key = parse_jwk(jwk(alg), SUPPORTED_ALGORITHMS)
    assert key.verify(alg, MESSAGE, signing_key(alg).sign_bytes(MESSAGE))


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_the_key_refuses_a_signature_of_other_bytes(alg: str) -> None:
    key = parse_jwk(jwk(alg), SUPPORTED_ALGORITHMS)
    assert not key.verify(alg, MESSAGE + b"!", signing_key(alg).sign_bytes(MESSAGE))


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_the_key_refuses_another_keys_signature(alg: str) -> None:
    key = parse_jwk(jwk(alg), SUPPORTED_ALGORITHMS)
    assert not key.verify(alg, MESSAGE, SigningKey(alg).sign_bytes(MESSAGE))


@pytest.mark.parametrize("change", [lambda s: s[:-1], lambda s: s + b"\0", lambda s: b""])
def test_an_ecdsa_signature_of_the_wrong_length_is_refused(
    change: Callable[[bytes], bytes],
) -> None:
    key = parse_jwk(jwk("ES256"), SUPPORTED_ALGORITHMS)
    assert not key.verify("ES256", MESSAGE, change(signing_key("ES256").sign_bytes(MESSAGE)))


def test_an_rsa_key_without_alg_verifies_rs256_only() -> None:
    key = parse_jwk(jwk("RS256", alg=None), SUPPORTED_ALGORITHMS)
    assert key.algorithms == {"RS256"}


def test_an_rsa_key_without_alg_is_refused_where_rs256_is_not_accepted() -> None:
    with pytest.raises(KeyRejected, match=r"a RSA key without alg is taken as RS256"):
        parse_jwk(jwk("RS256", alg=None), frozenset({"PS256", "EdDSA"}))


def test_an_ed448_key_verifies_eddsa() -> None:
    private = ed448.Ed448PrivateKey.generate()
    members = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True) | {"kid": "ed448"}
    key = parse_jwk(members, SUPPORTED_ALGORITHMS)
    assert (key.crv, key.algorithms) == ("Ed448", frozenset({"EdDSA"}))
    assert key.verify("EdDSA", MESSAGE, private.sign(MESSAGE))


@pytest.mark.parametrize(("alg", "crv"), [("EdDSA", "Ed25519"), ("ES256", "P-256")])
def test_the_curve_is_kept(alg: str, crv: str) -> None:
    assert parse_jwk(jwk(alg), SUPPORTED_ALGORITHMS).crv == crv


@pytest.mark.parametrize("use", ["sig", None])
def test_use_sig_or_no_use_is_accepted(use: str | None) -> None:
    assert parse_jwk(jwk(use=use), SUPPORTED_ALGORITHMS).kid == "kid-ES256"


@pytest.mark.parametrize("key_ops", [["verify"], ["sign", "verify"], None])
def test_key_ops_with_verify_or_none_are_accepted(key_ops: list[str] | None) -> None:
    assert parse_jwk(jwk(key_ops=key_ops), SUPPORTED_ALGORITHMS).kid == "kid-ES256"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"kid": None}, "it has no kid"),
        ({"kid": ""}, "it has no kid"),
        ({"kid": 7}, "it has no kid"),
        ({"kty": 1}, "kty or crv is not a string"),
        ({"crv": ["P-256"]}, "kty or crv is not a string"),
        ({"d": "AA"}, "it holds private or symmetric key material"),
        ({"k": "AA"}, "it holds private or symmetric key material"),
        ({"use": "enc"}, "its use is 'enc', not 'sig'"),
        ({"key_ops": ["encrypt"]}, "its key_ops do not include 'verify'"),
        ({"key_ops": "verify"}, "its key_ops do not include 'verify'"),
        ({"crv": "P-384"}, "key type 'EC' with curve 'P-384' is not supported"),
        ({"kty": "oct"}, "key type 'oct' with curve 'P-256' is not supported"),
        ({"alg": 256}, "its alg is not a string"),
        ({"alg": "RS256"}, "its alg 'RS256' does not fit key type 'EC'"),
        ({"alg": "ES512"}, "its alg 'ES512' does not fit key type 'EC'"),
        ({"alg": "HS256"}, "its alg 'HS256' does not fit key type 'EC'"),
        ({"alg": "none"}, "its alg 'none' does not fit key type 'EC'"),
    ],
)
def test_unusable_jwks_are_rejected_with_the_reason(changes: dict[str, Any], reason: str) -> None:
    assert rejection(jwk("ES256", **changes)) == reason


def test_a_key_whose_algorithm_is_not_accepted_is_rejected() -> None:
    reason = rejection(jwk("ES256"), frozenset({"EdDSA"}))
    assert reason == "none of its algorithms (ES256) is accepted"


def test_members_that_form_no_key_are_rejected() -> None:
    reason = rejection(jwk("ES256", x="AA", y="AA"))
    assert reason.startswith("its members do not form a valid key (")


def test_an_rsa_key_below_2048_bits_is_rejected() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    members = RSAAlgorithm.to_jwk(small, as_dict=True) | {"kid": "small", "alg": "RS256"}
    assert rejection(members) == "its RSA modulus has 1024 bits, fewer than 2048"


def _unsigned(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def test_an_rsa_modulus_with_the_roca_fingerprint_is_rejected() -> None:
    # A power of 65537 has the fingerprint modulo every prime (2049 bits here).
    members = {"kty": "RSA", "kid": "roca", "n": _unsigned(65537**128), "e": "AQAB"}
    assert rejection(members) == (
        "its RSA modulus comes from a weak key generator (ROCA, CVE-2017-15361)"
    )


def test_a_rejection_is_a_value_error() -> None:
    assert issubclass(KeyRejected, ValueError)
