"""Micro benchmark: µs per token verification, against the signature itself and PyJWT.

For each algorithm Better Auth signs with, three ways to verify the same
Better Auth-shaped tokens are timed, interleaved in one run:

- floor: ``cryptography``'s raw verify with a pre-loaded key, the signature and
  the signed bytes decoded beforehand (for ECDSA, already DER): the cost of the
  signature alone, which no verifier can go below;
- this package: ``TokenVerifier.verify_token`` (parse, header and key checks,
  signature, claims), the key set loaded from a loopback JWKS server;
- PyJWT: ``jwt.decode`` with a pre-built key, ``algorithms``, ``audience`` and
  ``issuer``: what a hand-rolled verifier does.

Run: ``python bench/micro.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt
from benchkit import (
    ALGORITHMS,
    interleaved,
    machine,
    median,
    paired_median,
    run_now,
    table,
    timed_calls,
    verdict,
)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.api_jwk import PyJWK

from starlette_betterauth import KeySetOptions, TokenVerifier
from starlette_betterauth.testing import Issuer, JWKSServer

#: The first-seen target: verification costs at most the signature plus this many µs.
TARGET_OVERHEAD_US = 15.0


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def floor_verifier(alg: str, public_key: Any, token: str) -> Callable[[], None]:
    """The bare ``cryptography`` call verifying ``token``, every input prepared."""
    header, payload, signature_b64 = token.split(".")
    signed = f"{header}.{payload}".encode("ascii")
    signature = _b64decode(signature_b64)
    if alg == "EdDSA":
        return lambda: public_key.verify(signature, signed)
    if alg in ("ES256", "ES512"):
        size = len(signature) // 2
        der = encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        scheme = ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA512())
        return lambda: public_key.verify(der, signed, scheme)
    sha256 = hashes.SHA256()
    scheme_rsa: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if alg == "RS256"
        else padding.PSS(mgf=padding.MGF1(sha256), salt_length=sha256.digest_size)
    )
    return lambda: public_key.verify(signature, signed, scheme_rsa, sha256)


def cycling(operations: list[Callable[[], object]]) -> Callable[[], object]:
    """One operation per call, going round the list."""
    step = itertools.cycle(operations).__next__
    return lambda: step()()


def measure_algorithm(
    alg: str, server: JWKSServer, *, tokens: int, rounds: int, sample_ms: float
) -> dict[str, float]:
    """Time floor, this package and PyJWT on ``tokens`` distinct tokens of ``alg``."""
    issuer = server.issuer
    key = issuer.rotate(alg)
    minted = [issuer.token(key=key, role="user") for _ in range(tokens)]
    public_key = PyJWK(key.public_jwk, alg).key
    verifier = TokenVerifier.for_server(
        server.url, key_set=KeySetOptions(ttl=3600.0, min_ttl=3600.0)
    )
    asyncio.run(verifier.jwks.refresh())
    verify_token = verifier.verify_token

    next_token = itertools.cycle(minted).__next__

    def ours(batch: int) -> Callable[[int], float]:
        # Awaited in a coroutine, as the middleware awaits it (no event loop needed:
        # with the keys loaded, verification never suspends).
        clock = time.perf_counter_ns

        async def verify_batch() -> list[int]:
            times = []
            for _ in range(batch):
                token = next_token()
                start = clock()
                await verify_token(token)
                times.append(clock() - start)
            return times

        def run(_round: int) -> float:
            return statistics.median(run_now(verify_batch())) / 1000

        return run

    def pyjwt(token: str) -> Callable[[], object]:
        return lambda: jwt.decode(
            token, public_key, algorithms=[alg], audience=server.url, issuer=server.url
        )

    floor = cycling([floor_verifier(alg, public_key, token) for token in minted])
    theirs = cycling([pyjwt(token) for token in minted])
    for token in minted:  # each must accept every token (all three raise otherwise)
        run_now(verify_token(token))
        floor()
        theirs()
    start = time.perf_counter()
    for _ in range(20):
        floor()
    estimate_us = (time.perf_counter() - start) / 20 * 1e6
    batch = max(5, int(sample_ms * 1000 / estimate_us))
    samples = interleaved(
        {
            "floor": timed_calls(floor, batch),
            "ours": ours(batch),
            "pyjwt": timed_calls(theirs, batch),
        },
        rounds,
    )
    return {
        "floor": median(samples["floor"]),
        "ours": median(samples["ours"]),
        "pyjwt": median(samples["pyjwt"]),
        "ours_over": paired_median(samples["ours"], samples["floor"], ratio=False),
        "pyjwt_over": paired_median(samples["pyjwt"], samples["floor"], ratio=False),
        "ours_ratio": paired_median(samples["ours"], samples["floor"], ratio=True),
        "pyjwt_ratio": paired_median(samples["pyjwt"], samples["floor"], ratio=True),
        "speedup": paired_median(samples["pyjwt"], samples["ours"], ratio=True),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the micro benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated")
    parser.add_argument("--tokens", type=int, default=None, help="distinct tokens per algorithm")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 31)
    sample_ms = 2.0 if args.quick else 25.0
    tokens = args.tokens or (4 if args.quick else 50)
    rows = []
    with JWKSServer(Issuer()) as server:
        for alg in args.algorithms.split(","):
            result = measure_algorithm(
                alg, server, tokens=tokens, rounds=rounds, sample_ms=sample_ms
            )
            rows.append(
                [
                    alg,
                    f"{result['floor']:.1f}",
                    f"{result['ours']:.1f}",
                    f"{result['ours_over']:+.1f}",
                    f"{result['ours_ratio']:.2f}x",
                    f"{result['pyjwt']:.1f}",
                    f"{result['pyjwt_over']:+.1f}",
                    f"{result['pyjwt_ratio']:.2f}x",
                    f"{result['speedup']:.2f}x",
                    verdict(result["ours_over"] <= TARGET_OVERHEAD_US),
                ]
            )
    print(f"## micro: µs per verification ({'quick' if args.quick else 'full'} run)\n")
    print(f"Machine: {machine()}\n")
    print(
        f"{rounds} interleaved rounds, {tokens} distinct tokens per algorithm; each round "
        "times every call and keeps the median; over rounds, medians, and overheads and "
        "ratios of same-round pairs.\n"
    )
    print(
        table(
            [
                "alg",
                "floor µs",
                "this package µs",
                "over floor",
                "x floor",
                "PyJWT decode µs",
                "over floor",
                "x floor",
                "PyJWT / this",
                f"target: floor + {TARGET_OVERHEAD_US:.0f} µs",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
