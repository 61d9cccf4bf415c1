"""The app as a new user runs it: a misconfiguration fails the startup, refusals can be logged.

Starlette and FastAPI build ``add_middleware`` middleware at the app's first
ASGI call, the lifespan startup under a server. A ``ConfigurationError`` there
must stop the server with the message, not be taken for "lifespan unsupported"
(uvicorn's default ``--lifespan auto``) and turn every request into a 500.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from _serving import ROOT, start_uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message

from starlette_betterauth import BetterAuthMiddleware
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.testing import Issuer, JWKSServer

EXAMPLES = ROOT / "examples"
LOG_CONFIG = EXAMPLES / "uvicorn_logging.json"
NOT_CONFIGURED = (
    "BetterAuthMiddleware: ConfigurationError: no Better Auth server configured: "
    "pass base_url= (Better Auth's baseURL), or jwks_url= with issuer= and audience=, "
    "or set BETTER_AUTH_URL"
)
README_APP = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware


async def me(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.state.user.id})


app = Starlette(routes=[Route("/me", me)])
app.add_middleware(BetterAuthMiddleware)
"""


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BETTER_AUTH_URL, here and in the servers started from here."""
    monkeypatch.delenv("BETTER_AUTH_URL", raising=False)


# -- in process ----------------------------------------------------------------------------


def starlette_app(started: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("startup")
        yield

    async def me(request: object) -> PlainTextResponse:
        return PlainTextResponse("never")

    app = Starlette(routes=[Route("/me", me)], lifespan=lifespan)
    app.add_middleware(BetterAuthMiddleware)
    return app


def fastapi_app(started: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append("startup")
        yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(BetterAuthMiddleware)
    return app


APPS: dict[str, Callable[[list[str]], Starlette]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
}


@pytest.mark.anyio
@pytest.mark.parametrize("framework", list(APPS))
@pytest.mark.usefixtures("unconfigured")
async def test_lifespan_startup_fails_with_the_message(framework: str) -> None:
    started: list[str] = []
    app = APPS[framework](started)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    # The error is reported to the server, then raised, as Starlette does for its own.
    with pytest.raises(ConfigurationError, match="no Better Auth server configured"):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == [{"type": "lifespan.startup.failed", "message": NOT_CONFIGURED}]
    assert started == []  # the app's own startup never ran
    # Run without lifespan, every request raises it: never a request answered as if configured.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for _ in range(2):
            with pytest.raises(ConfigurationError, match="set BETTER_AUTH_URL"):
                await client.get("/me")


@pytest.mark.usefixtures("unconfigured")
def test_constructed_directly_it_still_raises_at_once() -> None:
    with pytest.raises(ConfigurationError, match="set BETTER_AUTH_URL"):
        BetterAuthMiddleware(Starlette())
    with pytest.raises(ConfigurationError, match="public route"):
        BetterAuthMiddleware(Starlette(), base_url="https://a.example", public=["health"])


# -- under uvicorn, with its defaults --------------------------------------------------------


def run_uvicorn(app: str, app_dir: Path) -> subprocess.CompletedProcess[str]:
    """``uvicorn app`` with uvicorn's defaults (lifespan "auto"), left to exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir), "--port", "0"],
        env={k: v for k, v in os.environ.items() if k != "BETTER_AUTH_URL"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("app", ["readme_app:app", "starlette_app:app", "fastapi_app:app"])
def test_uvicorn_exits_at_startup_with_the_message(app: str, tmp_path: Path) -> None:
    (tmp_path / "readme_app.py").write_text(README_APP, encoding="utf-8")
    app_dir = tmp_path if app.startswith("readme") else EXAMPLES
    result = run_uvicorn(app, app_dir)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert f"ERROR:    {NOT_CONFIGURED}" in lines
    assert "ERROR:    Application startup failed. Exiting." in lines
    assert "Uvicorn running" not in result.stderr
    assert "lifespan' protocol appears unsupported" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("unconfigured")
def test_without_lifespan_each_request_raises_the_error(tmp_path: Path) -> None:
    (tmp_path / "readme_app.py").write_text(README_APP, encoding="utf-8")
    output: list[str] = []
    with start_uvicorn(
        "readme_app:app", app_dir=tmp_path, env={}, args=["--lifespan", "off"], output=output
    ) as server:
        response = httpx.get(f"{server.url}/me", timeout=10)
    assert response.status_code == 500
    assert "no Better Auth server configured" not in response.text
    log = "".join(output)
    assert log.count("ConfigurationError: no Better Auth server configured") == 1


# -- the refusal log line under uvicorn ----------------------------------------------------


def refusal_lines(args: list[str]) -> list[str]:
    """Serve the Starlette example under uvicorn, make two refused requests, return the log."""
    issuer = Issuer()
    expired = issuer.expired_token()
    output: list[str] = []
    with JWKSServer(issuer) as keys:
        env = {"BETTER_AUTH_URL": keys.url}
        with start_uvicorn(
            "starlette_app:app", app_dir=EXAMPLES, env=env, args=args, output=output
        ) as server:
            base = server.url
            assert httpx.get(f"{base}/me", timeout=10).status_code == 401
            headers = {"Authorization": f"Bearer {expired}"}
            assert httpx.get(f"{base}/me", headers=headers, timeout=10).status_code == 401
    assert not any(expired in line for line in output)
    return [line.rstrip("\n") for line in output if "refused" in line]


def test_refusals_are_not_logged_under_plain_uvicorn() -> None:
    lines = refusal_lines([])
    assert lines == []  # why docs/configuration.md shows a logging configuration


def test_the_log_config_example_shows_one_line_per_refusal() -> None:
    lines = refusal_lines(["--log-config", str(LOG_CONFIG)])
    assert len(lines) == 2
    assert lines[0] == (
        "INFO:     starlette_betterauth: refused GET /me: MissingTokenError: "
        "this endpoint needs a bearer token (token none)"
    )
    assert re.fullmatch(
        r"INFO:     starlette_betterauth: refused GET /me: ExpiredTokenError: "
        r"the token has expired \(token sha256:[0-9a-f]{8}\)",
        lines[1],
    )
