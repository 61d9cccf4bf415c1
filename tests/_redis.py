"""A real ``redis-server`` for the tests, and Better Auth's ``secondaryStorage`` written by hand.

:class:`RedisServer` runs Debian's ``redis-server`` on a free 127.0.0.1 port and stops
it by its PID; it can be stopped and started again on the same port (its data kept in
an append-only file), or paused (SIGSTOP) to play a Redis that no longer answers.
Without the binary the fixtures skip, unless ``BETTER_AUTH_REQUIRE_SERVER=1`` (as in
CI), where they fail.

:class:`BetterAuthStorage` writes sessions, the active-sessions lists and revocation
marks under the keys and in the JSON Better Auth 1.7's internal adapter uses with a
``secondaryStorage`` (``db/internal-adapter``), so the package can be tested against
that layout without Node; the real server is tested in ``test_better_auth_redis.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from starlette_betterauth.testing import TestSession

REQUIRE_ENV = "BETTER_AUTH_REQUIRE_SERVER"
STARTUP_TIMEOUT = 15.0


def redis_unavailable() -> str | None:
    """Why no redis-server can run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install -y redis-server)"
    return None


def require_redis() -> None:
    """Skip the calling test without redis-server (fail it if ``BETTER_AUTH_REQUIRE_SERVER=1``)."""
    reason = redis_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, started and stopped by its PID."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start serving (again) on the same port, with the data it had."""
        binary = shutil.which("redis-server")
        assert binary is not None
        log = self.directory / "redis.log"
        log.write_bytes(b"")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.directory), "--logfile", str(log), "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if "Ready to accept connections" in log.read_text("utf-8", "replace"):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server did not start: {log.read_text('utf-8', 'replace')}")

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM, then SIGKILL); the port is free again after."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: answers again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A synchronous client, for the test's own reads and writes."""
        return redis.Redis.from_url(self.url, socket_timeout=5)


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in a temporary directory; stopped on exit."""
    require_redis()
    with tempfile.TemporaryDirectory(prefix="redis-") as directory:
        server = RedisServer(Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()


def _milliseconds(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


class BetterAuthStorage:
    """Writes what Better Auth 1.7 writes to its ``secondaryStorage``, under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _list(self, user_id: str) -> list[dict[str, Any]]:
        raw = self.client.get(f"{self.prefix}active-sessions-{user_id}")
        return json.loads(raw) if isinstance(raw, bytes) else []

    def _set_list(self, user_id: str, sessions: list[dict[str, Any]]) -> None:
        now = time.time() * 1000
        live = sorted((s for s in sessions if s["expiresAt"] > now), key=lambda s: s["expiresAt"])
        key = f"{self.prefix}active-sessions-{user_id}"
        if live:
            self.client.set(key, json.dumps(live), ex=int((live[-1]["expiresAt"] - now) / 1000))
        else:
            self.client.delete(key)

    def put(self, session: TestSession, **user: Any) -> None:
        """Store ``session`` as sign-in does (``user`` fields override the snapshot's)."""
        expires = _milliseconds(session.session["expiresAt"])
        value = {"session": session.session, "user": {**session.user, **user}}
        ttl = int((expires - time.time() * 1000) / 1000)
        if ttl > 0:
            self.client.set(self.prefix + session.token, json.dumps(value), ex=ttl)
        else:  # an expired session Better Auth would not have kept: kept here to test it
            self.client.set(self.prefix + session.token, json.dumps(value), ex=60)
        others = [s for s in self._list(session.user_id) if s["token"] != session.token]
        self._set_list(session.user_id, [*others, {"token": session.token, "expiresAt": expires}])

    def sign_out(self, session: TestSession) -> None:
        """Delete one session, as sign-out does."""
        self._set_list(
            session.user_id, [s for s in self._list(session.user_id) if s["token"] != session.token]
        )
        self.client.delete(self.prefix + session.token)

    def revoke_user(self, user_id: str, at: float | None = None) -> int:
        """Write the user's revocation mark (ms) and delete their sessions; returns the mark."""
        mark = int((time.time() if at is None else at) * 1000)
        key = f"{self.prefix}revoked-sessions-before-{user_id}"
        previous = self.client.get(key)
        mark = max(mark, int(previous) if isinstance(previous, bytes) else 0)
        self.client.set(key, str(mark), ex=7 * 86400)
        for reference in self._list(user_id):
            self.client.delete(self.prefix + reference["token"])
        self._set_list(user_id, [])
        return mark

    def mark(self, user_id: str, at: float) -> None:
        """Write only the revocation mark (the sessions stay, as after a race)."""
        key = f"{self.prefix}revoked-sessions-before-{user_id}"
        self.client.set(key, str(int(at * 1000)), ex=7 * 86400)
