"""The starlette-betterauth demo in one command: ``make demo`` (``python examples/demo/run.py``).

It starts three things on 127.0.0.1 and stops all of them on Ctrl-C:

- the real Better Auth server of ``examples/better-auth-server`` (Node; ``npm ci`` is run first
  when its packages are missing), with its development-only endpoints turned on;
- the example API, ``examples/starlette_app.py`` behind ``BetterAuthMiddleware``, under uvicorn;
- a web page where you sign up or sign in through Better Auth and call the API's public route,
  your claims, the admin-only route (403 until you make yourself admin) and a ``POST``, in one
  of two ways: with a JWT from Better Auth (``BearerJWT``), or with no token at all, the
  browser sending Better Auth's session cookies (``SessionCookie``). Cookies belong to a host,
  not a port, so the API on 127.0.0.1 gets the cookies the Better Auth server on 127.0.0.1
  set; the API allows the page's origin credentialed CORS requests and trusts it for unsafe
  requests that carry a cookie.

Without Node.js (or with ``--dev-issuer``) the package's development issuer,
``python -m starlette_betterauth dev-issuer``, stands in for Better Auth: it serves a key set
and mints tokens, and the demo prints them with ``curl`` commands for the same API.

Options: ``--port`` (the page; default 8000, or a free port when 8000 is taken),
``--api-port`` and ``--auth-port`` (default: free ports), ``--app`` (another ``module:app``
from ``examples/``, e.g. ``fastapi_app:app``), ``--dev-issuer``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent
SERVER_DIR = EXAMPLES / "better-auth-server"
HOST = "127.0.0.1"
DEFAULT_PAGE_PORT = 8000
DEFAULT_APP = "starlette_app:app"
MIN_NODE_MAJOR = 20
STARTUP_TIMEOUT = 60.0
INSTALL_TIMEOUT = 600.0
STOP_TIMEOUT = 5.0
#: What the page is made of: path -> (file in this directory, content type).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
NODE_READY = re.compile(r'^\{"ready":true.*\}$')
UVICORN_READY = re.compile(r"Uvicorn running on (http://\S+:\d+)")
DEV_ISSUER_READY = re.compile(r'^\{"base_url".*\}$')
DEV_TOKEN_LIFETIME = 12 * 3600


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived."""


class StartupError(Exception):
    """A part of the demo could not be started."""


def say(text: str = "") -> None:
    """Print to stdout at once (the banner and what the user should do)."""
    print(text, flush=True)


def note(text: str) -> None:
    """Print a progress or diagnostic line to stderr."""
    print(f"[demo] {text}", file=sys.stderr, flush=True)


# -- child processes -----------------------------------------------------------------------------


