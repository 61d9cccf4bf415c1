"""Turning JWKs into ready-to-use verification keys.

Each JWK is parsed once, by PyJWT, into a key object of ``cryptography``, and
its signature check is prepared once: that object's ``verify`` with padding and
hash objects built once per algorithm (a JWS ECDSA signature, raw ``r || s``, is
re-encoded as DER first), or for Ed25519 libsodium's when PyNaCl is installed
(:mod:`starlette_betterauth._ed25519`, which also holds the Ed25519 key policy). A
key verifies one algorithm: the one its JWK names or, when it names none, the one of
its type (curves have one; an RSA key is taken as RS256, since PS256 is only ever used
by a key whose JWK says so, as Better Auth's do).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWTError

from ._ed25519 import key_flaw, signature_check
from .errors import KeySetInvalidError

__all__ = [
    "MAX_KEYS",
    "SUPPORTED_ALGORITHMS",
    "KeyRejected",
    "SkippedKey",
    "VerificationKey",
    "parse_jwk",
    "parse_key_set",
]

#: Every algorithm the package can verify. HMAC and ``none`` are never among them.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"})

# (kty, crv) -> the algorithms a JWK of that type may name, and the one it is used
# for when it names none.
_KEY_TYPE_ALGORITHMS: dict[tuple[str, str | None], tuple[frozenset[str], str]] = {
    ("OKP", "Ed25519"): (frozenset({"EdDSA"}), "EdDSA"),
    ("OKP", "Ed448"): (frozenset({"EdDSA"}), "EdDSA"),
    ("EC", "P-256"): (frozenset({"ES256"}), "ES256"),
    ("EC", "P-521"): (frozenset({"ES512"}), "ES512"),
    ("RSA", None): (frozenset({"RS256", "PS256"}), "RS256"),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
# Verification costs grow with the public exponent's length: a 3,000-bit one makes
# each check of a forged token 100x costlier. 65537 (17 bits) is what everyone uses;
# 32 bits is about the bound of BoringSSL (33) and Go (31).
_MAX_RSA_EXPONENT_BITS = 32
#: Keys read from one key set; later entries are skipped.
MAX_KEYS = 100
#: ``(label, reason)`` of a key left out of a key set.
SkippedKey = tuple[str, str]


def _verify_eddsa(key: Any, signing_input: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        return False
    return True


def _ecdsa(hash_algorithm: hashes.HashAlgorithm, size: int) -> Callable[[Any, bytes, bytes], bool]:
    scheme = ec.ECDSA(hash_algorithm)

    def verify(key: Any, signing_input: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * size:
            return False
        der = encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        try:
            key.verify(der, signing_input, scheme)
        except InvalidSignature:
            return False
        return True

    return verify


def _rsa(scheme: padding.AsymmetricPadding) -> Callable[[Any, bytes, bytes], bool]:
    sha256 = hashes.SHA256()

    def verify(key: Any, signing_input: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, signing_input, scheme, sha256)
        except InvalidSignature:
            return False
        return True

    return verify


# alg -> check(public key, signing input, raw JWS signature). The key's curve is
# the algorithm's (parse_jwk pairs them), so ES256 keys are P-256 and ES512 P-521.
_VERIFIERS: dict[str, Callable[[Any, bytes, bytes], bool]] = {
    "EdDSA": _verify_eddsa,
    "ES256": _ecdsa(hashes.SHA256(), 32),
    "ES512": _ecdsa(hashes.SHA512(), 66),
    "RS256": _rsa(padding.PKCS1v15()),
    "PS256": _rsa(padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)),
}


# A modulus from the flawed Infineon generator (ROCA, CVE-2017-15361) is a power of
# 65537 modulo a primorial, so modulo each small prime it lies in the subgroup that
# 65537 generates. A sound modulus passes all these checks with odds of about 4e-9.
_ROCA_PRIMES = tuple(p for p in range(3, 168) if all(p % q for q in range(2, p)))


def _powers_of_65537(prime: int) -> frozenset[int]:
    powers = {1}
    value = 65537 % prime
    while value not in powers:
        powers.add(value)
        value = value * 65537 % prime
    return frozenset(powers)


_ROCA_RESIDUES = tuple((prime, _powers_of_65537(prime)) for prime in _ROCA_PRIMES)


def _has_roca_fingerprint(modulus: int) -> bool:
    return all(modulus % prime in residues for prime, residues in _ROCA_RESIDUES)


class KeyRejected(ValueError):
    """A JWK that cannot be used for verification; the message says why."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key from the key set, parsed once and ready to verify.

    A key verifies one algorithm. ``check(signing_input, signature)`` is its
    signature check, prepared once (built from ``key`` when not given).
    """

    kid: str
    kty: str
    crv: str | None
    algorithms: frozenset[str]
    key: Any
    check: Callable[[bytes, bytes], bool] = field(
        default=None,  # type: ignore[assignment]
        compare=False,
        repr=False,
    )

    def __post_init__(self) -> None:
        if len(self.algorithms) != 1:
            raise ValueError("a VerificationKey verifies exactly one algorithm")
        if self.check is None:
            (alg,) = self.algorithms
            check = (
                signature_check(self.key, libsodium=False)
                if self.kty == "OKP" and self.crv == "Ed25519"
                else partial(_VERIFIERS[alg], self.key)
            )
            object.__setattr__(self, "check", check)

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """Check a signature made with ``alg``, which must be this key's algorithm."""
        if alg not in self.algorithms:
            raise ValueError(f"key {self.kid!r} does not verify {alg}")
        return self.check(signing_input, signature)

    def same_key(self, other: VerificationKey) -> bool:
        """Whether ``other`` is this key: same kid, type, algorithms and public key material."""
        return (self.kid, self.kty, self.crv, self.algorithms) == (
            other.kid,
            other.kty,
            other.crv,
            other.algorithms,
        ) and _public_der(self.key) == _public_der(other.key)


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def parse_jwk(
    jwk: Mapping[str, Any], accepted: frozenset[str], *, libsodium: bool = True
) -> VerificationKey:
    """Build a VerificationKey from a public JWK, or raise KeyRejected with the reason.

    ``libsodium``: check Ed25519 signatures with libsodium when PyNaCl is installed.
    """
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise KeyRejected("it has no kid")
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    if not isinstance(kty, str) or not (crv is None or isinstance(crv, str)):
        raise KeyRejected("kty or crv is not a string")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise KeyRejected("it holds private or symmetric key material")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise KeyRejected(f"its use is {use!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise KeyRejected("its key_ops do not include 'verify'")
    known = _KEY_TYPE_ALGORITHMS.get((kty, crv if kty != "RSA" else None))
    if known is None:
        raise KeyRejected(f"key type {kty!r} with curve {crv!r} is not supported")
    allowed, default = known
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise KeyRejected("its alg is not a string")
    if alg is not None and alg not in allowed:
        raise KeyRejected(f"its alg {alg!r} does not fit key type {kty!r}")
    algorithm = default if alg is None else alg
    if algorithm not in accepted:
        implied = f" (a {kty} key without alg is taken as {default})" if alg is None else ""
        raise KeyRejected(f"none of its algorithms ({algorithm}) is accepted{implied}")
    try:
        key = PyJWK(dict(jwk), algorithm).key
    except PyJWTError as exc:
        raise KeyRejected(f"its members do not form a valid key ({exc})") from exc
    if kty == "RSA" and key.key_size < _MIN_RSA_BITS:
        raise KeyRejected(f"its RSA modulus has {key.key_size} bits, fewer than {_MIN_RSA_BITS}")
    if kty == "RSA":
        numbers = key.public_numbers()
        if numbers.e.bit_length() > _MAX_RSA_EXPONENT_BITS:
            raise KeyRejected(
                f"its RSA public exponent has {numbers.e.bit_length()} bits, "
                f"more than {_MAX_RSA_EXPONENT_BITS} (65537 is usual)"
            )
        if _has_roca_fingerprint(numbers.n):
            raise KeyRejected(
                "its RSA modulus comes from a weak key generator (ROCA, CVE-2017-15361)"
            )
    check: Callable[[bytes, bytes], bool] | None = None
    if crv == "Ed25519" and kty == "OKP":
        flaw = key_flaw(
            key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        if flaw is not None:
            raise KeyRejected(flaw)
        check = signature_check(key, libsodium=libsodium)
    return VerificationKey(
        kid=kid,
        kty=kty,
        crv=crv,
        algorithms=frozenset({algorithm}),
        key=key,
        check=check,  # type: ignore[arg-type]  # None: built by __post_init__
    )


def parse_key_set(
    body: bytes, accepted: frozenset[str], *, libsodium: bool = True
) -> tuple[dict[str, VerificationKey], tuple[SkippedKey, ...]]:
    """Parse a JWKS document into usable keys by kid, and the keys left out with why.

    ``libsodium`` is passed to :func:`parse_jwk`.

    Each unusable member is skipped with its reason (never a crash); a kid
    used twice keeps its first key. Only the first :data:`MAX_KEYS` members are
    read; the others are listed as one skipped entry that counts them.

    Raises:
        KeySetInvalidError: not a JSON object with a ``keys`` list, or no usable key.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise KeySetInvalidError("the key set is not valid JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetInvalidError('the key set is not a JSON object with a "keys" list')
    keys: dict[str, VerificationKey] = {}
    skipped: list[SkippedKey] = []
    listed = document["keys"]
    for index, jwk in enumerate(listed[:MAX_KEYS]):
        label = f"key #{index}"
        try:
            if not isinstance(jwk, dict):
                raise KeyRejected("it is not a JSON object")
            if isinstance(jwk.get("kid"), str):
                label = repr(jwk["kid"][:64])
            key = parse_jwk(jwk, accepted, libsodium=libsodium)
            if key.kid in keys:
                raise KeyRejected("its kid is used by an earlier key")
        except Exception as exc:
            # KeyRejected, or members of shapes no JWK has: skip it, never crash.
            skipped.append((label, str(exc)))
            continue
        keys[key.kid] = key
    if len(listed) > MAX_KEYS:
        left_out = len(listed) - MAX_KEYS
        skipped.append(
            (
                f"keys #{MAX_KEYS}-#{len(listed) - 1}" if left_out > 1 else f"key #{MAX_KEYS}",
                f"the key set lists {len(listed)} keys; only the first {MAX_KEYS} are read "
                f"({left_out} left out)",
            )
        )
    if not keys:
        reasons = "; ".join(f"{label}: {reason}" for label, reason in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise KeySetInvalidError(
            f"the key set has no usable key ({reasons}{more})"
            if skipped
            else "the key set has no usable key (its keys list is empty)"
        )
    return keys, tuple(skipped)
