"""Shared fixtures: every anyio test runs on asyncio and on trio."""

from __future__ import annotations

import pytest

from starlette_betterauth.testing import Issuer, JWKSServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test on both backends."""
    backend: str = request.param
    return backend


@pytest.fixture
def issuer(betterauth_issuer: Issuer) -> Issuer:
    """The package's own ``betterauth_issuer`` fixture: an EdDSA Better Auth-shaped issuer."""
    return betterauth_issuer


@pytest.fixture
def server(betterauth_jwks_server: JWKSServer) -> JWKSServer:
    """The package's own ``betterauth_jwks_server``: the issuer's key set on 127.0.0.1."""
    return betterauth_jwks_server
