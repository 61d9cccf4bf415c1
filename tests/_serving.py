"""Serving apps for the tests: websocket sessions in process, and real uvicorn servers.

``websocket_session`` plays an ASGI server for one websocket connection (the
messages a server would send, in order; what the app sends back is recorded).
For the tests that need the bytes on the wire, ``threaded_uvicorn`` serves an
app object with uvicorn in a thread, and ``start_uvicorn`` runs ``uvicorn
module:app`` as a process (as users run it: configuration from the environment,
optionally several workers); both listen on a free 127.0.0.1 port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp, Message, Scope

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
_RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run ``app``'s lifespan around the block, as a server does: startup, then shutdown."""
    to_app, app_receives = anyio.create_memory_object_stream[Message](2)
    app_sends, from_app = anyio.create_memory_object_stream[Message](2)
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def run() -> None:
        await app(scope, app_receives.receive, app_sends.send)

    async with to_app, app_receives, app_sends, from_app, anyio.create_task_group() as group:
        group.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        started = await from_app.receive()
        assert started["type"] == "lifespan.startup.complete", started
        try:
            yield
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            await from_app.receive()


async def websocket_session(
    app: ASGIApp,
    path: str,
    *,
    token: str | None = None,
    texts: Sequence[str] = (),
    denial_extension: bool = True,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> list[Message]:
    """Connect to ``path``, send ``texts`` once accepted, then disconnect; return what the app sent.

    The client side follows the messages a server produces: ``websocket.connect``
    first, then each text, then ``websocket.disconnect``. With
    ``denial_extension`` the scope advertises ``websocket.http.response``, as
    uvicorn does, so a refusal can carry an HTTP status.
    """
    headers = [(b"host", b"testserver"), *headers]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode("ascii")))
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "headers": list(headers),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial_extension else {},
    }
    incoming: list[Message] = [{"type": "websocket.connect"}]
    incoming.extend({"type": "websocket.receive", "text": text} for text in texts)
    sent: list[Message] = []
    received = 0

    async def receive() -> Message:
        nonlocal received
        received += 1
        if received > len(incoming) + 5:
            raise AssertionError("the app keeps receiving after the client left")
        accepted = any(m["type"] == "websocket.accept" for m in sent)
        if received == 1 or (accepted and received <= len(incoming)):
            return incoming[received - 1]
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def denial(messages: Sequence[Message]) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a websocket denial response."""
    start = [m for m in messages if m["type"] == "websocket.http.response.start"]
    assert len(start) == 1, messages
    body = b"".join(
        m.get("body", b"") for m in messages if m["type"] == "websocket.http.response.body"
    )
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start[0]["headers"]}
    assert not any(m["type"] == "websocket.accept" for m in messages)
    return start[0]["status"], headers, body


@contextmanager
def threaded_uvicorn(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield ``host:port``."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"


@dataclass(frozen=True, slots=True)
class Uvicorn:
    """A running uvicorn process and the base URL it listens on."""

    process: subprocess.Popen[bytes]
    url: str

    @property
    def address(self) -> str:
        """``host:port``, for ``ws://`` URLs."""
        return self.url.removeprefix("http://")


@contextmanager
def start_uvicorn(
    target: str,
    *,
    env: Mapping[str, str],
    app_dir: Path = TESTS,
    factory: bool = False,
    workers: int = 1,
    ready_path: str | None = None,
    args: Sequence[str] = (),
    output: list[str] | None = None,
) -> Iterator[Uvicorn]:
    """Run ``uvicorn target`` in a process group of its own on a free 127.0.0.1 port.

    ``target`` is ``module:attribute`` importable from ``app_dir`` (a factory with
    ``factory=True``); ``env`` is added to the environment. The port is read from
    uvicorn's start-up line; with ``ready_path`` the block also waits until that path
    answers 200 (the workers are serving). ``args`` are further uvicorn options.
    When the block ends the group gets SIGTERM, then SIGKILL if it lingers, so
    workers stop with their parent; then ``output``, if given, receives every line
    the server wrote.
    """
    command = [sys.executable, "-m", "uvicorn", target, "--app-dir", str(app_dir)]
    command += ["--host", "127.0.0.1", "--port", "0", "--no-access-log", "--log-level", "info"]
    if factory:
        command.append("--factory")
    if workers != 1:
        command += ["--workers", str(workers)]
    command += args
    with tempfile.TemporaryDirectory(prefix="uvicorn-") as tmp:
        log = Path(tmp, "log")
        with log.open("wb") as written:
            process = subprocess.Popen(
                command,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=written,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            url = _wait_until_listening(process, log)
            if ready_path is not None:
                _wait_until_ready(process, url + ready_path, log)
            yield Uvicorn(process, url)
        finally:
            _stop_group(process)
            if output is not None:
                output.extend(log.read_text("utf-8", "replace").splitlines(keepends=True))


def _tail(log: Path, limit: int = 2000) -> str:
    return log.read_text("utf-8", "replace")[-limit:]


def _wait_until_listening(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = _RUNNING.search(log.read_text("utf-8", "replace"))
        if match is not None:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"uvicorn did not start (exit code {process.poll()}):\n{_tail(log)}")


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200 (exit code {process.poll()}):\n{_tail(log)}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
