"""Hostile tokens and Authorization headers, through HTTP to an app behind the middleware.

Every case must be answered 401 with an RFC 6750 ``WWW-Authenticate`` challenge:
never 200, never 500, and neither the body, the challenge nor any log line may
repeat the token. The key set comes from a real loopback :class:`JWKSServer`; a
second one, the attacker's, serves the rogue keys that ``jku``/``x5u`` headers
point at and must never be asked for anything.

Case ids read ``category/variant/...``; one test id per case.
"""

from __future__ import annotations

import base64
import datetime
import functools
import gzip
import hashlib
import hmac
import json
import logging
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from _helpers import asgi_client, guarded_app, whoami
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from starlette_betterauth import BetterAuthMiddleware, KeySetOptions, requires_role
from starlette_betterauth._compact import MAX_HEADER_LENGTH, MAX_TOKEN_LENGTH
from starlette_betterauth._headers import MAX_AUTHORIZATION_LENGTH
from starlette_betterauth.testing import ALGORITHMS, Issuer, JWKSServer, SigningKey, b64url

# Loading the CA bundle dominates creating an httpx client: do it once.
TLS = ssl.create_default_context()
JWKS_PATH = "/api/auth/jwks"
# RFC 6750 section 3: the challenge, with an error code for every presented token.
CHALLENGE = re.compile(
    r'Bearer error="(invalid_token|invalid_request)", error_description="[\x20-\x7e]*"'
)

# Curve orders and field primes, for out-of-range signature components.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P521_N = int(
    "01" + "FF" * 32 + "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16
)
P521_P = 2**521 - 1
ED25519_L = 2**252 + 27742317777372353535851937790883648493
ED25519_P = 2**255 - 19
HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


@dataclass
class World:
    """The keys, servers and identities every case is built from."""

    issuer: Issuer
    keys: dict[str, SigningKey]  # by algorithm, all published by ``server``
    rogue: dict[str, SigningKey]  # same algorithms, published only by ``attacker``
    rogue_cert: x509.Certificate  # self-signed, for the rogue ES256 key
    server: JWKSServer
    attacker: JWKSServer

    @property
    def base(self) -> str:
        """The Better Auth base URL: ``iss`` and ``aud`` of genuine tokens."""
        return self.server.url

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Genuine claims; a keyword given as None removes that claim."""
        return self.issuer.claims(**overrides)

    def token(self, alg: str = "EdDSA", **overrides: Any) -> str:
        """A genuine token signed by the published key of ``alg``."""
        return self.issuer.token(key=self.keys[alg], **overrides)


@dataclass(frozen=True)
class Attack:
    """The Authorization headers of one request, and what must not be echoed."""

    headers: list[tuple[bytes, bytes]]
    secrets: tuple[str, ...]


Build = Callable[[World], "Attack | str"]
CASES: dict[str, Build] = {}
MISSING = object()  # a header member left out


def add(name: str, build: Build) -> None:
    assert name not in CASES, f"duplicate case {name}"
    CASES[name] = build


def seg(part: Mapping[str, Any] | bytes | str) -> str:
    """A segment from a JSON object, raw bytes, or text used as the segment itself."""
    if isinstance(part, str):
        return part
    return b64url(part)


def forge(
    header: Mapping[str, Any] | bytes | str,
    payload: Mapping[str, Any] | bytes | str,
    signer: SigningKey | bytes | Callable[[bytes], bytes],
) -> str:
    """A compact JWS whose signature is made by ``signer`` (or is the given bytes)."""
    signing_input = f"{seg(header)}.{seg(payload)}"
    if isinstance(signer, SigningKey):
        signature = signer.sign_bytes(signing_input.encode("ascii"))
    elif isinstance(signer, bytes):
        signature = signer
    else:
        signature = signer(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def header_of(key: SigningKey, **members: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": key.alg, "kid": key.kid}
    for name, value in members.items():
        if value is MISSING:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def bearer(token: str) -> Attack:
    return Attack([(b"authorization", b"Bearer " + token.encode("latin-1"))], (token,))


def raw_json(text: str) -> bytes:
    return text.encode("utf-8")


# -- alg "none" -------------------------------------------------------------------

NONE_SPELLINGS = {
    "none": "none",
    "None": "None",
    "NONE": "NONE",
    "nOnE": "nOnE",
    "NoNe": "NoNe",
    "trailing-space": "none ",
    "leading-space": " none",
    "trailing-nul": "none\x00",
    "trailing-newline": "none\n",
    "cyrillic-e": "non\u0435",
    "empty": "",
    "null-word": "null",
}
NONE_SHAPES: dict[str, object] = {
    "absent": MISSING,
    "json-null": None,
    "list": ["none"],
    "object": {"none": True},
    "zero": 0,
    "true": True,
}


def none_token(world: World, alg: object, signature: str, kid: bool = True) -> str:
    key = world.keys["EdDSA"]
    header = header_of(key, alg=alg, kid=key.kid if kid else MISSING)
    signer: SigningKey | bytes = {"unsigned": b"", "junk-signature": b"\x00" * 64}.get(
        signature, key
    )
    return forge(header, world.claims(), signer)


for _label, _alg in NONE_SPELLINGS.items():
    for _signature in ("unsigned", "junk-signature", "real-signature"):
        add(
            f"none/{_label}/{_signature}",
            functools.partial(none_token, alg=_alg, signature=_signature),
        )
for _label, _shape in NONE_SHAPES.items():
    add(
        f"none/alg-{_label}/real-signature",
        functools.partial(none_token, alg=_shape, signature="real"),
    )
for _signature in ("unsigned", "junk-signature", "real-signature"):
    add(
        f"none/none-without-kid/{_signature}",
        functools.partial(none_token, alg="none", signature=_signature, kid=False),
    )


# -- HMAC keyed with the public key -------------------------------------------------


def public_encodings(key: SigningKey) -> dict[str, bytes]:
    """Every way a public key is commonly written down, as HMAC secrets."""
    public = key.private_key.public_key()
    jwk = key.public_jwk
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }
    thumbprint_input = {name: jwk[name] for name in required[jwk["kty"]]}
    encodings = {
        "pem": pem,
        "pem-without-newline": pem.rstrip(b"\n"),
        "pem-crlf": pem.replace(b"\n", b"\r\n"),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk-json": json.dumps(jwk, separators=(",", ":")).encode(),
        "jwk-json-spaced": json.dumps(jwk).encode(),
        "jwk-json-sorted": json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode(),
        "jwks-json": json.dumps({"keys": [jwk]}, separators=(",", ":")).encode(),
        "jwk-thumbprint-input": json.dumps(
            thumbprint_input, sort_keys=True, separators=(",", ":")
        ).encode(),
    }
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes(3, "big")
        encodings |= {
            "pem-pkcs1": public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
            ),
            "der-pkcs1": public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.PKCS1
            ),
            "raw-n": n,
            "raw-e": e,
            "raw-n-e": n + e,
            "b64url-n": jwk["n"].encode(),
        }
    elif isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        size = (len(point) - 1) // 2
        encodings |= {
            "raw-x": point[1 : 1 + size],
            "raw-y": point[1 + size :],
            "raw-x-y": point[1:],
            "uncompressed-point": point,
            "compressed-point": public.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            ),
            "b64url-x": jwk["x"].encode(),
        }
    else:
        encodings |= {
            "raw": public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            "b64url-x": jwk["x"].encode(),
        }
    return encodings


def hmac_token(world: World, key_alg: str, encoding: str, hs: str) -> str:
    key = world.keys[key_alg]
    secret = public_encodings(key)[encoding]
    return forge(
        header_of(key, alg=hs),
        world.claims(),
        lambda data: hmac.new(secret, data, HMAC_HASHES[hs]).digest(),
    )


_COMMON_ENCODINGS = (
    "pem",
    "pem-without-newline",
    "pem-crlf",
    "der",
    "openssh",
    "jwk-json",
    "jwk-json-spaced",
    "jwk-json-sorted",
    "jwks-json",
    "jwk-thumbprint-input",
)
_TYPE_ENCODINGS = {
    "RSA": ("pem-pkcs1", "der-pkcs1", "raw-n", "raw-e", "raw-n-e", "b64url-n"),
    "EC": ("raw-x", "raw-y", "raw-x-y", "uncompressed-point", "compressed-point", "b64url-x"),
    "OKP": ("raw", "b64url-x"),
}
_KEY_TYPE = {"EdDSA": "OKP", "ES256": "EC", "ES512": "EC", "RS256": "RSA", "PS256": "RSA"}
for _key_alg in ALGORITHMS:
    for _encoding in _COMMON_ENCODINGS + _TYPE_ENCODINGS[_KEY_TYPE[_key_alg]]:
        add(
            f"hmac/{_key_alg}-key/{_encoding}/HS256",
            functools.partial(hmac_token, key_alg=_key_alg, encoding=_encoding, hs="HS256"),
        )
    for _encoding in ("pem", "der", "jwk-json"):
        for _hs in ("HS384", "HS512"):
            add(
                f"hmac/{_key_alg}-key/{_encoding}/{_hs}",
                functools.partial(hmac_token, key_alg=_key_alg, encoding=_encoding, hs=_hs),
            )


# -- signing algorithm swapped ------------------------------------------------------


def _ecdsa_raw(private_key: Any, data: bytes, hash_algorithm: hashes.HashAlgorithm) -> bytes:
    r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hash_algorithm)))
    size = (private_key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}


def sign_as(key: SigningKey, alg: str, data: bytes) -> bytes:
    """Sign with ``key``'s private key under another algorithm of the same key type."""
    private = key.private_key
    if alg.startswith("RS"):
        return bytes(private.sign(data, padding.PKCS1v15(), _HASHES[alg[2:]]))
    if alg.startswith("PS"):
        digest = _HASHES[alg[2:]]
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return bytes(private.sign(data, pss, digest))
    if alg.startswith("ES"):
        return _ecdsa_raw(private, data, _HASHES[alg[2:5]])
    return key.sign_bytes(data)  # EdDSA under another name: the same signature


