"""What Redis costs per check, and how late a revocation of one session (``sid``) is seen.

Starts its own ``redis-server`` on a free 127.0.0.1 port (Debian: apt-get install -y
redis-server), then measures, in one process:

- a session token checked in Better Auth's secondaryStorage (one round trip, a Lua
  script reading the session and its user's revocation mark; a get-session call to a
  real Better Auth server takes about 4-5 ms on loopback);
- a JWT revocation check (``BearerJWT(redis=...)``, ``revocation_ttl=0``): the user's
  mark alone, and with ``sid``, found among the user's 1, 10 or 100 live sessions;
- how long after a sign-out a JWT with that ``sid`` is still accepted, with the
  default ``revocation_ttl`` of 1 s, requests every 5 ms.

Run: ``python bench/fleet.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import redis

from starlette_betterauth import RedisStore
from starlette_betterauth._fleet import Revocations, StoredSessions
from starlette_betterauth._redis import RedisLink
from starlette_betterauth._sessions import SessionCredential
from starlette_betterauth._user import UserBuilder
from starlette_betterauth.errors import InvalidSessionError
from starlette_betterauth.testing import Issuer, TestSession

PREFIX = "better-auth:"


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian: apt-get install -y redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.01)
    client.close()
    return process, url


def put(client: redis.Redis, session: TestSession) -> None:
    """Store ``session`` as Better Auth does, and list it among its user's sessions."""
    client.set(PREFIX + session.token, json.dumps(session.answer()), ex=3600)
    key = f"{PREFIX}active-sessions-{session.user_id}"
    raw = client.get(key)
    sessions = json.loads(raw) if isinstance(raw, bytes) else []
    sessions.append({"token": session.token, "expiresAt": int(session.expires_at * 1000)})
    client.set(key, json.dumps(sessions), ex=3600)


async def median_us(operation: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(min(count, 50)):
        await operation()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await operation()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


async def main(quick: bool) -> None:
    count = 200 if quick else 2000
    issuer = Issuer()
    users = UserBuilder()
    with tempfile.TemporaryDirectory() as directory:
        process, url = start_redis(directory)
        client = redis.Redis.from_url(url)
        store = RedisStore(url, key_prefix=PREFIX)
        try:
            rows: list[tuple[str, str]] = []
            session = issuer.session()
            put(client, session)
            credential = SessionCredential.bearer(session.token)
            stored = StoredSessions(RedisLink(store), None)
            rows.append(
                (
                    "session token, secondaryStorage (1 round trip)",
                    f"{await median_us(lambda: stored.lookup(credential), count):.0f} µs",
                )
            )
            revocations = Revocations(RedisLink(store), ttl=0)
            plain = users.build(issuer.claims(user_id=session.user_id))[0]
            rows.append(
                (
                    "JWT, user's revocation mark",
                    f"{await median_us(lambda: revocations.check(plain), count):.0f} µs",
                )
            )
            for sessions in (1, 10, 100):
                user_id = f"user-{sessions}"
                made = [issuer.session(user_id) for _ in range(sessions)]
                for each in made:
                    put(client, each)
                target = random.choice(made)
                with_sid = users.build(issuer.claims(user_id=user_id, sid=target.id))[0]
                check = functools.partial(revocations.check, with_sid)
                rows.append(
                    (
                        f"JWT with sid, user with {sessions} live sessions",
                        f"{await median_us(check, count):.0f} µs",
                    )
                )
            rows.append(
                (
                    "sign-out seen by a JWT with sid (revocation_ttl 1 s)",
                    await late(issuer, client, store, users, quick),
                )
            )
            await stored.aclose()
            await revocations.link.aclose()
        finally:
            client.close()
            process.terminate()
            process.wait(timeout=10)
    width = max(len(name) for name, _ in rows)
    print(f"{'check':<{width}}  result")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


async def late(
    issuer: Issuer, client: redis.Redis, store: RedisStore, users: UserBuilder, quick: bool
) -> str:
    """Seconds a JWT with sid is still accepted after its session is deleted (max of runs)."""
    revocations = Revocations(RedisLink(store), ttl=1.0)
    delays = []
    for _ in range(3 if quick else 10):
        session = issuer.session("late-user")
        put(client, session)
        user = users.build(issuer.claims(user_id="late-user", sid=session.id))[0]
        await revocations.check(user)
        await asyncio.sleep(random.uniform(0, 1))
        client.delete(PREFIX + session.token)
        signed_out = time.monotonic()
        while True:
            try:
                if not revocations.passed(user):
                    await revocations.check(user)
            except InvalidSessionError:
                break
            await asyncio.sleep(0.005)
        delays.append(time.monotonic() - signed_out)
    await revocations.link.aclose()
    return f"at most {max(delays):.2f} s (median {statistics.median(delays):.2f} s)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    asyncio.run(main(parser.parse_args().quick))
