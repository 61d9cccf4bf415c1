"""Shared fixtures: every anyio test runs on asyncio and on trio; `cli` runs the command line."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

import httpx
import pytest
from _helpers import RunCLI, asgi_client
from starlette.types import ASGIApp

from starlette_betterauth.__main__ import main
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


@pytest.fixture
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the module's ``app`` fixture."""
    async with asgi_client(app) as c:
        yield c


#: The MCP SDK is a dependency group of its own (it needs newer anyio, httpx and pyjwt than
#: the package's lowest bounds, which one matrix cell installs without it).
collect_ignore = [] if importlib.util.find_spec("mcp") else ["test_mcp.py"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> RunCLI:
    """Run the command line in-process; return (exit code, stdout, stderr)."""
    monkeypatch.delenv("BETTER_AUTH_URL", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run