def same_key_token(world: World, key_alg: str, alg: str) -> str:
    key = world.keys[key_alg]
    return forge(
        header_of(key, alg=alg),
        world.claims(),
        lambda data: sign_as(key, alg, data),
    )


def cross_key_token(world: World, kid_alg: str, alg: str) -> str:
    """Header names one key's kid but another key's algorithm, signed by that other key."""
    return forge(header_of(world.keys[kid_alg], alg=alg), world.claims(), world.keys[alg])


def other_rsa_key_token(world: World, alg: str) -> str:
    """An RSA key's kid and algorithm, signed by the other published RSA key."""
    named, signer = ("RS256", "PS256") if alg == "RS256" else ("PS256", "RS256")
    other = world.keys[signer]
    return forge(
        header_of(world.keys[named]), world.claims(), lambda data: sign_as(other, alg, data)
    )


def renamed_alg_token(world: World, key_alg: str, alg: str) -> str:
    """A genuine signature under a case-variant of its algorithm's name."""
    key = world.keys[key_alg]
    return forge(header_of(key, alg=alg), world.claims(), key)


_SAME_TYPE_SWAPS = {
    "RS256": ("PS256", "RS384", "RS512", "PS384", "PS512"),
    "PS256": ("RS256", "RS384", "RS512", "PS384", "PS512"),
    "ES256": ("ES384", "ES512", "ES256K"),
    "ES512": ("ES256", "ES384"),
    "EdDSA": ("Ed448", "EdDSA448"),
}
for _key_alg, _swaps in _SAME_TYPE_SWAPS.items():
    for _alg in _swaps:
        add(
            f"alg-swap/{_key_alg}-key-signs-as-{_alg}",
            functools.partial(same_key_token, key_alg=_key_alg, alg=_alg),
        )
for _kid_alg in ALGORITHMS:
    for _alg in ALGORITHMS:
        if _alg != _kid_alg:
            add(
                f"alg-swap/{_kid_alg}-kid-with-{_alg}-key",
                functools.partial(cross_key_token, kid_alg=_kid_alg, alg=_alg),
            )
for _alg in ("RS256", "PS256"):
    add(f"alg-swap/{_alg}-kid-other-rsa-key", functools.partial(other_rsa_key_token, alg=_alg))
for _key_alg in ALGORITHMS:
    for _variant in sorted({_key_alg.lower(), _key_alg.upper(), _key_alg.swapcase()} - {_key_alg}):
        add(
            f"alg-swap/{_key_alg}-named-{_variant}",
            functools.partial(renamed_alg_token, key_alg=_key_alg, alg=_variant),
        )


# -- keys embedded in the header ------------------------------------------------------


def embedded_jwk_token(world: World, alg: str, kid: str) -> str:
    rogue = world.rogue[alg]
    jwk = rogue.public_jwk
    header: dict[str, Any] = {"alg": alg, "jwk": jwk}
    if kid == "rogue":
        header["kid"] = rogue.kid
    elif kid == "published":
        header["kid"] = jwk["kid"] = world.keys[alg].kid
    return forge(header, world.claims(), rogue)