class Child:
    """A child process in its own process group, its output forwarded to stderr with a prefix.

    Its own process group means a terminal's Ctrl-C reaches only this script, which then
    stops the children in order; :meth:`stop` signals the whole group, so nothing the child
    started itself outlives it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: re.Pattern[str] | None = None,
    ) -> None:
        self.name = name
        self._ready = ready
        self._match: re.Match[str] | None = None
        self._ready_or_gone = threading.Event()
        self.process = subprocess.Popen(  # noqa: S603 - argv is built by this script
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._forwarder = threading.Thread(target=self._forward, name=f"{name}-output", daemon=True)
        self._forwarder.start()

    def _forward(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if self._ready is not None and self._match is None:
                match = self._ready.search(line)
                if match is not None:
                    self._match = match
                    self._ready_or_gone.set()
                    continue
            print(f"[{self.name}] {line}", file=sys.stderr, flush=True)
        self._ready_or_gone.set()

    def wait_ready(self, stop: threading.Event, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        """Wait for the line that says the child is ready; raise if it exits or times out."""
        deadline = time.monotonic() + timeout
        while not self._ready_or_gone.wait(0.1):
            if stop.is_set():
                raise Interrupted
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} did not start within {timeout:.0f} s")
        if self._match is None:
            code = self.process.wait()
            raise StartupError(f"{self.name} exited with code {code} before it was ready")
        return self._match

    def wait_exit(self, stop: threading.Event, timeout: float) -> int:
        """Wait for the child to finish on its own; raise on Ctrl-C or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.process.wait(0.1)
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    raise Interrupted from None
                if time.monotonic() > deadline:
                    raise StartupError(f"{self.name} took more than {timeout:.0f} s") from None

    def stop(self) -> None:
        """SIGTERM the child's process group, SIGKILL what is left after a grace period."""
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                note(f"{self.name} did not stop within {STOP_TIMEOUT:.0f} s: killing it")
                self._signal_group(signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        # Anything the child left running in its group goes with it.
        self._signal_group(signal.SIGKILL)
        # Its last lines may still be on their way through the forwarder.
        self._forwarder.join(STOP_TIMEOUT)
        if self.process.stdout is not None and not self._forwarder.is_alive():
            self.process.stdout.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


# -- the page ------------------------------------------------------------------------------------


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


class Site:
    """A small static server for the page, plus ``/config.js`` telling it where things are."""

    def __init__(self, port: int | None) -> None:
        try:
            self.server = _PageServer((HOST, DEFAULT_PAGE_PORT if port is None else port), _Handler)
        except OSError as exc:
            if port is not None:
                raise StartupError(
                    f"cannot serve the page on {HOST}:{port}: {exc.strerror}"
                ) from exc
            note(f"port {DEFAULT_PAGE_PORT} is taken: serving the page on a free port instead")
            self.server = _PageServer((HOST, 0), _Handler)
        self.server.site = self
        self.url = f"http://{HOST}:{self.server.server_address[1]}/"
        self.origin = self.url.rstrip("/")
        self.config: Callable[[], dict[str, Any]] = dict
        self.connect_src: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self, config: Callable[[], dict[str, Any]], connect_src: list[str]) -> None:
        """Serve the page; ``config()`` is what ``/config.js`` hands it on each load."""
        self.config = config
        self.connect_src = connect_src
        self._thread = threading.Thread(target=self.server.serve_forever, name="page", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(STOP_TIMEOUT)
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: _PageServer
    server_version = "demo"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, *, head: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/config.js":
            config = json.dumps(self.server.site.config(), indent=2)
            body = f"window.DEMO_CONFIG = {config};\n".encode()
            self._send(200, "text/javascript; charset=utf-8", body, head=head)
        elif path in STATIC:
            name, content_type = STATIC[path]
            self._send(200, content_type, (HERE / name).read_bytes(), head=head)
        elif path == "/favicon.ico":
            self._send(204, "image/x-icon", b"", head=head)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n", head=head)

    def _send(self, status: int, content_type: str, body: bytes, *, head: bool) -> None:
        """Answer with ``body``; to HEAD, the same status and headers without it."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # The page talks to the Better Auth server and the API only; nothing else runs.
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src {' '.join(self.server.site.connect_src)}; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'",
        )
        self.end_headers()
        if not head:
            self.wfile.write(body)


# -- the demo ------------------------------------------------------------------------------------


def node_unavailable() -> str | None:
    """Why the Better Auth server cannot run here (before any install), or None."""
    node = shutil.which("node")
    if node is None:
        return "Node.js is not installed"
    try:
        version = subprocess.run(  # noqa: S603 - the node found on PATH
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "`node --version` failed"
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < MIN_NODE_MAJOR:
        return f"Node.js {version} is too old (the Better Auth server needs {MIN_NODE_MAJOR}+)"
    if not (SERVER_DIR / "node_modules" / "better-auth").is_dir() and shutil.which("npm") is None:
        return "the server's Node packages are not installed and npm is not available"
    return None


class Demo:
    """Everything the demo runs, started in order and stopped in reverse."""

    def __init__(self, args: argparse.Namespace, stop: threading.Event) -> None:
        self.args = args
        self.stop = stop
        self.children: list[Child] = []
        self.site: Site | None = None

    def run(self) -> int:
        """Start everything, print where it is, and wait for Ctrl-C; return the exit code."""
        self.site = Site(self.args.port)
        reason = "--dev-issuer was given" if self.args.dev_issuer else node_unavailable()
        if reason is None:
            reason = self._install_node_packages()
        if reason is None:
            self._start_with_better_auth(self.site)
        else:
            self._start_with_dev_issuer(self.site, reason)
        say()
        say(f"  Demo page: {self.site.url}")
        say()
        say("Press Ctrl-C to stop.")
        while not self.stop.wait(0.2):
            for child in self.children:
                code = child.process.poll()
                if code is not None:
                    note(f"{child.name} exited unexpectedly with code {code}: stopping the demo")
                    return 1
        return 0

    def close(self) -> None:
        """Stop the page and every child, newest first, by process group."""
        if self.site is not None:
            self.site.close()
        for child in reversed(self.children):
            child.stop()

    def _start(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def _install_node_packages(self) -> str | None:
        """``npm ci`` when the server's packages are missing; the reason it failed, or None."""
        if (SERVER_DIR / "node_modules" / "better-auth").is_dir():
            return None
        npm = shutil.which("npm")
        assert npm is not None
        note(f"installing the Better Auth server's Node packages (npm ci in {SERVER_DIR})")
        install = self._start(
            Child("npm", [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SERVER_DIR)
        )
        try:
            code = install.wait_exit(self.stop, INSTALL_TIMEOUT)
        finally:
            self.children.remove(install)
            install.stop()
        return None if code == 0 else f"`npm ci` failed with code {code}"

    def _start_api(self, auth_url: str, page_origin: str, *, session_cookies: bool) -> str:
        env = {
            **os.environ,
            "BETTER_AUTH_URL": auth_url,
            "CORS_ORIGINS": page_origin,
            # With Better Auth the page may call with its session cookies instead of a JWT.
            "SESSION_COOKIES": "1" if session_cookies else "0",
            "PYTHONUNBUFFERED": "1",
        }
        argv = [sys.executable, "-m", "uvicorn", self.args.app, "--app-dir", str(EXAMPLES)]
        argv += ["--host", HOST, "--port", str(self.args.api_port), "--log-level", "info"]
        api = self._start(Child("api", argv, env=env, ready=UVICORN_READY))
        return api.wait_ready(self.stop).group(1)

    def _start_with_better_auth(self, site: Site) -> None:
        node = shutil.which("node")
        assert node is not None
        env = {
            **os.environ,
            "PORT": str(self.args.auth_port),
            "TRUSTED_ORIGINS": site.origin,
            "DEV_ENDPOINTS": "1",
            # A fresh secret per run: the database is in memory, nothing outlives a restart.
            "BETTER_AUTH_SECRET": secrets.token_urlsafe(32),
        }
        env.pop("BETTER_AUTH_URL", None)
        auth = self._start(
            Child("better-auth", [node, "server.mjs"], env=env, cwd=SERVER_DIR, ready=NODE_READY)
        )
        ready = json.loads(auth.wait_ready(self.stop).group(0))
        auth_url: str = ready["url"]
        api_url = self._start_api(auth_url, site.origin, session_cookies=True)
        config = {
            "mode": "better-auth",
            "authUrl": auth_url,
            "authBasePath": ready["basePath"],
            "apiUrl": api_url,
            "alg": ready["alg"],
        }
        site.start(lambda: config, [auth_url, api_url])
        say("starlette-betterauth demo")
        say(f"  Better Auth server  {auth_url}  (Node, in memory: a restart forgets every user)")
        say(f"  Python API          {api_url}  ({self.args.app} behind BetterAuthMiddleware)")
        say("  The page calls the API with a JWT, or with Better Auth's session cookie.")

    def _start_with_dev_issuer(self, site: Site, reason: str) -> None:
        # The package's development issuer: a key set on 127.0.0.1 and ready-made tokens.
        argv = [sys.executable, "-m", "starlette_betterauth", "dev-issuer", "--json"]
        argv += ["--expires-in", str(DEV_TOKEN_LIFETIME)]
        issuer = self._start(Child("dev-issuer", argv, ready=DEV_ISSUER_READY))
        ready = json.loads(issuer.wait_ready(self.stop).group(0))
        issuer_url: str = ready["base_url"]
        api_url = self._start_api(issuer_url, site.origin, session_cookies=False)
        config = {
            "mode": "dev-issuer",
            "reason": reason[:1].upper() + reason[1:],
            "issuerUrl": issuer_url,
            "apiUrl": api_url,
            "user": ready["user_token"],
            "admin": ready["admin_token"],
        }
        site.start(lambda: config, [api_url])
        say("starlette-betterauth demo, with the development issuer")
        say(f"  ({reason}: `python -m starlette_betterauth dev-issuer` stands in for Better Auth)")
        say(f"  Development issuer  {issuer_url}  (key set at {ready['jwks_url']})")
        say(f"  Python API          {api_url}  ({self.args.app} behind BetterAuthMiddleware)")
        say()
        say(f"Tokens for a demo user and an admin, valid for {DEV_TOKEN_LIFETIME // 3600} hours:")
        say(f"  export USER_TOKEN={ready['user_token']}")
        say(f"  export ADMIN_TOKEN={ready['admin_token']}")
        say()
        say("Try:")
        say(f"  curl -i {api_url}/public")
        say(f'  curl -i -H "Authorization: Bearer $USER_TOKEN" {api_url}/me')
        say(f'  curl -i -H "Authorization: Bearer $USER_TOKEN" {api_url}/admin     # 403')
        say(f'  curl -i -H "Authorization: Bearer $ADMIN_TOKEN" {api_url}/admin    # 200')


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(
            "Sign in with a real Better Auth server and call a Starlette API with a JWT or "
            "with the session cookie."
        )
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port of the page (default {DEFAULT_PAGE_PORT}, or a free one when it is taken)",
    )
    parser.add_argument("--api-port", type=int, default=0, help="port of the API (default: free)")
    parser.add_argument(
        "--auth-port", type=int, default=0, help="port of the Better Auth server (default: free)"
    )
    parser.add_argument(
        "--app",
        default=DEFAULT_APP,
        help=f"the API, as module:attribute importable from examples/ (default {DEFAULT_APP})",
    )
    parser.add_argument(
        "--dev-issuer",
        action="store_true",
        help="use the package's development issuer instead of Better Auth (no Node needed)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or SIGTERM, SIGHUP); return the exit code."""
    args = parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # SIGHUP too: the children have sessions of their own, so a closed terminal reaches
    # only this script, which must take them down with it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    demo = Demo(args, stop)
    try:
        return demo.run()
    except Interrupted:
        return 0
    except StartupError as exc:
        note(str(exc))
        return 1
    finally:
        note("stopping")
        demo.close()
        note("stopped")


if __name__ == "__main__":
    raise SystemExit(main())
