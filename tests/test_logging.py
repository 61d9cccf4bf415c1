"""The ``starlette_betterauth`` logger: what is logged, at which level, and never a token."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio.to_thread
import pytest
from _helpers import asgi_client, bearer, guarded_app, ok
from starlette.applications import Starlette
from starlette.routing import Route

from starlette_betterauth import JWKSCache, KeySetOptions
from starlette_betterauth.__main__ import main
from starlette_betterauth.middleware import token_fingerprint
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey, b64url

pytestmark = pytest.mark.anyio

LOGGER = "starlette_betterauth"


def make_app(**options: Any) -> Starlette:
    routes = [Route("/me", ok), Route("/public", ok), Route("/{rest:path}", ok)]
    return guarded_app(routes, **options)


def messages(caplog: pytest.LogCaptureFixture, prefix: str = "") -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith(prefix)
    ]


# -- refusals ---------------------------------------------------------------------------


async def test_one_line_per_refusal_at_the_configured_level(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    expired = issuer.expired_token()
    async with asgi_client(make_app(base_url=server.url, log_level=logging.DEBUG)) as client:
        assert (await client.get("/me", headers=bearer(expired))).status_code == 401
        assert (await client.post("/me")).status_code == 401
        assert (await client.get("/me", headers=bearer(issuer.token()))).status_code == 200
    assert messages(caplog, "refused") == [
        (
            logging.DEBUG,
            "refused GET /me: ExpiredTokenError: the token has expired "
            f"(token {token_fingerprint(expired)})",
        ),
        (
            logging.DEBUG,
            "refused POST /me: MissingTokenError: this endpoint needs a bearer token (token none)",
        ),
    ]


async def test_refusals_below_the_logger_level_are_not_logged(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with asgi_client(make_app(base_url=server.url)) as client:  # log_level INFO
        assert (await client.get("/me", headers=bearer("x.y.z"))).status_code == 401
    assert messages(caplog, "refused") == []
    async with asgi_client(make_app(base_url=server.url, log_level=logging.WARNING)) as client:
        assert (await client.get("/me", headers=bearer("x.y.z"))).status_code == 401
    assert [level for level, _ in messages(caplog, "refused")] == [logging.WARNING]


async def test_key_set_outage_refusals_are_warnings(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with JWKSServer(issuer) as server:
        server.status = 500
        token = issuer.token()
        async with asgi_client(make_app(base_url=server.url, log_level=logging.DEBUG)) as client:
            assert (await client.get("/me", headers=bearer(token))).status_code == 503
    assert messages(caplog, "refused") == [
        (
            logging.WARNING,
            "refused GET /me: KeySetFetchError: the key server answered HTTP 500 "
            f"(token {token_fingerprint(token)})",
        )
    ]
    assert (
        logging.WARNING,
        f"key set fetch from {server.jwks_url} failed: the key server answered HTTP 500",
    ) in messages(caplog)


async def test_the_path_cannot_forge_log_lines(
    server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with asgi_client(make_app(base_url=server.url)) as client:
        await client.get("/a%0D%0Arefused GET /admin: forged%1B[2J")
        await client.get("/" + "x" * 500)
    (_, forged), (_, long) = messages(caplog, "refused")
    assert forged.startswith("refused GET /a\\r\\nrefused GET /admin: forged\\x1b[2J: ")
    assert "\n" not in forged
    assert "\r" not in forged
    assert long.startswith("refused GET /" + "x" * 199 + "...: MissingTokenError")


# -- the key set ------------------------------------------------------------------------


async def test_key_set_fetches_and_changes_are_logged(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    url = server.jwks_url
    first = issuer.current_key.kid
    jwks = JWKSCache(url, options=KeySetOptions(retry_interval=0))
    try:
        await jwks.refresh()
        await jwks.refresh()
        second = issuer.rotate().kid
        await jwks.refresh()
        issuer.remove_key(first)
        await jwks.refresh()
        server.status = 500
        await jwks.refresh()
        server.status = 200
        server.body = json.dumps(
            {"keys": [issuer.current_key.public_jwk, dict(SigningKey().public_jwk, use="enc")]}
        ).encode()
        await jwks.refresh()
    finally:
        await jwks.aclose()
    skipped_kid = json.loads(server.body)["keys"][1]["kid"]
    assert messages(caplog) == [
        (logging.DEBUG, f"fetching the key set from {url}"),
        (logging.INFO, f"key set from {url}: 1 keys, gained ['{first}'], lost none"),
        (logging.DEBUG, f"fetching the key set from {url}"),
        (logging.DEBUG, f"key set from {url}: 1 keys, unchanged"),
        (logging.DEBUG, f"fetching the key set from {url}"),
        (logging.INFO, f"key set from {url}: 2 keys, gained ['{second}'], lost none"),
        (logging.DEBUG, f"fetching the key set from {url}"),
        (logging.INFO, f"key set from {url}: 1 keys, gained none, lost ['{first}']"),
        (logging.DEBUG, f"fetching the key set from {url}"),
        (
            logging.WARNING,
            f"key set fetch from {url} failed: the key server answered HTTP 500 "
            "(still serving the previous keys)",
        ),
        (logging.DEBUG, f"fetching the key set from {url}"),
        (
            logging.WARNING,
            f"key set from {url}: skipping '{skipped_kid}': its use is 'enc', not 'sig'",
        ),
        (logging.DEBUG, f"key set from {url}: 1 keys, unchanged"),
    ]


async def test_startup_warm_up_failure_is_a_warning(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with JWKSServer(issuer) as server:
        server.status = 503
        app = make_app(base_url=server.url, warm_on_startup=True)
        sent: list[str] = []
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, str]:
            return inbox.pop(0)

        async def send(message: Any) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert (
        logging.WARNING,
        "key set not loaded at startup: the key server answered HTTP 503",
    ) in messages(caplog)


# -- never a token ----------------------------------------------------------------------


def secrets_of(token: str) -> list[str]:
    """The token and those of its segments long enough to be unique to it."""
    parts = [token, *token.split(".")[1:]]
    return [part for part in parts if len(part) >= 16]


async def test_no_log_record_ever_contains_a_token(
    server: JWKSServer,
    issuer: Issuer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every logger, every level
    events: list[tuple[str, dict[str, Any]]] = []

    def record_event(name: str, data: Any) -> None:
        events.append((name, dict(data)))
        if name == "refused" and data["reason"] == "ExpiredTokenError":
            raise RuntimeError(f"observer failed on {data!r}")  # logged with a traceback

    app = make_app(
        base_url=server.url,
        log_level=logging.DEBUG,
        on_event=record_event,
        public=["/public"],
        key_set=KeySetOptions(refresh_cooldown=0, retry_interval=0),
    )
    valid = issuer.token(role="admin")
    header, payload, _ = valid.split(".")
    refused_tokens = [
        issuer.expired_token(),
        issuer.token(issued_at=9_999_999_999 - 900),
        issuer.token(iss="https://elsewhere.example"),
        issuer.token(aud=["https://elsewhere.example"]),
        issuer.token(banned=True),
        issuer.token(sub=None),
        issuer.token(exp=None),
        issuer.token(key=SigningKey("EdDSA")),
        issuer.token(header={"alg": "HS256"}),
        issuer.token(header={"typ": "JWE"}),
        issuer.token(header={"crit": ["exp"]}),
        f"{header}.{payload}.{b64url(b'0' * 64)}",
        f"{b64url({'alg': 'none', 'kid': issuer.current_key.kid})}.{payload}.",
        "7E3wGHXlmP2MgwRF3DRQMxU0QVChzZTX.92gDPwEDUminkEKqyytvp6KpE6CtxSxBC6iOcqMsGvQ=",
        valid + "=",
        valid.replace(".", ".."),
        valid + "." + payload,
        valid[:-1] + "\u00e9",
        "x" * 20_000,
    ]
    async with asgi_client(app) as client:
        for _ in range(2):  # the second round hits the verified-token cache
            assert (await client.get("/me", headers=bearer(valid))).status_code == 200
            assert (await client.get("/public", headers=bearer(valid))).status_code == 200
        for token in refused_tokens:
            raw = [(b"authorization", f"Bearer {token}".encode())]  # bytes: any character
            response = await client.get("/public", headers=raw)
            assert response.status_code in (401, 403)
            for secret in secrets_of(token):
                assert secret not in response.text
        assert (await client.get("/me", headers={"authorization": valid})).status_code == 401
        rotated = issuer.rotate()
        fresh = issuer.token(key=rotated)
        assert (await client.get("/me", headers=bearer(fresh))).status_code == 200
        issuer.remove_key(rotated.kid)
        server.status = 500
        gone = issuer.token(key=rotated)
        assert (await client.get("/me", headers=bearer(gone))).status_code == 200  # cached key
        assert (await client.get("/me", headers=bearer(fresh))).status_code == 200  # cached token
        unknown = issuer.token(key=SigningKey("EdDSA"))
        assert (await client.get("/me", headers=bearer(unknown))).status_code == 503  # unsure
        server.status = 200
        assert (await client.get("/me", headers=bearer(unknown))).status_code == 401
    # The command line, with its own log lines on stderr (-v).
    tokens = [valid, fresh, gone, unknown, *refused_tokens]
    for token in (valid, refused_tokens[2], unknown, "7E3wGHXlmP2MgwRF3DRQMxU0QVChzZTX.92gD"):
        for command in ("verify", "doctor"):
            args = [command, "-v", "--base-url", server.url]
            args += [token] if command == "verify" else ["--token", token]
            await anyio.to_thread.run_sync(main, args)
    cli_output = capsys.readouterr()

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = caplog.records
    for record in records:
        text = "\n".join([formatter.format(record), repr(record.args), repr(vars(record))])
        for token in tokens:
            for secret in secrets_of(token):
                assert secret not in text, f"a token leaked into: {record.getMessage()!r}"
    for token in tokens:
        for secret in secrets_of(token):
            assert secret not in cli_output.err
            assert secret not in cli_output.out
            assert secret not in repr(events)

    # The run did produce every kind of record this test is about.
    by_level = {level: sum(r.levelno == level for r in records) for level in range(10, 60, 10)}
    assert all(by_level[level] for level in (logging.DEBUG, logging.INFO, logging.WARNING))
    assert by_level[logging.ERROR] == 1  # the observer's failure, with its traceback
    package = [r.getMessage() for r in records if r.name == LOGGER]
    refusal_lines = [m for m in package if m.startswith("refused")]
    assert len(refusal_lines) == len(refused_tokens) + 3
    unread = [m for m in refusal_lines if m.endswith("(token none)")]
    assert unread == [  # refused before a token was read out of the header
        "refused GET /public: InvalidRequestError: the Authorization header is too long "
        "(token none)",
        "refused GET /me: InvalidRequestError: the Authorization scheme is not Bearer (token none)",
    ]
    assert all("(token sha256:" in m for m in refusal_lines if m not in unread)
    assert any(", gained [" in m for m in package)
    assert any("lost [" in m for m in package)
    assert any("failed: the key server answered HTTP 500" in m for m in package)
    assert any(r.name.startswith("httpx") for r in records)
    assert "log: DEBUG fetching the key set from" in cli_output.err
