"""The demo, ``examples/demo/run.py``, end to end.

A headless Chromium (Debian's package, driven by Playwright) signs up on the demo page through
the real Better Auth server and calls the example API, once with a JWT and once with Better
Auth's session cookies alone; the development-issuer fallback is driven with plain HTTP, as its
printed ``curl`` commands would. Each run is stopped with
SIGINT, as Ctrl-C would, and every process it started must be gone afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from _better_auth import REQUIRE_ENV, require_server
from _helpers import CHROMIUM, CHROMIUM_ARGS
from playwright.sync_api import Page, Request, expect, sync_playwright

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "examples" / "demo" / "run.py"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class RunningDemo:
    """A running ``run.py``: its page URL, output so far, and the processes it started."""

    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path
    children: list[psutil.Process]

    def output(self) -> str:
        return self.stdout.read_text("utf-8", "replace")


@contextmanager
def running_demo(*args: str) -> Iterator[RunningDemo]:
    """Start ``run.py`` on free ports; on exit stop it with SIGINT and check nothing is left."""
    with tempfile.TemporaryDirectory(prefix="demo-") as tmp:
        stdout, stderr = Path(tmp, "stdout"), Path(tmp, "stderr")
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, str(RUN), "--port", "0", *args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        try:
            match = None
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while match is None and process.poll() is None and time.monotonic() < deadline:
                match = re.search(r"Demo page: (http://127\.0\.0\.1:\d+/)", stdout.read_text())
                time.sleep(0.05)
            assert match is not None, f"the demo did not start:\n{stderr.read_text()[-3000:]}"
            children = psutil.Process(process.pid).children(recursive=True)
            yield RunningDemo(process, match.group(1), stdout, stderr, children)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                code = process.wait(STOP_TIMEOUT)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert code == 0, stderr.read_text()[-3000:]
        assert "[demo] stopped" in stderr.read_text()


def assert_all_gone(processes: list[psutil.Process]) -> None:
    """Every process (checked by PID and start time, so a reused PID is not mistaken)."""
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == [], f"still running after the demo stopped: {alive}"


def require_chromium() -> None:
    """Skip without Debian's chromium (fail when ``BETTER_AUTH_REQUIRE_SERVER=1``)."""
    if os.path.exists(CHROMIUM):
        return
    reason = f"{CHROMIUM} is missing (Debian's `chromium` package; `make test` installs it)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def expect_status(page: Page, route: str, status: int) -> None:
    page.click(f"#call-{route}")
    expect(page.locator(f"#result-{route}")).to_have_attribute("data-status", str(status))


def expect_no_results(page: Page) -> None:
    """No API answer on screen: none was made with the token now shown."""
    for route in ("public", "me", "admin", "notes"):
        expect(page.locator(f"#result-{route}")).not_to_have_attribute(
            "data-status", re.compile("")
        )
        expect(page.locator(f"#result-{route} .status")).to_be_empty()
        expect(page.locator(f"#result-{route} .body")).to_be_empty()


