"""Ed25519 signature checks: one strict policy, on libsodium when it is there.

Better Auth signs with Ed25519 by default, and the signature check is most of
what a first-seen token costs. libsodium (through PyNaCl, the ``[nacl]`` extra)
checks one in about half the time OpenSSL (through ``cryptography``) takes, so
it is used when it is installed, unless ``KeySetOptions(libsodium=False)``.

Both paths apply the same policy, libsodium's, which is the stricter of the two
(RFC 8032's cofactorless check; ``S`` must be below the group order ``L``; the
signature's ``R`` must be a canonical encoding of the point it stands for):

- a public key that is not a canonical encoding (``y >= p``) or is a point of
  small order (the identity and the other seven torsion points: no private key
  made it, and one of them verifies any message) is refused when the key set is
  read, whichever path verifies;
- a signature whose ``R`` is a point of small order is refused. libsodium does
  this itself; OpenSSL does not, so the ``cryptography`` path checks ``R``
  against the same list first.

Found by Project Wycheproof's Ed25519 vectors and a differential test
(``tests/test_ed25519.py``): on those inputs OpenSSL accepted nothing libsodium
refused beyond the two cases above, and libsodium accepted nothing OpenSSL
refused, so with these checks the two paths give the same verdict everywhere
they were compared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

__all__ = [
    "LIBSODIUM_AVAILABLE",
    "SMALL_ORDER_ENCODINGS",
    "key_flaw",
    "signature_check",
]

try:  # the [nacl] extra
    from nacl.bindings import crypto_sign_open as _crypto_sign_open
    from nacl.exceptions import BadSignatureError as _BadSignatureError
except ImportError:  # pragma: no cover - exercised by the tests run without PyNaCl
    LIBSODIUM_AVAILABLE = False
else:
    LIBSODIUM_AVAILABLE = True

_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
# The y coordinate of a point of order 8 (the other points of that order have
# this y or p - y, with either sign of x).
_Y_ORDER_8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
# The y of every small-order point, and their non-canonical encodings y + p (only
# 0 and 1 have one below 2^255): libsodium's list, ge25519_has_small_order.
_SMALL_ORDER_Y = (0, 1, _Y_ORDER_8, _P - _Y_ORDER_8, _P - 1, _P, _P + 1)
#: The 32-byte encodings of small-order points, with both values of the sign bit.
SMALL_ORDER_ENCODINGS: frozenset[bytes] = frozenset(
    (y | sign << 255).to_bytes(32, "little") for y in _SMALL_ORDER_Y for sign in (0, 1)
)


def key_flaw(raw: bytes) -> str | None:
    """Why a raw Ed25519 public key is refused (None when it is usable)."""
    if len(raw) != 32:
        return "its Ed25519 public key is not 32 bytes"
    if int.from_bytes(raw, "little") & _Y_MASK >= _P:
        return "its Ed25519 public key is not canonically encoded"
    if raw in SMALL_ORDER_ENCODINGS:
        return "its Ed25519 public key is a point of small order, which no private key made"
    return None


def signature_check(public_key: Any, *, libsodium: bool) -> Callable[[bytes, bytes], bool]:
    """``check(signing_input, signature) -> bool`` for a ``cryptography`` Ed25519 public key.

    Through libsodium when ``libsodium`` is true and PyNaCl is installed, else
    through ``cryptography`` with the small-order ``R`` check libsodium makes.
    """
    if libsodium and LIBSODIUM_AVAILABLE:
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return _libsodium_check(raw)
    return _cryptography_check(public_key)


def _libsodium_check(raw: bytes) -> Callable[[bytes, bytes], bool]:
    open_signed, bad_signature = _crypto_sign_open, _BadSignatureError

    def check(signing_input: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            open_signed(signature + signing_input, raw)
        except bad_signature:
            return False
        return True

    return check


def _cryptography_check(public_key: Any) -> Callable[[bytes, bytes], bool]:
    verify, small_order = public_key.verify, SMALL_ORDER_ENCODINGS

    def check(signing_input: bytes, signature: bytes) -> bool:
        if signature[:32] in small_order:
            return False
        try:
            verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    return check
