"""A fleet on one machine: uvicorn "hosts" of several workers, a get-session counter, load.

:func:`uvicorn_host` starts ``uvicorn --workers N`` serving ``fleet_app:create_app`` with
the suite's one launcher (``_serving.start_uvicorn``) and yields its URL and worker PIDs;
the workers shut down through the app's lifespan when it stops. :class:`CountingProxy`
stands between the workers and Better Auth and counts get-session calls. :class:`Load`
sends bounded bursts of requests over fresh connections (so the kernel spreads them over
each host's workers) and records, per response, the status, the worker and the time.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from _serving import start_uvicorn

STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Host:
    """One uvicorn process standing for a host: its URL and its workers' PIDs."""

    url: str
    workers: frozenset[int]


@contextmanager
def uvicorn_host(env: Mapping[str, str], *, workers: int) -> Iterator[Host]:
    """``uvicorn --workers N --factory fleet_app:create_app`` on a free loopback port,
    once every worker answers."""
    with start_uvicorn(
        "fleet_app:create_app", env=env, factory=True, workers=workers, ready_path="/health"
    ) as server:
        seen: set[int] = set()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        # Fresh connections, so the kernel hands them to every worker in turn.
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while len(seen) < workers:
                assert time.monotonic() < deadline, f"only workers {seen} answered"
                seen.add(client.get(f"{server.url}/health").json()["pid"])
        yield Host(server.url, frozenset(seen))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # workers that shut down reset their idle connections: expected


class CountingProxy:
    """Forwards GET requests to ``upstream`` and counts those to get-session."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.session_calls = 0
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/api/auth/get-session"):
                    with owner._lock:
                        owner.session_calls += 1
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() in ("authorization", "cookie", "accept", "user-agent")
                }
                connection = http.client.HTTPConnection(
                    owner.upstream.hostname or "127.0.0.1", owner.upstream.port, timeout=10
                )
                try:
                    connection.request("GET", self.path, headers=headers)
                    response = connection.getresponse()
                    status, body = response.status, response.read()
                    retry_after = response.getheader("retry-after")
                except OSError:
                    status, body, retry_after = 502, b'{"message":"upstream down"}', None
                finally:
                    connection.close()
                with owner._lock:
                    owner.statuses.append(status)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                if retry_after:
                    self.send_header("retry-after", retry_after)
                self.end_headers()
                self.wfile.write(body)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@dataclass(frozen=True, slots=True)
class Answer:
    """One response: when it was sent and received (monotonic), its status, its worker."""

    sent: float
    received: float
    status: int
    worker: int | None
    retry_after: str | None


@dataclass
class Load:
    """Requests to ``/me`` spread over ``hosts``, each on a fresh connection."""

    hosts: Sequence[Host]
    concurrency: int = 32
    answers: list[Answer] = field(default_factory=list)

    @property
    def workers(self) -> frozenset[int]:
        return frozenset().union(*(host.workers for host in self.hosts))

    async def burst(self, token: str, count: int) -> list[Answer]:
        """``count`` requests carrying ``token``, ``concurrency`` at a time."""
        answers: list[Answer] = []
        limiter = anyio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def one(index: int) -> None:
                async with limiter:
                    host = self.hosts[index % len(self.hosts)]
                    answers.append(await self._send(client, host, token))

            async with anyio.create_task_group() as group:
                for index in range(count):
                    group.start_soon(one, index)
        self.answers.extend(answers)
        return answers

    async def until(
        self, token: str, done: Any, *, deadline: float = 20.0, pause: float = 0.0
    ) -> list[Answer]:
        """Bursts of requests carrying ``token`` until ``done(answers)`` or ``deadline`` s."""
        answers: list[Answer] = []
        ends = time.monotonic() + deadline
        while time.monotonic() < ends:
            answers += await self.burst(token, self.concurrency)
            if done(answers):
                break
            if pause:
                await anyio.sleep(pause)
        return answers

    @staticmethod
    async def _send(client: httpx.AsyncClient, host: Host, token: str) -> Answer:
        sent = time.monotonic()
        try:
            response = await client.get(
                f"{host.url}/me", headers={"authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError:
            return Answer(sent, time.monotonic(), 0, None, None)
        worker = response.headers.get("x-worker")
        return Answer(
            sent,
            time.monotonic(),
            response.status_code,
            int(worker) if worker else None,
            response.headers.get("retry-after"),
        )


def refused_everywhere(workers: frozenset[int], status: int = 401) -> Any:
    """A ``done`` for :meth:`Load.until`: every worker has answered ``status``."""

    def done(answers: Sequence[Answer]) -> bool:
        return workers <= {a.worker for a in answers if a.status == status}

    return done


def first_refusal(answers: Sequence[Answer], since: float, status: int = 401) -> dict[int, float]:
    """Per worker, seconds from ``since`` to its first answer with ``status``."""
    first: dict[int, float] = {}
    for answer in sorted(answers, key=lambda a: a.received):
        if answer.status == status and answer.worker is not None:
            first.setdefault(answer.worker, answer.received - since)
    return first