def shown_claims(page: Page) -> dict[str, Any]:
    """The claims of the JWT the page shows, decoded here."""
    payload = page.locator("#jwt").inner_text().split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def expect_readable_times(page: Page) -> None:
    """``iat`` and ``exp`` are followed by their UTC time in the claims panel."""
    claims = shown_claims(page)
    for name in ("iat", "exp"):
        when = datetime.fromtimestamp(claims[name], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        line = re.compile(rf'"{name}": {claims[name]},? // {re.escape(when)}')
        expect(page.locator("#claims")).to_contain_text(line)


@pytest.mark.browser
@pytest.mark.integration
def test_demo_page_signs_up_gets_a_jwt_and_calls_the_api() -> None:
    require_server()
    require_chromium()
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    with running_demo() as demo, sync_playwright() as playwright:
        assert len(demo.children) >= 2  # the Better Auth server and uvicorn
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(demo.url)
            expect(page.locator("#who")).to_have_text("Not signed in.")
            expect(page.locator("#account-card h2")).to_have_text(
                re.compile(r"^1\s*Sign up or sign in$"), use_inner_text=True
            )
            expect(page.locator("#get-jwt")).to_be_visible()

            # Calls without signing in: the public route answers, /me wants a token.
            expect_status(page, "public", 200)
            expect_status(page, "me", 401)
            expect(page.locator("#result-me .body")).to_contain_text("WWW-Authenticate: Bearer")

            page.fill("#email", email)
            page.fill("#password", "correct-horse-battery")
            page.click("#sign-up")
            expect(page.locator("#who")).to_contain_text(f"Signed in as {email} (role: user)")
            expect(page.locator("#claims")).to_contain_text(f'"email": "{email}"')
            expect(page.locator("#jwt-header")).to_contain_text('"alg": "EdDSA"')
            expect_readable_times(page)

            expect_status(page, "public", 200)
            expect_status(page, "me", 200)
            expect(page.locator("#result-me .body")).to_contain_text(email)
            expect(page.locator("#result-me .body")).to_contain_text('"kind": "jwt"')
            expect(page.locator("#result-me .status")).to_have_text("200 OK")
            expect_status(page, "admin", 403)
            expect_status(page, "notes", 200)  # a bearer token needs no trusted origin
            expect(page.locator("#result-notes .body")).to_contain_text('"note": "written at ')

            page.click("#make-admin")
            expect(page.locator("#who")).to_contain_text("(role: user,admin)")
            expect(page.locator("#claims")).to_contain_text('"role": "user,admin"')
            expect_status(page, "admin", 200)
            expect(page.locator("#result-admin .status")).to_have_text("200 OK")

            # Signing out and in again gets a JWT with the new role straight away.
            page.click("#sign-out")
            expect(page.locator("#who")).to_have_text("Not signed in.")
            expect_no_results(page)  # the signed-out visitor sees nothing of the previous user
            page.click("#sign-in")
            expect(page.locator("#who")).to_contain_text("(role: user,admin)")
            expect_status(page, "admin", 200)

            # A reload finds the session: the form shows the signed-in user's address.
            page.reload()
            expect(page.locator("#who")).to_contain_text(f"Signed in as {email}")
            expect(page.locator("#email")).to_have_value(email)
            expect(page.locator("#name")).to_have_value("Ada Lovelace")
            expect_no_results(page)
            assert errors == []
        finally:
            browser.close()
    assert_all_gone(demo.children)


def cookie_header(cookies: list[Any]) -> str:
    """The Cookie header the browser sends to 127.0.0.1 (any port: cookies ignore ports)."""
    return "; ".join(f"{c['name']}={c['value']}" for c in cookies if c["domain"] == "127.0.0.1")


@pytest.mark.browser
@pytest.mark.integration
def test_demo_page_calls_the_api_with_the_session_cookie() -> None:
    require_server()
    require_chromium()
    email = f"grace-{uuid.uuid4().hex[:8]}@example.com"
    with running_demo() as demo, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            requests: list[Request] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request))
            page.goto(demo.url)
            api_url: str = page.evaluate("window.DEMO_CONFIG.apiUrl")
            page_origin = demo.url.rstrip("/")
            page.check("#transport-cookie")
            expect(page.locator("#cookie-card")).to_be_visible()
            expect(page.locator("#jwt-card")).to_be_hidden()
            expect_status(page, "me", 401)  # no cookie yet

            page.fill("#email", email)
            page.fill("#password", "correct-horse-battery")
            page.click("#sign-up")
            expect(page.locator("#who")).to_contain_text(f"Signed in as {email} (role: user)")
            expect(page.locator("#message")).to_contain_text("the browser sends them to the API")
            expect_status(page, "me", 200)
            expect(page.locator("#result-me .body")).to_contain_text('"kind": "session_cookie"')
            expect(page.locator("#result-me .body")).to_contain_text(email)
            expect_status(page, "admin", 403)
            # An unsafe request with the cookie, from the page's own (trusted) origin.
            expect_status(page, "notes", 200)
            expect(page.locator("#result-notes .body")).to_contain_text('"note": "written at ')
            page.click("#make-admin")
            expect(page.locator("#who")).to_contain_text("(role: user,admin)")
            expect(page.locator("#message")).to_contain_text("a new session_data cookie")
            expect_status(page, "admin", 200)

            # The page handled no token: no JWT was fetched, and the API saw none.
            assert not [r for r in requests if r.url.split("?")[0].endswith("/api/auth/token")]
            to_api = [r for r in requests if r.url.startswith(api_url)]
            assert len(to_api) >= 5
            assert all("authorization" not in r.headers for r in to_api)
            expect(page.locator("#jwt")).to_have_text("No token yet.")

            # The same cookies sent by a page of another origin: refused (cross-site).
            header = cookie_header(context.cookies())
            assert "better-auth.session_token=" in header
            assert "better-auth.session_data=" in header
            with httpx.Client(base_url=api_url, timeout=15.0) as client:
                note = {"note": "from elsewhere"}
                for origin, status in ((page_origin, 200), ("http://evil.example", 403)):
                    sent = client.post(
                        "/notes", json=note, headers={"cookie": header, "origin": origin}
                    )
                    assert sent.status_code == status, sent.text
                token_only = "; ".join(
                    part for part in header.split("; ") if "session_data" not in part
                )

                page.click("#sign-out")
                expect(page.locator("#who")).to_have_text("Not signed in.")
                expect_no_results(page)
                expect_status(page, "me", 401)
                expect_status(page, "notes", 401)
                # Better Auth deleted the session: its session_token is refused now.
                gone = client.get("/me", headers={"cookie": token_only})
                assert gone.status_code == 401

            # The same page, the other way: a JWT, fetched once signed in again.
            page.check("#transport-jwt")
            expect(page.locator("#jwt-card")).to_be_visible()
            page.click("#sign-in")
            expect(page.locator("#who")).to_contain_text("(role: user,admin)")
            expect(page.locator("#claims")).to_contain_text(f'"email": "{email}"')
            expect_status(page, "me", 200)
            expect(page.locator("#result-me .body")).to_contain_text('"kind": "jwt"')
            assert errors == []
        finally:
            browser.close()
    assert_all_gone(demo.children)


