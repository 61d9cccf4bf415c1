"""Turning JWKs into ready-to-use verification keys.

Each JWK is parsed once, by PyJWT, into a key object of ``cryptography``; the
signature check itself is PyJWT's algorithm over that object. A key verifies only
the algorithm its JWK names or, when it names none, the ones its type allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWTError

__all__ = ["SUPPORTED_ALGORITHMS", "KeyRejected", "VerificationKey", "parse_jwk"]

#: Every algorithm the package can verify. HMAC and ``none`` are never among them.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"})

_CURVE_ALGORITHMS = {
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("RSA", None): frozenset({"RS256", "PS256"}),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
_ALGORITHMS: dict[str, Algorithm] = {
    name: algorithm
    for name, algorithm in get_default_algorithms().items()
    if name in SUPPORTED_ALGORITHMS
}


class KeyRejected(ValueError):
    """A JWK that cannot be used for verification; the message says why."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key from the key set, parsed once and ready to verify."""

    kid: str
    kty: str
    crv: str | None
    algorithms: frozenset[str]
    key: Any

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """Check a signature made with ``alg``, which must be one of this key's algorithms."""
        return _ALGORITHMS[alg].verify(signing_input, self.key, signature)


def parse_jwk(jwk: Mapping[str, Any], accepted: frozenset[str]) -> VerificationKey:
    """Build a VerificationKey from a public JWK, or raise KeyRejected with the reason."""
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
    allowed = _CURVE_ALGORITHMS.get((kty, crv if kty != "RSA" else None))
    if allowed is None:
        raise KeyRejected(f"key type {kty!r} with curve {crv!r} is not supported")
    alg = jwk.get("alg")
    if alg is not None:
        if alg not in allowed:
            raise KeyRejected(f"its alg {alg!r} does not fit key type {kty!r}")
        allowed = frozenset({alg})
    if not allowed & accepted:
        raise KeyRejected(f"none of its algorithms ({', '.join(sorted(allowed))}) is accepted")
    allowed &= accepted
    try:
        key = PyJWK(dict(jwk), next(iter(sorted(allowed)))).key
    except PyJWTError as exc:
        raise KeyRejected(f"its members do not form a valid key ({exc})") from exc
    if kty == "RSA" and key.key_size < _MIN_RSA_BITS:
        raise KeyRejected(f"its RSA modulus has {key.key_size} bits, fewer than {_MIN_RSA_BITS}")
    return VerificationKey(kid=kid, kty=kty, crv=crv, algorithms=allowed, key=key)
