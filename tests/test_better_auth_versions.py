"""The compatibility matrix's Better Auth lines: JWTs of the jwt plugin from 1.5, 1.6 and 1.7.

Each line is a small npm project of its own, with a lockfile, in
``examples/better-auth-server/versions/<line>/``; all run the same minimal server
(``versions/jwt-server.mjs``: jwt, admin and bearer plugins, in-memory database). Each
installed line is started on a free loopback port with an EdDSA and an RS256 key, a user signs
up through its real HTTP API, and the JWTs it issues (``/token`` and the ``set-auth-jwt`` header)
go through ``TokenVerifier`` and the middleware. A line whose packages are not installed is
skipped, or fails under ``BETTER_AUTH_REQUIRE_SERVER=1`` as in CI (``make node`` installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _better_auth import PASSWORD, REQUIRE_ENV, bearer, stop_process, unverified_part
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, TokenVerifier
from starlette_betterauth.errors import InvalidSignatureError

pytestmark = pytest.mark.integration

VERSIONS = Path(__file__).resolve().parent.parent / "examples" / "better-auth-server" / "versions"
#: The Better Auth lines of the matrix; each has a folder in ``VERSIONS``.
LINES = ("1.5", "1.6", "1.7")
ALGORITHMS = ("EdDSA", "RS256")
STARTUP_TIMEOUT = 30.0
READY = re.compile(r'^\{"ready":true.*\}$', re.M)


@dataclass(frozen=True, slots=True)
class LineServer:
    """One running line: its base URL, signing algorithm and Better Auth version."""

    line: str
    url: str
    alg: str
    version: str


def line_unavailable(line: str) -> str | None:
    """Why ``line`` cannot be started here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed"
    if not (VERSIONS / line / "node_modules" / "better-auth").is_dir():
        return f"Better Auth {line} is not installed: run `npm ci` in {VERSIONS / line}"
    return None


def start_line(line: str, alg: str, tmp: Path) -> tuple[subprocess.Popen[bytes], LineServer]:
    """Start ``node server.mjs`` of ``line``; wait for its ready line (bounded)."""
    node = shutil.which("node")
    assert node is not None
    out, err = tmp / "stdout", tmp / "stderr"
    env = {**os.environ, "PORT": "0", "JWT_ALG": alg}
    env["BETTER_AUTH_SECRET"] = "matrix-secret-" + uuid.uuid4().hex
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [node, "server.mjs"],
            cwd=VERSIONS / line,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        match = READY.search(out.read_text("utf-8", "replace"))
        if match is not None:
            ready = json.loads(match.group(0))
            return process, LineServer(line, ready["url"], ready["alg"], ready["version"])
        time.sleep(0.02)
    stop_process(process)
    raise RuntimeError(f"Better Auth {line} did not start: {err.read_text()[-2000:]}")


@pytest.fixture(scope="module", params=[(line, alg) for line in LINES for alg in ALGORITHMS])
def line_server(request: pytest.FixtureRequest) -> Iterator[LineServer]:
    """Each installed Better Auth line, once per signing algorithm."""
    line, alg = request.param
    reason = line_unavailable(line)
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix=f"better-auth-{line}-") as tmp:
        process, server = start_line(line, alg, Path(tmp))
        try:
            yield server
        finally:
            stop_process(process)


@dataclass(frozen=True, slots=True)
class Tokens:
    """A signed-up user's id and the JWTs the server issued for them."""

    user_id: str
    token: str
    session_jwt: str


async def sign_up(http: httpx.AsyncClient, server: LineServer) -> Tokens:
    """Sign a new user up, then get a JWT from ``/token`` and from get-session's header."""
    email = f"matrix-{uuid.uuid4().hex[:12]}@example.com"
    api = f"{server.url}/api/auth"
    response = await http.post(
        f"{api}/sign-up/email", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert response.status_code == 200, response.text
    user_id = response.json()["user"]["id"]
    session_token = response.headers["set-auth-token"]
    token = await http.get(f"{api}/token", headers=bearer(session_token))
    assert token.status_code == 200, token.text
    session = await http.get(f"{api}/get-session", headers=bearer(session_token))
    assert session.status_code == 200, session.text
    return Tokens(user_id, token.json()["token"], session.headers["set-auth-jwt"])


async def me(request: Request) -> JSONResponse:
    """The caller as the middleware saw it."""
    user: BetterAuthUser = request.state.user
    return JSONResponse({"id": user.id, "roles": sorted(user.roles), "kind": user.kind})


def test_each_line_runs_the_version_its_lockfile_pins() -> None:
    for line in LINES:
        lock = json.loads((VERSIONS / line / "package-lock.json").read_text())
        version = lock["packages"]["node_modules/better-auth"]["version"]
        assert version.startswith(f"{line}."), (line, version)


@pytest.mark.anyio
async def test_jwts_of_each_line_are_verified(line_server: LineServer) -> None:
    server = line_server
    assert server.version.startswith(f"{server.line}."), server
    async with httpx.AsyncClient(timeout=15.0) as http:
        tokens = await sign_up(http, server)
    verifier = TokenVerifier.for_server(server.url)
    try:
        for token in (tokens.token, tokens.session_jwt):
            header = unverified_part(token, 0)
            assert header.keys() == {"alg", "kid"}
            assert header["alg"] == server.alg
            claims = await verifier.verify(token)
            assert claims["sub"] == tokens.user_id
            assert claims["iss"] == claims["aud"] == server.url
            assert claims["exp"] - claims["iat"] == 900
            assert claims["role"] == "user"
            assert claims["banned"] is False
        head, payload, signature = tokens.token.split(".")
        forged = f"{head}.{payload}.{signature[:-4]}AAAA"
        with pytest.raises(InvalidSignatureError):
            await verifier.verify(forged)
    finally:
        await verifier.aclose()


@pytest.mark.anyio
async def test_the_middleware_accepts_each_lines_jwts(line_server: LineServer) -> None:
    server = line_server
    async with httpx.AsyncClient(timeout=15.0) as http:
        tokens = await sign_up(http, server)
    app = Starlette(routes=[Route("/me", me)])
    app.add_middleware(BetterAuthMiddleware, base_url=server.url)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        accepted = await client.get("/me", headers=bearer(tokens.token))
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"id": tokens.user_id, "roles": ["user"], "kind": "jwt"}
        refused = await client.get("/me")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