def x5c_token(world: World, kid: str, thumbprint: bool) -> str:
    rogue = world.rogue["ES256"]
    der = world.rogue_cert.public_bytes(serialization.Encoding.DER)
    header: dict[str, Any] = {"alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
    if kid == "rogue":
        header["kid"] = rogue.kid
    elif kid == "published":
        header["kid"] = world.keys["ES256"].kid
    if thumbprint:
        header["x5t#S256"] = b64url(hashlib.sha256(der).digest())
    return forge(header, world.claims(), rogue)


def jwk_as_text_token(world: World) -> str:
    rogue = world.rogue["EdDSA"]
    return forge(header_of(rogue, jwk=json.dumps(rogue.public_jwk)), world.claims(), rogue)


def published_jwk_rogue_signature(world: World) -> str:
    """The genuine public JWK embedded, but the signature is the attacker's."""
    real = world.keys["EdDSA"]
    return forge(header_of(real, jwk=real.public_jwk), world.claims(), world.rogue["EdDSA"])


for _alg in ("EdDSA", "ES256", "RS256"):
    for _kid in ("rogue", "published", "absent"):
        add(
            f"embedded/jwk/{_alg}/kid-{_kid}",
            functools.partial(embedded_jwk_token, alg=_alg, kid=_kid),
        )
for _kid in ("rogue", "published", "absent"):
    for _thumbprint in (False, True):
        add(
            f"embedded/x5c/kid-{_kid}" + ("/x5t-S256" if _thumbprint else ""),
            functools.partial(x5c_token, kid=_kid, thumbprint=_thumbprint),
        )
add("embedded/jwk-as-json-text", jwk_as_text_token)
add("embedded/published-jwk-rogue-signature", published_jwk_rogue_signature)


# -- jku / x5u: key URLs in the header (nothing may be fetched from them) ------------------


def url_header_token(world: World, member: str, target: str, kid: str, alg: str) -> str:
    urls = {
        "attacker-jwks": world.attacker.jwks_url,
        "attacker-cert": world.attacker.url + "/cert.pem",
        "real-server-other-path": world.server.url + "/evil/jwks",
        "real-server-jwks": world.server.jwks_url,
        "closed-port": "http://127.0.0.1:9/jwks",
        "file": "file:///etc/passwd",
    }
    rogue = world.rogue[alg]
    header: dict[str, Any] = {"alg": alg, member: urls[target]}
    if kid == "rogue":
        header["kid"] = rogue.kid
    elif kid == "published":
        header["kid"] = world.keys[alg].kid
    return forge(header, world.claims(), rogue)


for _member, _target, _kid, _alg in [
    ("jku", "attacker-jwks", "rogue", "EdDSA"),
    ("jku", "attacker-jwks", "rogue", "ES256"),
    ("jku", "attacker-jwks", "rogue", "RS256"),
    ("jku", "attacker-jwks", "published", "EdDSA"),
    ("jku", "attacker-jwks", "absent", "EdDSA"),
    ("jku", "real-server-other-path", "rogue", "EdDSA"),
    ("jku", "real-server-jwks", "rogue", "EdDSA"),
    ("jku", "closed-port", "rogue", "EdDSA"),
    ("jku", "file", "rogue", "EdDSA"),
    ("x5u", "attacker-cert", "rogue", "ES256"),
    ("x5u", "attacker-cert", "published", "ES256"),
    ("x5u", "attacker-jwks", "rogue", "EdDSA"),
]:
    add(
        f"url-header/{_member}/{_target}/kid-{_kid}/{_alg}",
        functools.partial(url_header_token, member=_member, target=_target, kid=_kid, alg=_alg),
    )


def jku_and_jwk_token(world: World) -> str:
    rogue = world.rogue["EdDSA"]
    header = header_of(rogue, jku=world.attacker.jwks_url, jwk=rogue.public_jwk)
    return forge(header, world.claims(), rogue)


add("url-header/jku-and-jwk", jku_and_jwk_token)


# -- hostile kid values -----------------------------------------------------------------


def kid_token(world: World, kid: Callable[[World], object]) -> str:
    key = world.keys["EdDSA"]
    return forge(header_of(key, kid=kid(world)), world.claims(), key)


def raw_kid_token(world: World, kid_json: str) -> str:
    """The kid written as raw JSON text (escapes and numbers JSON allows)."""
    key = world.keys["EdDSA"]
    header = raw_json('{"alg":"EdDSA","kid":' + kid_json + "}")
    return forge(header, world.claims(), key)


def _real_kid(world: World) -> str:
    return world.keys["EdDSA"].kid


HOSTILE_KIDS: dict[str, Callable[[World], object]] = {
    "traversal": lambda w: "../../../../../../etc/passwd",
    "traversal-windows": lambda w: "..\\..\\..\\windows\\win.ini",
    "traversal-encoded": lambda w: "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "absolute-path": lambda w: "/dev/zero",
    "file-url": lambda w: "file:///etc/passwd",
    "http-url": lambda w: w.attacker.jwks_url,
    "sql-or": lambda w: "' OR '1'='1",
    "sql-drop": lambda w: "x'; DROP TABLE jwks; --",
    "sql-union": lambda w: '" UNION SELECT key FROM keys --',
    "jndi": lambda w: "${jndi:ldap://127.0.0.1:9/a}",
    "template": lambda w: "{{7*7}}${7*7}",
    "html": lambda w: "<script>alert(1)</script>",
    "crlf-injection": lambda w: "kid\r\nX-Injected: yes",
    "wildcard": lambda w: "*",
    "regex": lambda w: ".*",
    "nul": lambda w: "\x00",
    "nul-suffix": lambda w: _real_kid(w) + "\x00",
    "nul-prefix": lambda w: "\x00" + _real_kid(w),
    "trailing-space": lambda w: _real_kid(w) + " ",
    "leading-space": lambda w: " " + _real_kid(w),
    "swapped-case": lambda w: _real_kid(w).swapcase(),
    "truncated": lambda w: _real_kid(w)[:-1],
    "extended": lambda w: _real_kid(w) + "x",
    "other-key-kid-prefix": lambda w: _real_kid(w)[:8],
    "fullwidth": lambda w: "".join(chr(ord(c) + 0xFEE0) for c in _real_kid(w)),
    "emoji": lambda w: "\U0001f511" * 16,
    "empty": lambda w: "",
    "space": lambda w: " ",
    "over-max-length": lambda w: "k" * 257,
    "huge": lambda w: "k" * 5000,
    "zero": lambda w: 0,
    "one": lambda w: 1,
    "negative": lambda w: -1,
    "float": lambda w: 1.5,
    "true": lambda w: True,
    "false": lambda w: False,
    "null": lambda w: None,
    "empty-list": lambda w: [],
    "list-of-real-kid": lambda w: [_real_kid(w)],
    "empty-object": lambda w: {},
    "object-with-real-kid": lambda w: {"kid": _real_kid(w)},
}
for _label, _kid_value in HOSTILE_KIDS.items():
    add(f"kid/{_label}", functools.partial(kid_token, kid=_kid_value))
for _label, _kid_json in {
    "lone-surrogate": '"\\ud800"',
    "escaped-nul": '"\\u0000"',
    "huge-number": "1e400",
    "thousand-digit-number": "9" * 1000,
}.items():
    add(f"kid/{_label}", functools.partial(raw_kid_token, kid_json=_kid_json))


# -- signatures: zero, out of range, truncated, spliced ------------------------------------


Mutation = Callable[[World, bytes, bytes], bytes]


def signature_token(world: World, alg: str, mutate: Mutation) -> str:
    """A genuine token whose signature is replaced by ``mutate(world, signature, input)``."""
    key = world.keys[alg]
    header, payload = seg(header_of(key)), seg(world.claims())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = mutate(world, key.sign_bytes(signing_input), signing_input)
    return f"{header}.{payload}.{b64url(signature)}"


def _flip(index: int) -> Mutation:
    def mutate(world: World, signature: bytes, data: bytes) -> bytes:
        flipped = bytearray(signature)
        flipped[index] ^= 0x01
        return bytes(flipped)

    return mutate


def _other_claims_signature(alg: str) -> Mutation:
    def mutate(world: World, signature: bytes, data: bytes) -> bytes:
        other = world.token(alg, user_id="someone-else")
        return b64decode(other.split(".")[2])

    return mutate


def _rogue_signature(alg: str) -> Mutation:
    def mutate(world: World, signature: bytes, data: bytes) -> bytes:
        return world.rogue[alg].sign_bytes(data)

    return mutate


def _header_only_signature(alg: str) -> Mutation:
    def mutate(world: World, signature: bytes, data: bytes) -> bytes:
        return world.keys[alg].sign_bytes(data.split(b".")[0])

    return mutate


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


GENERIC_SIGNATURE_MUTATIONS: dict[str, Callable[[str], Mutation]] = {
    "truncated-by-one": lambda alg: lambda w, s, d: s[:-1],
    "truncated-to-half": lambda alg: lambda w, s, d: s[: len(s) // 2],
    "truncated-to-one-byte": lambda alg: lambda w, s, d: s[:1],
    "trailing-zero-byte": lambda alg: lambda w, s, d: s + b"\x00",
    "leading-zero-byte": lambda alg: lambda w, s, d: b"\x00" + s,
    "doubled": lambda alg: lambda w, s, d: s + s,
    "first-bit-flipped": lambda alg: _flip(0),
    "last-bit-flipped": lambda alg: _flip(-1),
    "all-zero": lambda alg: lambda w, s, d: bytes(len(s)),
    "all-ones": lambda alg: lambda w, s, d: b"\xff" * len(s),
    "spliced-from-other-claims": _other_claims_signature,
    "spliced-from-rogue-key": _rogue_signature,
    "over-header-only": _header_only_signature,
}
for _alg in ALGORITHMS:
    for _label, _make in GENERIC_SIGNATURE_MUTATIONS.items():
        add(
            f"signature/{_alg}/{_label}",
            functools.partial(signature_token, alg=_alg, mutate=_make(_alg)),
        )


def _ecdsa(size: int, r: Callable[[int], int], s: Callable[[int], int]) -> Mutation:
    def mutate(world: World, signature: bytes, data: bytes) -> bytes:
        real_r = int.from_bytes(signature[:size], "big")
        real_s = int.from_bytes(signature[size:], "big")
        return r(real_r).to_bytes(size, "big") + s(real_s).to_bytes(size, "big")

    return mutate


def _der_signature(world: World, signature: bytes, data: bytes) -> bytes:
    size = len(signature) // 2
    return encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )


def keep(value: int) -> int:
    return value


def ecdsa_mutations(size: int, n: int, p: int) -> dict[str, Mutation]:
    """Zero and out-of-range ``r``/``s`` for a curve of order ``n`` over field ``p``."""
    top = 2 ** (8 * size) - 1
    return {
        "r-and-s-zero": _ecdsa(size, lambda r: 0, lambda s: 0),
        "r-zero": _ecdsa(size, lambda r: 0, keep),
        "s-zero": _ecdsa(size, keep, lambda s: 0),
        "r-equals-n": _ecdsa(size, lambda r: n, keep),
        "s-equals-n": _ecdsa(size, keep, lambda s: n),
        "r-plus-n": _ecdsa(size, lambda r: min(r + n, top), keep),
        "r-equals-p": _ecdsa(size, lambda r: min(p, top), keep),
        "r-and-s-max": _ecdsa(size, lambda r: top, lambda s: top),
        "r-and-s-one": _ecdsa(size, lambda r: 1, lambda s: 1),
        "der-encoded": _der_signature,
    }


for _alg, _size, _n, _p in (("ES256", 32, P256_N, P256_P), ("ES512", 66, P521_N, P521_P)):
    for _label, _mutate in ecdsa_mutations(_size, _n, _p).items():
        add(
            f"signature/{_alg}/{_label}",
            functools.partial(signature_token, alg=_alg, mutate=_mutate),
        )


def _eddsa(r: Callable[[bytes], bytes], s: Callable[[int], int]) -> Mutation:
    def mutate(world: World, signature: bytes, data: bytes) -> bytes:
        return r(signature[:32]) + s(int.from_bytes(signature[32:], "little")).to_bytes(
            32, "little"
        )

    return mutate


for _label, _mutate in {
    "zero": lambda w, s, d: bytes(64),
    "identity-r-zero-s": lambda w, s, d: (1).to_bytes(32, "little") + bytes(32),
    "s-equals-l": _eddsa(lambda r: r, lambda s: ED25519_L),
    "s-plus-l": _eddsa(lambda r: r, lambda s: s + ED25519_L),
    "s-max": _eddsa(lambda r: r, lambda s: 2**256 - 1),
    "s-zero": _eddsa(lambda r: r, lambda s: 0),
    "r-non-canonical": _eddsa(lambda r: ED25519_P.to_bytes(32, "little"), lambda s: s),
    "r-all-ones": _eddsa(lambda r: b"\xff" * 32, lambda s: s),
}.items():
    add(
        f"signature/EdDSA/{_label}", functools.partial(signature_token, alg="EdDSA", mutate=_mutate)
    )


def _rsa_value(alg: str, value: Callable[[int], int]) -> Mutation:
    def mutate(world: World, signature: bytes, data: bytes) -> bytes:
        modulus = world.keys[alg].private_key.public_key().public_numbers().n
        number = value(modulus)
        return number.to_bytes(max(len(signature), (number.bit_length() + 7) // 8), "big")

    return mutate


for _alg in ("RS256", "PS256"):
    for _label, _mutate in {
        "zero": _rsa_value(_alg, lambda n: 0),
        "one": _rsa_value(_alg, lambda n: 1),
        "modulus": _rsa_value(_alg, keep),
        "modulus-minus-one": _rsa_value(_alg, lambda n: n - 1),
        "modulus-plus-one": _rsa_value(_alg, lambda n: n + 1),
    }.items():
        add(
            f"signature/{_alg}/{_label}",
            functools.partial(signature_token, alg=_alg, mutate=_mutate),
        )


# -- malformed compact forms ------------------------------------------------------------


def compact_case(world: World, shape: Callable[[str, str, str], str]) -> str:
    header, payload, signature = world.token().split(".")
    return shape(header, payload, signature)


COMPACT_SHAPES: dict[str, Callable[[str, str, str], str]] = {
    "empty": lambda h, p, s: "",
    "one-dot": lambda h, p, s: ".",
    "two-dots": lambda h, p, s: "..",
    "three-dots": lambda h, p, s: "...",
    "one-segment": lambda h, p, s: h,
    "two-segments": lambda h, p, s: f"{h}.{p}",
    "four-segments": lambda h, p, s: f"{h}.{p}.{s}.{s}",
    "five-segments-jwe-shaped": lambda h, p, s: f"{h}.{p}.{s}.{p}.{s}",
    "trailing-dot": lambda h, p, s: f"{h}.{p}.{s}.",
    "leading-dot": lambda h, p, s: f".{h}.{p}.{s}",
    "empty-header": lambda h, p, s: f".{p}.{s}",
    "empty-payload": lambda h, p, s: f"{h}..{s}",
    "empty-signature": lambda h, p, s: f"{h}.{p}.",
    "double-dot": lambda h, p, s: f"{h}..{p}.{s}",
    "padded-header": lambda h, p, s: f"{h}==.{p}.{s}",
    "padded-payload": lambda h, p, s: f"{h}.{p}=.{s}",
    "padded-signature": lambda h, p, s: f"{h}.{p}.{s}==",
    "standard-alphabet-plus": lambda h, p, s: f"{h}.{p}.{s[:-2]}+A",
    "standard-alphabet-slash": lambda h, p, s: f"{h}.{p}.{s[:-2]}/A",
    "percent-encoded-dot": lambda h, p, s: f"{h}%2E{p}.{s}",
    "space-inside": lambda h, p, s: f"{h} .{p}.{s}",
    "tab-inside": lambda h, p, s: f"{h}.{p}\t.{s}",
    "newline-inside": lambda h, p, s: f"{h}.\n{p}.{s}",
    "trailing-newline": lambda h, p, s: f"{h}.{p}.{s}\n",
    "trailing-tab": lambda h, p, s: f"{h}.{p}.{s}\t",
    "nul-inside": lambda h, p, s: f"{h}.{p}\x00.{s}",
    "nbsp-inside": lambda h, p, s: f"{h}.{p}.\xa0{s}",
    "latin1-letter": lambda h, p, s: f"{h}.{p}.{s[:-1]}\xe9",
    "impossible-length": lambda h, p, s: f"{h}.{p}.{s}AAA",
    "non-canonical-last-char": lambda h, p, s: f"{h}.{p}.{s[:-1]}{_noncanonical(s[-1])}",
    "quoted": lambda h, p, s: f'"{h}.{p}.{s}"',
    "url-encoded": lambda h, p, s: f"{h}.{p}.{s}".replace("-", "%2D").replace("_", "%5F") + "%3D",
    "reversed": lambda h, p, s: f"{s}.{p}.{h}",
    "header-and-payload-swapped": lambda h, p, s: f"{p}.{h}.{s}",
    "json-serialization": lambda h, p, s: json.dumps(
        {"payload": p, "protected": h, "signature": s}
    ),
}


def _noncanonical(last: str) -> str:
    # An 86-character signature (64 bytes) carries 4 spare bits in its last character.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(last) | 0b0001]


for _label, _shape in COMPACT_SHAPES.items():
    add(f"compact/{_label}", functools.partial(compact_case, shape=_shape))


def _header_json(world: World) -> str:
    key = world.keys["EdDSA"]
    return json.dumps({"alg": "EdDSA", "kid": key.kid}, separators=(",", ":"))


def _claims_json(world: World) -> str:
    return json.dumps(world.claims(), separators=(",", ":"))


# Bad JSON documents, built from the genuine document text ``t`` of that segment.
BAD_DOCUMENTS: dict[str, Callable[[str], bytes]] = {
    "not-json": lambda t: b"not json",
    "truncated-json": lambda t: t[:-1].encode(),
    "trailing-garbage": lambda t: (t + "x").encode(),
    "two-documents": lambda t: (t + t).encode(),
    "array": lambda t: ("[" + t + "]").encode(),
    "string": lambda t: json.dumps(t).encode(),
    "number": lambda t: b"1",
    "null": lambda t: b"null",
    "true": lambda t: b"true",
    "empty-object": lambda t: b"{}",
    "utf8-bom": lambda t: b"\xef\xbb\xbf" + t.encode(),
    "utf16": lambda t: t.encode("utf-16"),
    "utf32": lambda t: t.encode("utf-32"),
    "invalid-utf8-byte": lambda t: t.replace('"', '"\xff', 1).encode("latin-1"),
    "overlong-utf8": lambda t: t[:-1].encode() + b',"x":"\xc0\xaf"}',
    "lone-continuation-byte": lambda t: t[:-1].encode() + b',"x":"\x80"}',
    "surrogate-utf8": lambda t: t[:-1].encode() + b',"x":"\xed\xa0\x80"}',
    "nan": lambda t: (t[:-1] + ',"x":NaN}').encode(),
    "infinity": lambda t: (t[:-1] + ',"x":Infinity}').encode(),
    "minus-infinity": lambda t: (t[:-1] + ',"x":-Infinity}').encode(),
    "single-quotes": lambda t: t.replace('"', "'").encode(),
    "trailing-comma": lambda t: (t[:-1] + ",}").encode(),
    "comment": lambda t: ("/*x*/" + t).encode(),
    "duplicate-member-same-value": lambda t: (t[:-1] + "," + t[1:]).encode(),
}


def bad_header_token(world: World, document: Callable[[str], bytes]) -> str:
    return forge(document(_header_json(world)), world.claims(), world.keys["EdDSA"])


def bad_payload_token(world: World, document: Callable[[str], bytes]) -> str:
    key = world.keys["EdDSA"]
    return forge(header_of(key), document(_claims_json(world)), key)


for _label, _document in BAD_DOCUMENTS.items():
    add(f"compact/header-{_label}", functools.partial(bad_header_token, document=_document))
    add(f"compact/payload-{_label}", functools.partial(bad_payload_token, document=_document))


def deeply_nested_header(world: World) -> str:
    key = world.keys["EdDSA"]
    return forge(header_of(key, x=json.loads("[" * 500 + "]" * 500)), world.claims(), key)


def deeply_nested_audience(world: World) -> str:
    """As deep as the size cap allows: the parser gives up, or ``aud`` is no string."""
    key = world.keys["EdDSA"]
    audience = '"aud":' + json.dumps(world.base)
    claims = _claims_json(world).replace(audience, '"aud":' + "[" * 5000 + "]" * 5000)
    return forge(header_of(key), raw_json(claims), key)


add("compact/header-deeply-nested", deeply_nested_header)
add("compact/payload-deeply-nested", deeply_nested_audience)


def duplicate_header_member(world: World, member: str) -> str:
    key = world.keys["EdDSA"]
    values = {"alg": ('"none"', '"EdDSA"'), "kid": ('"other"', json.dumps(key.kid))}[member]
    other = "kid" if member == "alg" else "alg"
    other_value = json.dumps(key.kid) if other == "kid" else '"EdDSA"'
    text = f'{{"{member}":{values[0]},"{other}":{other_value},"{member}":{values[1]}}}'
    return forge(raw_json(text), world.claims(), key)


def duplicate_claim(world: World, claim: str) -> str:
    key = world.keys["EdDSA"]
    claims = world.claims()
    spoof = {"sub": '"admin"', "exp": "9999999999", "iss": '"http://evil.example"'}[claim]
    text = '{"' + claim + '":' + spoof + "," + json.dumps(claims, separators=(",", ":"))[1:]
    return forge(header_of(key), raw_json(text), key)


for _member in ("alg", "kid"):
    add(
        f"compact/duplicate-header-{_member}",
        functools.partial(duplicate_header_member, member=_member),
    )
for _claim in ("sub", "exp", "iss"):
    add(f"compact/duplicate-claim-{_claim}", functools.partial(duplicate_claim, claim=_claim))


# -- crit and b64 -------------------------------------------------------------------------


def header_members_token(world: World, members: Mapping[str, Any]) -> str:
    key = world.keys["EdDSA"]
    return forge(header_of(key, **members), world.claims(), key)


CRIT_HEADERS: dict[str, dict[str, Any]] = {
    "crit-exp": {"crit": ["exp"]},
    "crit-b64-with-b64-false": {"crit": ["b64"], "b64": False},
    "crit-b64-with-b64-true": {"crit": ["b64"], "b64": True},
    "crit-empty-list": {"crit": []},
    "crit-unknown-extension": {"crit": ["urn:example:ext"], "urn:example:ext": 1},
    "crit-string": {"crit": "b64"},
    "crit-null": {"crit": None},
    "crit-object": {"crit": {"b64": True}},
    "crit-names-alg": {"crit": ["alg"]},
    "b64-false": {"b64": False},
    "b64-string-false": {"b64": "false"},
    "b64-string-true": {"b64": "true"},
    "b64-zero": {"b64": 0},
    "b64-one": {"b64": 1},
    "b64-null": {"b64": None},
}
for _label, _members in CRIT_HEADERS.items():
    add(f"crit/{_label}", functools.partial(header_members_token, members=_members))

TYP_HEADERS: dict[str, dict[str, Any]] = {
    "jwe": {"typ": "JWE"},
    "jose-json": {"typ": "JOSE+JSON"},
    "dpop": {"typ": "dpop+jwt"},
    "logout-token": {"typ": "logout+jwt"},
    "secevent": {"typ": "secevent+jwt"},
    "jwt-with-space": {"typ": "JWT "},
    "number": {"typ": 1},
    "list": {"typ": ["JWT"]},
    "object": {"typ": {"JWT": True}},
}
for _label, _members in TYP_HEADERS.items():
    add(f"typ/{_label}", functools.partial(header_members_token, members=_members))


def unencoded_payload_token(world: World) -> str:
    """RFC 7797: b64 false with the payload as raw JSON in the signing input."""
    key = world.keys["EdDSA"]
    header = seg(header_of(key, b64=False, crit=["b64"]))
    payload = _claims_json(world)
    signature = key.sign_bytes(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url(signature)}"


def detached_payload_token(world: World) -> str:
    key = world.keys["EdDSA"]
    header = seg(header_of(key, b64=False, crit=["b64"]))
    signature = key.sign_bytes(f"{header}.{_claims_json(world)}".encode())
    return f"{header}..{b64url(signature)}"


add("crit/b64-false-unencoded-payload", unencoded_payload_token)
add("crit/b64-false-detached-payload", detached_payload_token)


# -- claims of the wrong type or absurd size ------------------------------------------------


def claims_token(world: World, overrides: Callable[[World], dict[str, Any]]) -> str:
    key = world.keys["EdDSA"]
    return forge(header_of(key), world.claims(**overrides(world)), key)


def raw_claim_token(world: World, claim: str, value_json: str) -> str:
    key = world.keys["EdDSA"]
    claims = world.claims()
    claims.pop(claim, None)
    text = json.dumps(claims, separators=(",", ":"))[:-1] + f',"{claim}":{value_json}}}'
    return forge(header_of(key), raw_json(text), key)


def _now() -> int:
    return int(time.time())


CLAIM_VALUES: dict[str, Callable[[World], dict[str, Any]]] = {
    "exp-string": lambda w: {"exp": str(_now() + 900)},
    "exp-empty-string": lambda w: {"exp": ""},
    "exp-true": lambda w: {"exp": True},
    "exp-false": lambda w: {"exp": False},
    "exp-list": lambda w: {"exp": [_now() + 900]},
    "exp-object": lambda w: {"exp": {"value": _now() + 900}},
    "exp-negative": lambda w: {"exp": -1},
    "exp-zero": lambda w: {"exp": 0},
    "exp-epoch-plus-one": lambda w: {"exp": 1},
    "exp-an-hour-ago": lambda w: {"exp": _now() - 3600},
    "exp-after-year-9999": lambda w: {"exp": 253402300800},
    "exp-2-pow-63": lambda w: {"exp": 2**63},
    "exp-2-pow-64-plus-1": lambda w: {"exp": 2**64 + 1},
    "exp-missing": lambda w: {"exp": None},
    "iat-future": lambda w: {"issued_at": _now() + 3600},
    "iat-string": lambda w: {"iat": str(_now())},
    "iat-list": lambda w: {"iat": [_now()]},
    "nbf-future": lambda w: {"nbf": _now() + 3600},
    "nbf-string": lambda w: {"nbf": str(_now())},
    "nbf-true": lambda w: {"nbf": True},
    "nbf-after-year-9999": lambda w: {"nbf": 10**12},
    "sub-missing": lambda w: {"sub": None},
    "sub-empty": lambda w: {"sub": ""},
    "sub-number": lambda w: {"sub": 123},
    "sub-list": lambda w: {"sub": ["user"]},
    "sub-object": lambda w: {"sub": {"id": "user"}},
    "sub-true": lambda w: {"sub": True},
}
for _label, _overrides in CLAIM_VALUES.items():
    add(f"claims/{_label}", functools.partial(claims_token, overrides=_overrides))
for _claim in ("exp", "iat", "nbf"):
    for _label, _value_json in {
        "null": "null",
        "nan": "NaN",
        "infinity": "Infinity",
        "minus-infinity": "-Infinity",
        "1e309": "1e309",
        "minus-1e309": "-1e309",
        "5000-digits": "9" * 5000,
        "1000-digits": "9" * 1000,
        "exponent-huge": "1e99999999999",
    }.items():
        add(
            f"claims/{_claim}-{_label}",
            functools.partial(raw_claim_token, claim=_claim, value_json=_value_json),
        )


# -- iss / aud near-misses -----------------------------------------------------------------

NEAR_MISSES: dict[str, Callable[[str], object]] = {
    "trailing-slash": lambda b: b + "/",
    "upper-case-scheme": lambda b: b.replace("http://", "HTTP://"),
    "https": lambda b: b.replace("http://", "https://"),
    "trailing-space": lambda b: b + " ",
    "leading-space": lambda b: " " + b,
    "trailing-nul": lambda b: b + "\x00",
    "prefix-only": lambda b: b[:-1],
    "scheme-and-host-only": lambda b: b.rsplit(":", 1)[0],
    "longer-port": lambda b: b + "0",
    "subdomain-suffix": lambda b: b + ".evil.example",
    "userinfo": lambda b: b.replace("http://", "http://evil.example@"),
    "path-suffix": lambda b: b + "/api/auth",
    "fragment": lambda b: b + "#",
    "query": lambda b: b + "?",
    "percent-nul": lambda b: b + "%00",
    "localhost": lambda b: b.replace("127.0.0.1", "localhost"),
    "short-ipv4": lambda b: b.replace("127.0.0.1", "127.1"),
    "fullwidth-colon": lambda b: b.replace("://", "\uff1a//"),
    "no-scheme": lambda b: b.removeprefix("http://"),
    "jwks-url": lambda b: b + JWKS_PATH,
    "empty": lambda b: "",
    "null": lambda b: None,
    "number": lambda b: 1,
    "true": lambda b: True,
    "object": lambda b: {"iss": b},
}
AUD_ONLY: dict[str, Callable[[str], object]] = {
    "empty-list": lambda b: [],
    "list-of-null": lambda b: [None],
    "list-of-numbers": lambda b: [1, 2],
    "nested-list": lambda b: [[b]],
    "list-of-object": lambda b: [{"aud": b}],
    "list-of-near-miss": lambda b: [b + "/", b.upper()],
    "comma-joined": lambda b: f"{b},{b}",
    "space-joined": lambda b: f"{b} {b}",
}


def identity_token(world: World, claim: str, value: Callable[[str], object], listed: bool) -> str:
    key = world.keys["EdDSA"]
    claims = world.claims()
    wrong = value(world.base)
    claims[claim] = [wrong] if listed else wrong
    return forge(header_of(key), claims, key)


def identity_missing(world: World, claim: str) -> str:
    key = world.keys["EdDSA"]
    claims = world.claims()
    del claims[claim]
    return forge(header_of(key), claims, key)


for _claim in ("iss", "aud"):
    add(f"iss-aud/{_claim}-missing", functools.partial(identity_missing, claim=_claim))
    for _label, _value in NEAR_MISSES.items():
        add(
            f"iss-aud/{_claim}-{_label}",
            functools.partial(identity_token, claim=_claim, value=_value, listed=False),
        )
add("iss-aud/iss-listed", functools.partial(identity_token, claim="iss", value=str, listed=True))
for _label, _value in NEAR_MISSES.items():
    add(
        f"iss-aud/aud-list-{_label}",
        functools.partial(identity_token, claim="aud", value=_value, listed=True),
    )
for _label, _value in AUD_ONLY.items():
    add(
        f"iss-aud/aud-{_label}",
        functools.partial(identity_token, claim="aud", value=_value, listed=False),
    )


# -- oversized tokens and headers ----------------------------------------------------------


def padded_token(world: World, size: int) -> str:
    """A genuinely signed token padded with a filler claim to ``size`` characters or more."""
    key = world.keys["EdDSA"]
    filler = "x" * (size * 3 // 4)
    return forge(header_of(key), world.claims(filler=filler), key)


def big_header_token(world: World, size: int) -> str:
    key = world.keys["EdDSA"]
    return forge(header_of(key, filler="x" * (size * 3 // 4)), world.claims(), key)


def big_authorization(world: World, size: int) -> Attack:
    token = world.token()
    value = b"Bearer " + token.encode() + b"A" * (size - len(token) - 7)
    return Attack([(b"authorization", value)], (token,))


add("oversized/token-just-over-cap", functools.partial(padded_token, size=MAX_TOKEN_LENGTH + 4))
add("oversized/token-1MiB", functools.partial(padded_token, size=1024 * 1024))
add(
    "oversized/header-just-over-cap",
    functools.partial(big_header_token, size=MAX_HEADER_LENGTH + 4),
)
add("oversized/header-10KiB", functools.partial(big_header_token, size=10 * 1024))
add(
    "oversized/authorization-just-over-cap",
    functools.partial(big_authorization, size=MAX_AUTHORIZATION_LENGTH + 1),
)
add("oversized/authorization-4MiB", functools.partial(big_authorization, size=4 * 1024 * 1024))
add("oversized/100k-dots", lambda w: "." * 100_000)
add("oversized/10k-segments", lambda w: ".".join(["eyJ9"] * 3000))


# -- Authorization scheme variants and duplicated headers -----------------------------------


def authorization(world: World, template: str) -> Attack:
    token = world.token()
    return Attack([(b"authorization", template.replace("T", token).encode("latin-1"))], (token,))


def headers_case(world: World, values: tuple[str, ...], names: tuple[bytes, ...]) -> Attack:
    token = world.token()
    other = world.token("ES256")
    replace = {"T": token, "U": other, "J": "junk.junk.junk"}
    headers = [
        (name, ("".join(replace.get(c, c) for c in value)).encode("latin-1"))
        for name, value in zip(names, values, strict=True)
    ]
    return Attack(headers, (token, other))


for _label, _template in {
    "basic": "Basic T",
    "token": "Token T",
    "jwt": "JWT T",
    "dpop": "DPoP T",
    "negotiate": "Negotiate T",
    "no-scheme": "T",
    "colon": "Bearer:T",
    "equals": "Bearer=T",
    "no-space": "BearerT",
    "dash": "Bearer-T",
    "tab": "Bearer\tT",
    "nul-separator": "Bearer\x00T",
    "nbsp-separator": "Bearer\xa0T",
    "tab-before-token": "Bearer \tT",
    "two-tokens": "Bearer T T",
    "comma-list": "Bearer T, Bearer T",
    "trailing-comma": "Bearer T,",
    "trailing-semicolon": "Bearer T;",
    "quoted": 'Bearer "T"',
    "angle-brackets": "Bearer <T>",
    "auth-param": "Bearer token=T",
    "scheme-only": "Bearer",
    "scheme-and-space": "Bearer ",
    "scheme-and-spaces": "Bearer     ",
    "empty": "",
    "bearer-twice": "Bearer Bearer T",
    "misspelled": "Baerer T",
    "prefix-scheme": "Bearerx T",
    "latin1-scheme": "B\xe9arer T",
    "nul-after-token": "Bearer T\x00",
}.items():
    add(f"scheme/{_label}", functools.partial(authorization, template=_template))

_AUTH = b"authorization"
for _label, _values, _names in [
    ("duplicate-same-token", ("Bearer T", "Bearer T"), (_AUTH, _AUTH)),
    ("duplicate-two-valid-tokens", ("Bearer T", "Bearer U"), (_AUTH, _AUTH)),
    ("duplicate-valid-then-junk", ("Bearer T", "Bearer J"), (_AUTH, _AUTH)),
    ("duplicate-junk-then-valid", ("Bearer J", "Bearer T"), (_AUTH, _AUTH)),
    ("duplicate-valid-then-empty", ("Bearer T", ""), (_AUTH, _AUTH)),
    ("duplicate-valid-then-basic", ("Bearer T", "Basic dXNlcjpwYXNz"), (_AUTH, _AUTH)),
    ("duplicate-mixed-case-names", ("Bearer T", "Bearer T"), (_AUTH, b"Authorization")),
    ("duplicate-upper-case-name", ("Bearer T", "Bearer T"), (_AUTH, b"AUTHORIZATION")),
    ("triplicate", ("Bearer T", "Bearer T", "Bearer T"), (_AUTH, _AUTH, _AUTH)),
]:
    add(f"scheme/{_label}", functools.partial(headers_case, values=_values, names=_names))


# -- the app, the servers and the test -------------------------------------------------------


def _self_signed(key: SigningKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key.private_key, hashes.SHA256())
    )


def _issuer_with_every_algorithm() -> Issuer:
    issuer = Issuer(alg=ALGORITHMS[0])
    for alg in ALGORITHMS[1:]:
        issuer.rotate(alg)
    return issuer


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    issuer = _issuer_with_every_algorithm()
    rogue_issuer = _issuer_with_every_algorithm()
    with JWKSServer(issuer) as server, JWKSServer(rogue_issuer) as attacker:
        rogue = {key.alg: key for key in rogue_issuer.keys}
        yield World(
            issuer=issuer,
            keys={key.alg: key for key in issuer.keys},
            rogue=rogue,
            rogue_cert=_self_signed(rogue["ES256"]),
            server=server,
            attacker=attacker,
        )


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    # refresh_cooldown=0: an unknown kid refetches at once, so cases stay fast.
    async with httpx.AsyncClient(verify=TLS) as jwks_client:
        app = guarded_app(
            [Route("/whoami", whoami)],
            base_url=world.base,
            http_client=jwks_client,
            key_set=KeySetOptions(refresh_cooldown=0),
        )
        async with asgi_client(app) as client:
            yield client


def _echoes(text: str, secret: str) -> bool:
    pieces = [secret, *secret.split(".")]
    return any(len(piece) >= 16 and piece in text for piece in pieces)


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_genuine_tokens_pass(client: httpx.AsyncClient, world: World, alg: str) -> None:
    """The control: the same app accepts genuine tokens, and forge() can build them."""
    key = world.keys[alg]
    for token in (world.token(alg), forge(header_of(key), world.claims(), key)):
        response = await client.get("/whoami", headers=bearer(token).headers)
        assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_request_is_401(
    client: httpx.AsyncClient, world: World, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    built = CASES[case](world)
    attack = bearer(built) if isinstance(built, str) else built
    caplog.set_level(logging.DEBUG, logger="starlette_betterauth")
    response = await client.get("/whoami", headers=attack.headers)
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert CHALLENGE.fullmatch(challenge), challenge
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] in ("invalid_token", "invalid_request")
    for secret in attack.secrets:
        for text in (response.text, challenge, caplog.text):
            assert not _echoes(text, secret)
    assert world.attacker.requests == 0
    assert set(world.server.request_paths) <= {JWKS_PATH}


# -- second round (issue 16): Unicode, roles, banned, public routes, keys -------------------
#
# The same rules as above, for the classes a second round of probes found: every
# refusal has its RFC 6750 challenge and JSON body, never echoes the token, and the
# app is never called.


def _refused(response: httpx.Response, status: int, token: str, log: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    for text in (response.text, response.headers["www-authenticate"], log):
        assert not _echoes(text, token)


def _text_token(world: World, header: str, payload: str) -> str:
    """A token of the given header and payload JSON texts, signed by the EdDSA key."""
    return forge(raw_json(header), raw_json(payload), world.keys["EdDSA"])


def _claims_with(world: World, member: str) -> str:
    return json.dumps(world.claims())[:-1] + f", {member}}}"


def _header_with(world: World, member: str) -> str:
    return json.dumps(header_of(world.keys["EdDSA"]))[:-1] + f", {member}}}"


SURROGATES: dict[str, Callable[[World], str]] = {
    "claim-value": lambda w: _text_token(
        w, _header_with(w, '"x": "y"'), _claims_with(w, '"nick": "\\ud800"')
    ),
    "claim-name": lambda w: _text_token(
        w, _header_with(w, '"x": "y"'), _claims_with(w, '"\\udfff": 1')
    ),
    "nested-object": lambda w: _text_token(
        w, _header_with(w, '"x": "y"'), _claims_with(w, '"org": {"n": ["\\udbff"]}')
    ),
    "sub": lambda w: _text_token(
        w,
        _header_with(w, '"x": "y"'),
        json.dumps(w.claims())[:-1].replace('"sub": ', '"sub": "\\ud800", "was": ') + "}",
    ),
    "high-then-text": lambda w: _text_token(
        w, _header_with(w, '"x": "y"'), _claims_with(w, '"nick": "\\ud83dx"')
    ),
    "reversed-pair": lambda w: _text_token(
        w, _header_with(w, '"x": "y"'), _claims_with(w, '"nick": "\\ude00\\ud83d"')
    ),
    "header-value": lambda w: _text_token(
        w, _header_with(w, '"x": "\\ud800"'), json.dumps(w.claims())
    ),
    "header-name": lambda w: _text_token(
        w, _header_with(w, '"\\ud800": "y"'), json.dumps(w.claims())
    ),
    "cesu8-bytes": lambda w: forge(
        header_of(w.keys["EdDSA"]),
        _claims_with(w, '"nick": "X"').encode().replace(b'"X"', b'"\xed\xa0\x80"'),
        w.keys["EdDSA"],
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(SURROGATES))
async def test_lone_surrogates_are_401(
    client: httpx.AsyncClient, world: World, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="starlette_betterauth")
    token = SURROGATES[case](world)
    for _ in range(2):  # again once the header is remembered: the fast path
        response = await client.get("/whoami", headers=bearer(token).headers)
        _refused(response, 401, token, caplog.text)
        assert CHALLENGE.fullmatch(response.headers["www-authenticate"])


BANNED_VALUES: dict[str, object] = {
    "true": True,
    "string-true": "true",
    "string-false": "false",
    "string-empty": "",
    "one": 1,
    "zero": 0,
    "float": 0.0,
    "list-true": [True],
    "list-false": [False],
    "empty-list": [],
    "object": {"banned": False},
    "empty-object": {},
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(BANNED_VALUES))
async def test_banned_of_any_shape_is_403(
    client: httpx.AsyncClient, world: World, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = world.token(banned=BANNED_VALUES[case])
    response = await client.get("/whoami", headers=bearer(token).headers)
    _refused(response, 403, token, caplog.text)
    assert response.headers["www-authenticate"] == "Bearer"


@requires_role("admin")
async def admin_only(request: Request) -> JSONResponse:
    return JSONResponse({"admin": request.state.user.id})


LOOKALIKE_ROLES: dict[str, object] = {
    "nbsp": "admin\u00a0",
    "narrow-nbsp": "admin\u202f",
    "ideographic-space": "\u3000admin",
    "next-line": "admin\x85",
    "file-separator": "admin\x1c",
    "group-separator": "\x1dadmin",
    "record-separator": "admin\x1e",
    "unit-separator": "admin\x1f",
    "vertical-tab": "admin\x0b",
    "form-feed": "admin\x0c",
    "carriage-return": "admin\r",
    "line-feed": "\nadmin",
    "nul": "admin\x00",
    "zero-width-space": "admin\u200b",
    "byte-order-mark": "\ufeffadmin",
    "cyrillic-a": "\u0430dmin",
    "fullwidth": "\uff41dmin",
    "upper-case": "ADMIN",
    "semicolon-list": "user;admin",
    "space-list": "user admin",
    "json-in-string": '["admin"]',
    "nested-list": [["admin"]],
    "object": {"admin": True},
    "list-with-nbsp": ["user", "admin\u00a0"],
    "number": 1,
    "true": True,
}


@pytest.fixture
async def guarded(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/admin", admin_only)])
    app.add_middleware(BetterAuthMiddleware, base_url=world.base)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client


@pytest.mark.anyio
async def test_genuine_admin_passes_the_guard(guarded: httpx.AsyncClient, world: World) -> None:
    """The control: the guarded app admits a genuine admin, padded as a person types it."""
    for role in ("admin", "user,admin", "user, admin", ["user", "admin"]):
        response = await guarded.get("/admin", headers=bearer(world.token(role=role)).headers)
        assert response.status_code == 200, role


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(LOOKALIKE_ROLES))
async def test_lookalike_roles_are_403(
    guarded: httpx.AsyncClient, world: World, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = world.token(role=LOOKALIKE_ROLES[case])
    response = await guarded.get("/admin", headers=bearer(token).headers)
    _refused(response, 403, token, caplog.text)


async def _method_agnostic(scope: Any, receive: Any, send: Any) -> None:
    """A mounted ASGI app that serves its protected body to every method."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"protected"})


async def _anything(request: Request) -> JSONResponse:
    return JSONResponse({"anonymous": request.state.user is None})


ORIGIN = {"origin": "https://app.example"}
BYPASSES: dict[str, tuple[str, str, dict[str, str]]] = {
    "bare-options": ("OPTIONS", "/api/admin", {}),
    "options-with-origin-only": ("OPTIONS", "/api/admin", ORIGIN),
    "options-with-method-only": ("OPTIONS", "/api/admin", {"access-control-request-method": "GET"}),
    "options-with-empty-origin-header-name": (
        "OPTIONS",
        "/api/admin",
        {"x-origin": "a", "access-control-request-method": "GET"},
    ),
    "get-with-preflight-headers": (
        "GET",
        "/api/admin",
        {**ORIGIN, "access-control-request-method": "GET"},
    ),
    "docs-sibling": ("GET", "/docs-internal", {}),
    "docs-suffix": ("GET", "/docsx/admin", {}),
    "docs-prefix-only": ("GET", "/doc", {}),
    "docs-wrong-method": ("POST", "/docs", {}),
    "docs-case": ("GET", "/DOCS/x", {}),
    "docs-double-slash": ("GET", "//docs/x", {}),
    "health-suffix": ("GET", "/health/x", {}),
    "health-sibling": ("GET", "/healthz", {}),
}


@pytest.fixture
async def public_routes(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount("/api", app=_method_agnostic), Route("/{rest:path}", _anything)])
    app.add_middleware(
        BetterAuthMiddleware,
        base_url=world.base,
        public=["GET /docs/*", "PREFLIGHT /api/*", "/health"],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client


@pytest.mark.anyio
async def test_public_routes_control(public_routes: httpx.AsyncClient) -> None:
    """The control: what the rules make public is reachable without a token."""
    preflight = {**ORIGIN, "access-control-request-method": "GET"}
    assert (await public_routes.options("/api/admin", headers=preflight)).status_code == 200
    for path in ("/docs", "/docs/", "/docs/oauth2-redirect", "/health"):
        assert (await public_routes.get(path)).json() == {"anonymous": True}, path


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(BYPASSES))
async def test_public_route_bypasses_are_401(public_routes: httpx.AsyncClient, case: str) -> None:
    method, path, headers = BYPASSES[case]
    response = await public_routes.request(method, path, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.text != "protected"


def _rsa_key_with_exponent(e: int) -> SigningKey:
    """An RSA signing key whose public exponent is ``e`` (made coprime with phi(n))."""
    base = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    p, q = base.p, base.q
    phi = (p - 1) * (q - 1)
    while math.gcd(e, phi) != 1:
        e += 2
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), rsa.rsa_crt_iqmp(p, q), rsa.RSAPublicNumbers(e, p * q)
    )
    key = SigningKey("RS256")
    key.private_key = numbers.private_key()
    return key


@pytest.fixture
def key_server() -> Iterator[JWKSServer]:
    """A key server of its own, for the cases that change what it serves."""
    with JWKSServer(Issuer()) as server:
        yield server


def _app_for(server: JWKSServer, **options: Any) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/whoami", whoami)])
    app.add_middleware(BetterAuthMiddleware, base_url=server.url, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


@pytest.mark.anyio
async def test_ps256_on_an_rsa_key_without_alg_is_401(
    key_server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    rs = SigningKey("RS256")
    ps = SigningKey("PS256", kid=rs.kid)
    ps.private_key = rs.private_key
    jwk = {k: v for k, v in rs.public_jwk.items() if k != "alg"}
    key_server.body = json.dumps({"keys": [jwk]}).encode()
    claims = key_server.issuer.claims()
    async with _app_for(key_server) as client:
        assert (await client.get("/whoami", headers=bearer(rs.sign(claims)).headers)).is_success
        token = ps.sign(claims)
        response = await client.get("/whoami", headers=bearer(token).headers)
    _refused(response, 401, token, caplog.text)


@pytest.mark.anyio
async def test_tokens_of_a_huge_exponent_key_are_401(
    key_server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    costly = _rsa_key_with_exponent(2**2046 + 1)
    key_server.issuer.keys.append(costly)
    token = costly.sign(key_server.issuer.claims())
    async with _app_for(key_server, key_set=KeySetOptions(refresh_cooldown=0)) as client:
        response = await client.get("/whoami", headers=bearer(token).headers)
    _refused(response, 401, token, caplog.text)
    assert response.json()["error_description"] == "no key in the key set has the token's kid"


@pytest.mark.anyio
async def test_a_kid_reused_for_new_key_material_refuses_cached_tokens(
    key_server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = key_server.issuer
    token = issuer.token()
    async with _app_for(key_server, key_set=KeySetOptions(ttl=0.2, min_ttl=0.2)) as client:
        assert (await client.get("/whoami", headers=bearer(token).headers)).is_success
        issuer.keys[0] = SigningKey(issuer.keys[0].alg, kid=issuer.keys[0].kid)
        await anyio.sleep(0.3)  # past the key set's ttl: the next request refreshes it
        await client.get("/whoami", headers=bearer(issuer.token()).headers)
        response = await client.get("/whoami", headers=bearer(token).headers)
    _refused(response, 401, token, caplog.text)


@pytest.mark.anyio
async def test_a_replayed_forged_kid_is_refused_without_refetching(
    key_server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    forged = SigningKey("EdDSA", kid="forged-" + "k" * 25)
    token = forged.sign(key_server.issuer.claims())
    statuses: list[int] = []
    async with _app_for(key_server, key_set=KeySetOptions(refresh_cooldown=2.0)) as client:

        async def replay() -> None:
            statuses.append(
                (await client.get("/whoami", headers=bearer(token).headers)).status_code
            )

        await replay()  # the first waits for the cooldown and one refetch
        fetches = key_server.requests
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(replay)
    assert statuses == [401] * 51
    assert key_server.requests == fetches == 2
    assert not _echoes(caplog.text, token)


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["unusable-keys", "gzip-bomb", "http-500"])
async def test_503_bodies_say_nothing_of_the_key_set(
    key_server: JWKSServer, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    secret = "internal-kid-" + "s" * 20
    if fault == "unusable-keys":
        key_server.body = json.dumps({"keys": [{"kid": secret, "kty": "oct", "k": "AA"}]}).encode()
    elif fault == "gzip-bomb":
        key_server.body = gzip.compress(gzip.compress(b" " * (64 * 1024 * 1024)))
        key_server.headers = {"Content-Encoding": "gzip, gzip"}
    else:
        key_server.status = 500
    token = key_server.issuer.token()
    async with _app_for(key_server) as client:
        response = await client.get("/whoami", headers=bearer(token).headers)
    _refused(response, 503, token, caplog.text)
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": "the credentials cannot be checked now; retry later",
    }
    assert secret not in response.text
    assert "Content-Encoding" not in response.text