@pytest.mark.browser
def test_demo_page_with_the_development_issuer() -> None:
    require_chromium()
    with running_demo("--dev-issuer") as demo, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(demo.url)
            expect(page.locator("#dev-issuer-reason")).to_have_text("--dev-issuer was given")
            expect(page.locator("#better-auth-account")).to_be_hidden()
            # The page describes the development issuer's steps, none of Better Auth's.
            expect(page.locator("#account-card h2")).to_have_text(
                re.compile(r"^1\s*Pick a token$"), use_inner_text=True
            )
            expect(page.locator("#get-jwt")).to_be_hidden()
            visible = page.locator("body").inner_text()
            assert "development issuer" in page.locator("header").inner_text()
            for better_auth_step in (
                "Sign up",
                "Sign in with Better Auth",
                "/api/auth/token",
                "jwt plugin",
                "make-me-admin",
                "Get a new JWT",
            ):
                assert better_auth_step not in visible
            page.click("#use-user")
            expect(page.locator("#who")).to_contain_text("Signed in as demo@example.com")
            expect_readable_times(page)
            expect_status(page, "public", 200)
            expect_status(page, "me", 200)
            expect(page.locator("#result-me .body")).to_contain_text(" UTC")
            expect_status(page, "admin", 403)
            page.click("#make-admin")
            expect(page.locator("#claims")).to_contain_text('"role": "admin"')
            expect_no_results(page)  # answers to the user token are gone with it
            expect_status(page, "admin", 200)
            assert errors == []
        finally:
            browser.close()
    assert_all_gone(demo.children)


def test_demo_without_node_falls_back_to_the_development_issuer() -> None:
    with running_demo("--dev-issuer") as demo:
        assert len(demo.children) >= 2  # the development issuer and uvicorn
        output = demo.output()
        token = re.search(r"^  export USER_TOKEN=(\S+)$", output, re.M)
        admin_token = re.search(r"^  export ADMIN_TOKEN=(\S+)$", output, re.M)
        api = re.search(r"^  Python API +(http://127\.0\.0\.1:\d+) ", output, re.M)
        assert token is not None, output
        assert admin_token is not None, output
        assert api is not None, output
        assert f"curl -i {api.group(1)}/public" in output
        user = {"authorization": f"Bearer {token.group(1)}"}
        admin = {"authorization": f"Bearer {admin_token.group(1)}"}
        with httpx.Client(base_url=api.group(1), timeout=15.0) as client:
            assert client.get("/public").status_code == 200
            assert client.get("/me").status_code == 401
            me = client.get("/me", headers=user)
            assert me.status_code == 200
            assert "demo@example.com" in me.text
            assert client.get("/admin", headers=user).status_code == 403
            assert client.get("/admin", headers=admin).status_code == 200
        with httpx.Client(base_url=demo.url, timeout=15.0) as client:
            page = client.get("/")
            assert page.status_code == 200
            assert "content-security-policy" in page.headers
            for path in ("/", "/app.js", "/config.js"):
                head = client.head(path)
                assert head.status_code == 200
                assert head.content == b""
                assert head.headers["content-length"] == str(len(client.get(path).content))
            assert client.head("/nothing-here").status_code == 404
            config = client.get("/config.js").text
            assert '"mode": "dev-issuer"' in config
            assert client.get("/nothing-here").status_code == 404
    assert_all_gone(demo.children)


def test_demo_page_port_taken_is_reported() -> None:
    # An explicit --port that is busy is an error, not a silent move elsewhere.
    with running_demo("--dev-issuer") as demo:
        port = demo.url.rsplit(":", 1)[1].rstrip("/")
        result = subprocess.run(
            [sys.executable, str(RUN), "--dev-issuer", "--port", port],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT,
        )
    assert result.returncode == 1
    assert f"cannot serve the page on 127.0.0.1:{port}" in result.stderr
