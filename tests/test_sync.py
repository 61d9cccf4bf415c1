"""SyncTokenVerifier: verification from threads, one key set, precise errors, a clean exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from starlette_betterauth import SyncTokenVerifier, TokenVerifier
from starlette_betterauth.errors import (
    ExpiredTokenError,
    KeySetError,
    MalformedTokenError,
)
from starlette_betterauth.testing import Issuer, JWKSServer


def test_threads_share_one_key_set(server: JWKSServer, issuer: Issuer) -> None:
    tokens = [issuer.token(sub=f"user-{n}") for n in range(64)]
    with (
        SyncTokenVerifier.for_server(server.url) as verifier,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):
        subjects = list(pool.map(lambda token: verifier.verify(token)["sub"], tokens))
    assert subjects == [f"user-{n}" for n in range(64)]
    assert server.requests == 1


def test_verify_token_returns_the_record(server: JWKSServer, issuer: Issuer) -> None:
    with SyncTokenVerifier.for_server(server.url) as verifier:
        verified = verifier.verify_token(issuer.token(sub="me", role="admin"))
    assert verified.claims["role"] == "admin"
    assert verified.kid == issuer.current_key.kid
    assert verified.alg == "EdDSA"


def test_errors_reach_the_calling_thread(server: JWKSServer, issuer: Issuer) -> None:
    with SyncTokenVerifier.for_server(server.url) as verifier:
        with pytest.raises(ExpiredTokenError):
            verifier.verify(issuer.expired_token())
        with pytest.raises(MalformedTokenError):
            verifier.verify("not-a-token")
        # The loop thread is still serving after refusals.
        assert verifier.verify(issuer.token(sub="after"))["sub"] == "after"


def test_key_server_down_is_a_key_set_error(server: JWKSServer, issuer: Issuer) -> None:
    server.status = 503
    with SyncTokenVerifier.for_server(server.url) as verifier:
        with pytest.raises(KeySetError):
            verifier.refresh()
        with pytest.raises(KeySetError):
            verifier.verify(issuer.token())


def test_refresh_warms_the_key_set(server: JWKSServer, issuer: Issuer) -> None:
    with SyncTokenVerifier.for_server(server.url) as verifier:
        verifier.refresh()
        assert server.requests == 1
        assert verifier.verifier.jwks.status().ready
        verifier.verify(issuer.token())
    assert server.requests == 1


def test_closed_verifier_refuses_and_close_is_idempotent(
    server: JWKSServer, issuer: Issuer
) -> None:
    verifier = SyncTokenVerifier(TokenVerifier.for_server(server.url))
    verifier.close()  # never started: nothing to stop
    with pytest.raises(RuntimeError, match="closed"):
        verifier.verify(issuer.token())
    started = SyncTokenVerifier.for_server(server.url)
    started.verify(issuer.token())
    started.close()
    started.close()
    with pytest.raises(RuntimeError, match="closed"):
        started.verify(issuer.token())


def test_a_verifier_never_closed_does_not_hold_the_process(
    server: JWKSServer, issuer: Issuer
) -> None:
    script = textwrap.dedent(
        f"""
        from starlette_betterauth import SyncTokenVerifier
        verifier = SyncTokenVerifier.for_server({server.url!r})
        print(verifier.verify({issuer.token(sub="job")!r})["sub"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "job"
