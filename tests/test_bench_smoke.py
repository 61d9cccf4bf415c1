"""The benchmarks keep working: micro, in-process ASGI, kinds and scale, in their --quick mode.

These run the scripts as a user would and check that every table row is
printed; they assert nothing about timings (the HTTP benchmark needs wrk and is
not run here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")


def run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(150)
def test_micro_prints_a_row_per_algorithm() -> None:
    output = run("micro.py")
    assert "## micro: µs per verification (quick run)" in output
    assert "| alg | floor µs | this package µs |" in output
    for alg in ALGORITHMS:
        row = next(line for line in output.splitlines() if line.startswith(f"| {alg} |"))
        assert len(row.split("|")) == 12  # ten cells


@pytest.mark.timeout(150)
def test_asgi_prints_the_repeated_and_first_seen_rows() -> None:
    output = run("asgi.py")
    assert "## asgi: µs per request in process (quick run)" in output
    assert "| repeated token (cache hit) |" in output
    for alg in ALGORITHMS:
        row = next(line for line in output.splitlines() if line.startswith(f"| {alg} |"))
        assert len(row.split("|")) == 12  # ten cells


@pytest.mark.timeout(150)
def test_kinds_prints_a_row_per_kind() -> None:
    output = run("kinds.py")
    assert "## kinds: µs per request in process (quick run)" in output
    for case in (
        "BearerJWT, first-seen",
        "SessionCookie, first-seen session_data",
        "SessionToken, get-session cache hit",
    ):
        row = next(line for line in output.splitlines() if line.startswith(f"| {case} |"))
        assert len(row.split("|")) == 7  # five cells
    assert "get-session miss:" in output


@pytest.mark.timeout(150)
def test_fleet_prints_every_check() -> None:
    from _redis import require_redis

    require_redis()
    root = str(BENCH.parent)
    done = subprocess.run(
        [sys.executable, str(BENCH / "fleet.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert done.returncode == 0, done.stderr
    for check in ("secondaryStorage", "revocation mark", "100 live sessions", "sign-out seen"):
        assert check in done.stdout


def test_scale_prints_key_sets_public_rules_and_token_caches() -> None:
    output = run("scale.py")
    assert "## scale: µs per request in process (quick run)" in output
    lines = output.splitlines()
    for first_cell in ("| 1 | 1 |", "| 120 | 100 |", "| 100 |", "| 1,000 |"):
        assert any(line.startswith(first_cell) for line in lines), first_cell
    assert "401 (unknown kid)" in output
    assert "memory per cached token" in output
