"""Ed25519 arithmetic in pure Python (RFC 8032, section 5.1), to craft edge-case signatures.

Slow and not constant-time: for tests only. It makes what a real signer never
does: keys and nonces with a small-order (torsion) component, small-order and
non-canonical encodings, ``S`` values at or above the group order, each with a
signature that satisfies (or not) the cofactorless verification equation.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)
IDENTITY: Point = (0, 1, 1, 0)


def _inverse(x: int) -> int:
    return pow(x, P - 2, P)


def recover_x(y: int, sign: int) -> int | None:
    """The x of the point with this y and sign of x, None when there is none."""
    if y >= P:
        return None
    x2 = (y * y - 1) * _inverse(D * y * y + 1) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if (x & 1) != sign else x


def add(p: Point, q: Point) -> Point:
    """p + q."""
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def multiply(scalar: int, point: Point) -> Point:
    """scalar * point."""
    result = IDENTITY
    while scalar > 0:
        if scalar & 1:
            result = add(result, point)
        point = add(point, point)
        scalar >>= 1
    return result


def same(p: Point, q: Point) -> bool:
    """Whether p and q are the same point."""
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def encode(point: Point) -> bytes:
    """The canonical 32-byte encoding."""
    z = _inverse(point[2])
    x, y = point[0] * z % P, point[1] * z % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def decode(data: bytes) -> Point | None:
    """The point a canonical encoding names, None for any other 32 bytes."""
    value = int.from_bytes(data, "little")
    y, sign = value & ((1 << 255) - 1), value >> 255
    x = recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


_BASE_Y = 4 * _inverse(5) % P
_BASE_X = recover_x(_BASE_Y, 0)
assert _BASE_X is not None
BASE: Point = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % P)


def _torsion_generator() -> Point:
    """A point of order 8: L times a point whose order has the factor 8."""
    y = 2
    while True:
        point = decode(y.to_bytes(32, "little"))
        if point is not None:
            candidate = multiply(L, point)
            if not same(multiply(4, candidate), IDENTITY):
                return candidate
        y += 1


#: The eight points of the torsion subgroup (small order): TORSION[i] = i * T8.
TORSION: tuple[Point, ...] = tuple(multiply(i, _torsion_generator()) for i in range(8))


def challenge(r_encoding: bytes, a_encoding: bytes, message: bytes) -> int:
    """H(R || A || M) mod L."""
    digest = hashlib.sha512(r_encoding + a_encoding + message).digest()
    return int.from_bytes(digest, "little") % L


def sign(
    secret: int,
    nonce: int,
    message: bytes,
    *,
    key_torsion: int = 0,
    nonce_torsion: int = 0,
    s_offset: int = 0,
) -> tuple[bytes, bytes]:
    """``(public key, signature)`` from a secret scalar and nonce, with optional flaws.

    The public key is ``secret*B + TORSION[key_torsion]``, ``R`` is
    ``nonce*B + TORSION[nonce_torsion]``, and ``S = nonce + h*secret (mod L)``
    plus ``s_offset`` (a multiple of L keeps the equation, not the encoding rule).
    """
    public = add(multiply(secret, BASE), TORSION[key_torsion])
    r_point = add(multiply(nonce, BASE), TORSION[nonce_torsion])
    a_encoding, r_encoding = encode(public), encode(r_point)
    s = (nonce + challenge(r_encoding, a_encoding, message) * secret) % L + s_offset
    return a_encoding, r_encoding + s.to_bytes(32, "little")
