"""Smoke test of an installed wheel, run by .ci/release-check in a clean virtualenv.

Usage: ``python smoke_wheel.py VERSION PATH_TO_CONSOLE_SCRIPT``, from outside the source tree:
the import, the version, the command line (``--version``, ``inspect``, ``verify``), the pytest
plugin's entry point, and a token of the testing kit verified by ``TokenVerifier`` and by the
middleware in a Starlette app.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import starlette_betterauth
from starlette_betterauth import BetterAuthMiddleware, TokenVerifier
from starlette_betterauth.errors import ExpiredTokenError
from starlette_betterauth.testing import Issuer, JWKSServer


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script; never echo the token it was given."""
    # Our own console script and interpreter, with arguments built here.
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603  # noqa: S603 (our own console script)


async def me(request: Request) -> JSONResponse:
    """The caller's id."""
    return JSONResponse({"id": request.state.user.id})


async def verify(server: JWKSServer, issuer: Issuer) -> None:
    """A token verified by TokenVerifier and by the middleware; an expired one refused."""
    token = issuer.token(user_id="smoke-user", role="user,admin")
    verifier = TokenVerifier.for_server(server.url)
    try:
        claims = await verifier.verify(token)
        assert claims["sub"] == "smoke-user", claims
        try:
            await verifier.verify(issuer.expired_token())
        except ExpiredTokenError:
            pass
        else:
            raise AssertionError("an expired token was accepted")
    finally:
        await verifier.aclose()
    app = Starlette(routes=[Route("/me", me)])
    app.add_middleware(BetterAuthMiddleware, base_url=server.url)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://smoke") as client:
        accepted = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 200
        assert accepted.json() == {"id": "smoke-user"}
        refused = await client.get("/me")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"


def main() -> None:
    """Check the installed package; exit non-zero on the first failure."""
    version, script = sys.argv[1], sys.argv[2]
    location = Path(starlette_betterauth.__file__).resolve()
    assert "site-packages" in location.parts, f"imported from {location}, not the wheel"
    assert starlette_betterauth.__version__ == version, starlette_betterauth.__version__
    assert importlib.metadata.version("starlette-betterauth") == version
    assert (location.parent / "py.typed").is_file()
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("starlette_betterauth") == "starlette_betterauth.pytest_plugin", plugins

    shown = run(script, "--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"starlette-betterauth {version}"
    module = run(sys.executable, "-m", "starlette_betterauth", "--version")
    assert module.returncode == 0
    assert version in module.stdout

    issuer = Issuer()
    with JWKSServer(issuer) as server:
        token = issuer.token(user_id="smoke-user")
        inspected = run(script, "inspect", token, "--json")
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["header"]["alg"] == "EdDSA"
        verified = run(script, "verify", token, "--base-url", server.url)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        refused = run(script, "verify", issuer.expired_token(), "--base-url", server.url)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert token not in verified.stdout + verified.stderr
        asyncio.run(verify(server, issuer))
    print(f"[release] smoke test passed: starlette-betterauth {version} from {location.parent}")


if __name__ == "__main__":
    main()
