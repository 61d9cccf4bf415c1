"""HTTP benchmark: uvicorn and wrk on 127.0.0.1, req/s and latency, side by side.

Every app in ``bench/apps/`` is served by its own uvicorn process (``--loop
uvloop --http httptools --workers 1``) and loaded in turn by ``wrk`` through
``bench/wrk_report.lua``, round after round, so a slow moment of the machine
falls on all of them alike. The key set comes from a :class:`JWKSServer` in
this process, and all tokens are Better Auth-shaped.

- repeated token: every request carries the same token;
- first-seen tokens: each request carries the next token of a pool cycled by
  wrk; this package's cache holds half the pool, so every request misses it.

Needs wrk (Debian: ``apt-get install -y wrk``) and ``pip install -r
bench/requirements.txt``. Each server is stopped by its PID at the end.

Run: ``python bench/http_load.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchkit import cpu_ticks, machine, stolen_since, table, verdict
from cryptography.hazmat.primitives import serialization

from starlette_betterauth.testing import Issuer, JWKSServer

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "wrk_report.lua"


@dataclass
class Server:
    """One uvicorn process serving one app of ``bench/apps``."""

    name: str
    module: str
    env: dict[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    port: int = 0
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Case:
    """One load: a server and what its requests carry."""

    label: str
    server: str
    mode: str  # "header" (one token) or "cycle" (a file of tokens)
    argument: str
    samples: list[dict[str, int]] = field(default_factory=list)

    def rps(self) -> list[float]:
        """Requests per second of each round."""
        return [s["requests"] / (s["duration_us"] / 1e6) for s in self.samples]

    def cpu_per_request(self) -> list[float | None]:
        """The server's CPU µs per request of each round (None where unknown)."""
        return [
            s["server_cpu_us"] / s["requests"]
            if s["server_cpu_us"] > 0 and s["requests"] > 0
            else None
            for s in self.samples
        ]

    def errors(self) -> int:
        """Non-2xx answers and socket errors over all rounds."""
        keys = ("non2xx", "connect", "read", "write", "timeout")
        return sum(s[k] for s in self.samples for k in keys)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on one CPU with taskset, when pinning is on."""
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def uvicorn_command(server: Server) -> list[str]:
    """The exact uvicorn command line of a server."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        f"apps.{server.module}:app",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def start(server: Server, env: dict[str, str], cpu: int | None, logs: Path) -> None:
    """Start the server's uvicorn process and wait until it answers HTTP."""
    server.port = free_port()
    log = (logs / f"{server.name}.log").open("wb")
    server.process = subprocess.Popen(
        pinned(uvicorn_command(server), cpu),
        # From bench/, so the package comes from the environment (PYTHONPATH or the
        # install), not from whatever directory the benchmark was started in.
        cwd=BENCH,
        env={**os.environ, **env, **server.env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited; see {logs / (server.name + '.log')}")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            try:
                connection.request("GET", "/hello")
                connection.getresponse().read()
                return
            finally:
                connection.close()
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer within 30 s")


def stop(server: Server) -> None:
    """Stop the server's process by its PID: SIGTERM, then SIGKILL after 10 s."""
    process = server.process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wrk_command(
    case: Case, port: int, *, seconds: float, connections: int, cpu: int | None
) -> list[str]:
    """The exact wrk command line of one load."""
    return pinned(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA),
            f"http://127.0.0.1:{port}/hello",
            "--",
            case.mode,
            case.argument,
        ],
        cpu,
    )


