"""Helpers for the guard, FastAPI and example tests: drive ASGI apps over websockets.

``websocket_session`` plays an ASGI server for one websocket connection (the
messages a server would send, in order; what the app sends back is recorded).
``threaded_uvicorn``, ``uvicorn_process`` and ``threaded_hypercorn`` run real
servers on 127.0.0.1 for the tests that need the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message

ROOT = Path(__file__).resolve().parent.parent
_STARTED = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


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
def threaded_uvicorn(app: ASGIApp, **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield ``host:port``.

    ``options`` go to ``uvicorn.Config`` (``root_path=``, ``lifespan="on"``, ``ws=``...).
    """
    settings: dict[str, Any] = {"lifespan": "off", "log_level": "warning", "access_log": False}
    config = uvicorn.Config(app, host="127.0.0.1", port=0, **{**settings, **options})
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


@contextmanager
def uvicorn_process(app: str, *, app_dir: Path, env: Mapping[str, str]) -> Iterator[str]:
    """Run ``uvicorn app`` as a subprocess on a free 127.0.0.1 port; yield ``host:port``.

    The server is stopped by its PID (SIGTERM, then SIGKILL) when the block ends.
    """
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(app_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-access-log",
    ]
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read_stderr, name="uvicorn-stderr", daemon=True)
    reader.start()
    try:
        address = None
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            log.append(line)
            match = _STARTED.search(line)
            if match:
                address = f"127.0.0.1:{match.group(1)}"
        assert address is not None, "uvicorn did not start:\n" + "".join(log)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


@contextmanager
def threaded_hypercorn(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with Hypercorn (asyncio) on a free 127.0.0.1 port in a thread."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.accesslog = None
    config.errorlog = None
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def run() -> None:
        started.set()
        await serve(app, config, shutdown_trigger=stop.wait, mode="asgi")  # type: ignore[arg-type]

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    try:
        assert started.wait(30), "hypercorn did not start"
        for _ in range(1000):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        assert not thread.is_alive(), "hypercorn did not stop"
        loop.close()