def process_cpu_us(pid: int | None) -> int | None:
    """CPU time (user and system) the process ``pid`` has used so far, in µs; else None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # The fields after the command's name (in parentheses, which may hold spaces).
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) * 1_000_000 // os.sysconf("SC_CLK_TCK")


def run_wrk(command: list[str], seconds: float, server_pid: int | None = None) -> dict[str, int]:
    """Run wrk once and return its RESULT line, with what the machine did meanwhile.

    ``steal_permille``: of the machine's CPU time during the load, the share
    (per mille) the hypervisor gave to other guests (-1 where unknown).
    ``server_cpu_us``: the CPU time the server process used during the load
    (-1 where unknown). Time the hypervisor steals is not counted in it, so CPU
    time per request compares servers even when req/s are blurred by steal.
    """
    before, cpu_before = cpu_ticks(), process_cpu_us(server_pid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    stolen, cpu_after = stolen_since(before), process_cpu_us(server_pid)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, int] = json.loads(line[len("RESULT ") :])
            result["steal_permille"] = -1 if stolen is None else round(stolen * 1000)
            result["server_cpu_us"] = (
                cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else -1
            )
            return result
    raise RuntimeError(f"wrk printed no result: {done.stdout}{done.stderr}")


def write_tokens(path: Path, tokens: Sequence[str]) -> str:
    """Write one token per line; return the path as a string."""
    path.write_text("\n".join(tokens) + "\n", encoding="ascii")
    return str(path)


def rotated(cases: list[Case], index: int) -> Iterator[Case]:
    """The cases in a different order each round."""
    shift = index % len(cases)
    yield from cases[shift:] + cases[:shift]


def main(argv: list[str] | None = None) -> None:
    """Run the HTTP benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over all cases")
    parser.add_argument("--seconds", type=float, default=None, help="wrk duration per load")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--pool", type=int, default=None, help="distinct first-seen tokens")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get update && apt-get install -y wrk)")
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 10.0)
    pool = args.pool or (200 if args.quick else 4000)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    server_cpu, wrk_cpu = (0, 1) if pin else (None, None)

    issuer = Issuer(alg="EdDSA")
    eddsa = issuer.current_key
    rs256 = issuer.rotate("RS256")
    servers = [
        Server("noauth", "noauth"),
        Server("fastapi-noauth", "fastapi_noauth", requires=("fastapi",)),
        Server("betterauth", "betterauth"),
        Server("betterauth-first", "betterauth", {"BENCH_TOKEN_CACHE_SIZE": str(pool // 2)}),
        Server("pyjwt", "pyjwt_asgi"),
        Server("jose", "jose_fastapi", requires=("fastapi", "jose")),
        Server("fastapi-betterauth", "fastapi_betterauth_app", requires=("fastapi_betterauth",)),
    ]
    missing = {
        s.name: [m for m in s.requires if importlib.util.find_spec(m) is None] for s in servers
    }
    skipped = sorted(name for name, modules in missing.items() if modules)
    servers = [s for s in servers if s.name not in skipped]
    by_name = {s.name: s for s in servers}

    with tempfile.TemporaryDirectory(prefix="bench-http-") as scratch, JWKSServer(issuer) as jwks:
        work = Path(scratch)
        one = issuer.token(key=eddsa, role="user", expires_in=3600)
        eddsa_file = write_tokens(
            work / "eddsa.txt",
            [issuer.token(key=eddsa, role="user", expires_in=3600) for _ in range(pool)],
        )
        rs256_file = write_tokens(
            work / "rs256.txt",
            [issuer.token(key=rs256, role="user", expires_in=3600) for _ in range(pool)],
        )
        pem = rs256.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        env = {"BENCH_BASE_URL": jwks.url, "BENCH_RS256_PUBLIC_KEY": pem.decode("ascii")}
        cases = [
            Case("no auth (Starlette)", "noauth", "header", one),
            Case("this package, repeated token (EdDSA)", "betterauth", "header", one),
            Case("no auth (FastAPI)", "fastapi-noauth", "header", one),
            Case("this package, first-seen EdDSA", "betterauth-first", "cycle", eddsa_file),
            Case("this package, first-seen RS256", "betterauth-first", "cycle", rs256_file),
            Case("PyJWT pure-ASGI middleware, EdDSA", "pyjwt", "cycle", eddsa_file),
            Case("PyJWT pure-ASGI middleware, RS256", "pyjwt", "cycle", rs256_file),
            Case("FastAPI + python-jose tutorial, RS256", "jose", "cycle", rs256_file),
            Case("fastapi-betterauth 0.2.6, EdDSA", "fastapi-betterauth", "cycle", eddsa_file),
        ]
        cases = [c for c in cases if c.server in by_name]
        logs = work / "logs"
        logs.mkdir()
        try:
            for server in servers:
                start(server, env, server_cpu, logs)
            warm = min(seconds, 2.0)
            for case in cases:  # loads the key sets, fills caches, warms every path
                port = by_name[case.server].port
                run_wrk(
                    wrk_command(
                        case, port, seconds=warm, connections=args.connections, cpu=wrk_cpu
                    ),
                    warm,
                )
            for index in range(rounds):
                for case in rotated(cases, index):
                    port = by_name[case.server].port
                    command = wrk_command(
                        case, port, seconds=seconds, connections=args.connections, cpu=wrk_cpu
                    )
                    process = by_name[case.server].process
                    pid = process.pid if process is not None else None
                    case.samples.append(run_wrk(command, seconds, pid))
        finally:
            for server in servers:
                stop(server)
        example_case = next(c for c in cases if c.label == "this package, first-seen EdDSA")
        example_server = by_name[example_case.server]
        example_wrk = wrk_command(
            example_case,
            example_server.port,
            seconds=seconds,
            connections=args.connections,
            cpu=wrk_cpu,
        )
        example_uvicorn = pinned(uvicorn_command(example_server), server_cpu)

    rps = {c.label: statistics.median(c.rps()) for c in cases}
    base = rps["no auth (Starlette)"]
    rows = []
    for case in cases:
        samples = case.rps()
        p50 = statistics.median(s["p50_us"] for s in case.samples) / 1000
        p99 = statistics.median(s["p99_us"] for s in case.samples) / 1000
        stolen = [s["steal_permille"] / 10 for s in case.samples if s["steal_permille"] >= 0]
        cpu = [value for value in case.cpu_per_request() if value is not None]
        rows.append(
            [
                case.label,
                f"{rps[case.label]:,.0f}",
                f"{min(samples):,.0f} to {max(samples):,.0f}",
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{rps[case.label] / base:.2f}x",
                f"{statistics.median(cpu):.1f}" if cpu else "unknown",
                f"{min(stolen):.0f} to {max(stolen):.0f}%" if stolen else "unknown",
                "none" if not case.errors() else f"**{case.errors()}**",
            ]
        )

    def ratio(numerator: str, denominator: str) -> float | None:
        if numerator in rps and denominator in rps:
            return rps[numerator] / rps[denominator]
        return None

    def paired(numerator: str, denominator: str, *, cpu: bool = False) -> float | None:
        """Median over rounds of the ratio of two loads run in the same round.

        With ``cpu``, the ratio of the servers' requests per CPU second (the
        inverse of CPU time per request), which time stolen by the hypervisor
        does not blur.
        """
        by_label = {c.label: c for c in cases}
        if numerator not in by_label or denominator not in by_label:
            return None
        top, bottom = by_label[numerator], by_label[denominator]
        if not cpu:
            return statistics.median(a / b for a, b in zip(top.rps(), bottom.rps(), strict=True))
        ratios = [
            b / a
            for a, b in zip(top.cpu_per_request(), bottom.cpu_per_request(), strict=True)
            if a is not None and b is not None
        ]
        return statistics.median(ratios) if ratios else None

    repeated, no_auth = "this package, repeated token (EdDSA)", "no auth (Starlette)"
    targets = [
        (
            "repeated token: req/s vs no auth (median of same-round ratios)",
            paired(repeated, no_auth),
            0.95,
        ),
        (
            "repeated token: requests per server CPU second vs no auth (same-round ratios)",
            paired(repeated, no_auth, cpu=True),
            0.95,
        ),
        (
            "first-seen EdDSA: req/s vs PyJWT middleware"
            + (" (libsodium)" if importlib.util.find_spec("nacl") else " (cryptography)"),
            ratio("this package, first-seen EdDSA", "PyJWT pure-ASGI middleware, EdDSA"),
            1.5,
        ),
        (
            "first-seen EdDSA: req/s vs fastapi-betterauth",
            ratio("this package, first-seen EdDSA", "fastapi-betterauth 0.2.6, EdDSA"),
            2.0,
        ),
        (
            "first-seen RS256: req/s vs PyJWT middleware",
            ratio("this package, first-seen RS256", "PyJWT pure-ASGI middleware, RS256"),
            1.5,
        ),
        (
            "first-seen RS256: req/s vs FastAPI + python-jose (no target)",
            ratio("this package, first-seen RS256", "FastAPI + python-jose tutorial, RS256"),
            None,
        ),
    ]
    target_rows = [
        [
            name,
            "not run" if value is None else f"{value:.2f}x",
            "" if goal is None else f">= {goal}x",
            "" if goal is None or value is None else verdict(value >= goal),
        ]
        for name, value, goal in targets
    ]
    print(f"## http: uvicorn + wrk on 127.0.0.1 ({'quick' if args.quick else 'full'} run)\n")
    print(f"Machine: {machine(('uvicorn', 'uvloop', 'httptools', 'fastapi', 'pynacl'))}\n")
    print(
        f"{rounds} rounds of {seconds:g} s per load, wrk -t1 -c{args.connections}; "
        f"first-seen pool {pool} tokens (cache {pool // 2}); "
        + ("server pinned to CPU 0, wrk to CPU 1" if pin else "no CPU pinning")
        + "; medians over rounds. Server CPU µs per request: the CPU time the server"
        " process used during the load over the requests answered (time stolen by the"
        " hypervisor is not in it). CPU stolen: the share of the machine's CPU time the"
        " hypervisor gave to other guests during each load (on a virtual machine; req/s"
        " of loads with much of it stolen compare only loosely).\n"
    )
    if skipped:
        print(f"Skipped (not installed; pip install -r bench/requirements.txt): {skipped}\n")
    print(
        table(
            [
                "load",
                "req/s",
                "range",
                "p50 ms",
                "p99 ms",
                "x no auth",
                "server CPU µs per request",
                "CPU stolen",
                "errors",
            ],
            rows,
        )
    )
    print()
    print(table(["target", "measured", "goal", "verdict"], target_rows))
    print("\nCommands (one of each; ports vary):\n")
    print("    " + " ".join(example_uvicorn))
    print("    " + " ".join(example_wrk))


if __name__ == "__main__":
    main()
