"""The get-session client, against the loopback test server's real get-session endpoint."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Mapping
from email.utils import formatdate
from typing import Any

import anyio
import httpx
import pytest

from starlette_betterauth._http import parse_retry_after
from starlette_betterauth._sessions import (
    MAX_CREDENTIAL_LENGTH,
    MAX_RETRY_AFTER,
    SessionClient,
    SessionCredential,
    SessionRecord,
)
from starlette_betterauth.errors import (
    ConfigurationError,
    InvalidSessionError,
    InvalidTokenError,
    ServiceUnavailableError,
    SessionServiceError,
)
from starlette_betterauth.testing import Issuer, JWKSServer, TestSession

pytestmark = pytest.mark.anyio

LOGGER = "starlette_betterauth"
COOKIE = "better-auth.session_token"


@pytest.fixture
async def sessions(server: JWKSServer) -> AsyncIterator[SessionClient]:
    client = SessionClient(server.session_url, timeout=2.0)
    yield client
    await client.aclose()


def cookie_of(session: TestSession) -> SessionCredential:
    return SessionCredential.cookie(COOKIE, session.signed_token)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- configuration and credentials ---------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("cache_size", -1),
        ("cache_size", 1.5),
        ("cache_size", True),
        ("cache_ttl", -1),
        ("cache_ttl", math.inf),
        ("refusal_ttl", math.nan),
        ("refusal_ttl", "5"),
        ("timeout", 0),
        ("timeout", math.inf),
        ("max_body_size", 0),
        ("max_body_size", 1.0),
        ("retry_interval", -0.5),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(option: str, value: Any) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigurationError, match=option):
        SessionClient("http://127.0.0.1:1/api/auth/get-session", **options)


@pytest.mark.parametrize(
    "url", ["ftp://auth.example/get-session", "auth.example", "http://:99999/"]
)
def test_the_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigurationError, match="get-session URL"):
        SessionClient(url)


def test_zero_switches_the_caches_off_and_is_accepted() -> None:
    client = SessionClient("http://127.0.0.1:1/", cache_size=0, cache_ttl=0, refusal_ttl=0)
    assert (client.cache_size, client.cache_ttl, client.refusal_ttl) == (0, 0.0, 0.0)


@pytest.mark.parametrize(
    "token",
    ["", "has space", "new\nline", 'quote"', "x" * (MAX_CREDENTIAL_LENGTH + 1), "caf\u00e9"],
)
def test_bearer_values_that_cannot_be_session_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidSessionError, match="not a session token") as caught:
        SessionCredential.bearer(token)
    if token:
        assert token not in str(caught.value)


def test_cookie_credentials_check_name_and_value() -> None:
    with pytest.raises(ValueError, match="not a cookie name"):
        SessionCredential.cookie("bad name", "v")
    with pytest.raises(InvalidSessionError, match="empty or too long"):
        SessionCredential.cookie(COOKIE, "")
    with pytest.raises(InvalidSessionError, match="empty or too long"):
        SessionCredential.cookie(COOKIE, "v" * (MAX_CREDENTIAL_LENGTH + 1))


def test_credentials_key_on_a_hash_and_never_show_the_value() -> None:
    signed = SessionCredential.cookie(COOKIE, "tok.sig=")
    assert signed.token == "tok"
    assert signed.key == hashlib.sha256(f"cookie\0{COOKIE}\0tok.sig=".encode()).digest()
    assert "tok." not in repr(signed)
    assert "sig" not in repr(signed)
    raw = SessionCredential.bearer("tok")
    assert raw.token == "tok"
    assert raw.key != SessionCredential.cookie(COOKIE, "tok").key  # one cache entry per form
    assert SessionCredential.bearer("tok.sig%3D").token == "tok"


# -- answers -------------------------------------------------------------------------


async def test_a_cookie_lookup_sends_that_one_cookie_and_returns_a_frozen_record(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    session = issuer.session(role="admin", tags=["a", {"b": 1}])
    record = await sessions.lookup(cookie_of(session))
    assert isinstance(record, SessionRecord)
    assert (record.session_id, record.user_id) == (session.id, session.user_id)
    assert record.expires_at == pytest.approx(session.expires_at, abs=0.002)
    assert record.token_hash == hashlib.sha256(session.token.encode()).hexdigest()
    assert record.user["role"] == "admin"
    assert record.user["tags"] == ("a", {"b": 1})
    assert "token" not in record.session
    assert record.session["userId"] == session.user_id
    with pytest.raises(TypeError):
        record.user["role"] = "user"  # type: ignore[index]
    with pytest.raises(TypeError):
        record.user["tags"][1]["b"] = 2
    with pytest.raises(AttributeError):
        record.user_id = "other"  # type: ignore[misc]
    (headers,) = server.session_request_headers
    assert headers["cookie"] == f"{COOKIE}={issuer.session_cookies(session)[COOKIE]}"
    assert "authorization" not in headers
    assert headers["accept"] == "application/json"


@pytest.mark.parametrize("form", ["raw", "signed", "percent-encoded"])
async def test_bearer_session_tokens_raw_or_signed(
    form: str, server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    session = issuer.session()
    value = {
        "raw": session.token,
        "signed": session.signed_token,
        "percent-encoded": session.signed_token.replace("=", "%3D"),
    }[form]
    record = await sessions.lookup(SessionCredential.bearer(value))
    assert record.session_id == session.id
    (headers,) = server.session_request_headers
    assert headers["authorization"] == f"Bearer {value}"
    assert "cookie" not in headers


async def test_a_repeated_credential_is_answered_from_the_cache(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    session = issuer.session()
    first = await sessions.lookup(cookie_of(session))
    for _ in range(5):
        assert await sessions.lookup(cookie_of(session)) is first
    status = sessions.status()
    assert (status.calls, status.hits, status.entries) == (1, 5, 1)
    assert server.session_requests == 1


async def test_concurrent_lookups_of_one_new_token_make_exactly_one_call(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    session = issuer.session()
    server.session_delay = 0.2  # all 100 surely arrive while the one call is out
    records: list[SessionRecord] = []

    async def one() -> None:
        records.append(await sessions.lookup(SessionCredential.bearer(session.token)))

    async with anyio.create_task_group() as group:
        for _ in range(100):
            group.start_soon(one)
    assert server.session_requests == 1
    assert len(records) == 100
    assert all(record is records[0] for record in records)
    assert sessions.status().shared == 99


async def test_concurrent_refusals_share_one_call_and_each_get_an_error(
    server: JWKSServer, sessions: SessionClient
) -> None:
    server.session_delay = 0.2
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await sessions.lookup(SessionCredential.bearer("unknown-token"))
        except InvalidSessionError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(one)
    assert server.session_requests == 1
    assert len(errors) == 20
    assert len({id(error) for error in errors}) == 20  # a fresh exception each


async def test_a_cancelled_waiter_or_caller_does_not_abort_the_shared_call(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    session = issuer.session()
    server.session_delay = 0.3
    results: dict[str, object] = {}

    async def impatient(name: str, delay: float) -> None:
        await anyio.sleep(delay)
        with anyio.move_on_after(0.05) as scope:
            results[name] = await sessions.lookup(cookie_of(session))
        if scope.cancelled_caught:
            results[name] = "cancelled"

    async def patient() -> None:
        await anyio.sleep(0.02)
        results["patient"] = await sessions.lookup(cookie_of(session))

    async with anyio.create_task_group() as group:
        group.start_soon(impatient, "caller", 0)  # the one that starts the call
        group.start_soon(patient)
        group.start_soon(impatient, "waiter", 0.02)
    # The caller is held until the call ends (shielded, bounded by the timeout), so it
    # may still see the answer; a mere waiter leaves at once.
    assert results["waiter"] == "cancelled"
    assert isinstance(results["patient"], SessionRecord)
    assert results["caller"] in ("cancelled", results["patient"])
    assert server.session_requests == 1
    assert await sessions.lookup(cookie_of(session)) is results["patient"]  # cached


# -- refusals and bounds ----------------------------------------------------------------


async def test_null_answers_are_refused_and_the_refusal_is_cached_briefly(
    server: JWKSServer, issuer: Issuer
) -> None:
    sessions = SessionClient(server.session_url, refusal_ttl=0.3)
    forged = issuer.session_cookies(issuer.session(), secret="another secret")[COOKIE]
    credential = SessionCredential.cookie(COOKIE, forged.replace("%3D", "="))
    for _ in range(3):
        with pytest.raises(InvalidSessionError, match="answered null") as caught:
            await sessions.lookup(credential)
        assert isinstance(caught.value, InvalidTokenError)
        assert caught.value.status_code == 401
    assert server.session_requests == 1
    assert sessions.status().refusal_hits == 2
    await anyio.sleep(0.35)
    with pytest.raises(InvalidSessionError):
        await sessions.lookup(credential)
    assert server.session_requests == 2
    await sessions.aclose()


async def test_a_revoked_session_is_seen_once_the_cache_ttl_has_passed(
    server: JWKSServer, issuer: Issuer
) -> None:
    sessions = SessionClient(server.session_url, cache_ttl=0.3)
    session = issuer.session()
    await sessions.lookup(cookie_of(session))
    issuer.revoke_session(session)
    await sessions.lookup(cookie_of(session))  # still cached: the documented bound
    assert server.session_requests == 1
    await anyio.sleep(0.35)
    with pytest.raises(InvalidSessionError):
        await sessions.lookup(cookie_of(session))
    assert server.session_requests == 2
    await sessions.aclose()


async def test_an_answer_is_never_cached_past_the_sessions_expiry(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    session = issuer.session(expires_in=1.0)  # cache_ttl is 60 s
    await sessions.lookup(cookie_of(session))
    await anyio.sleep(max(0.0, session.expires_at - time.time()) + 0.05)
    with pytest.raises(InvalidSessionError):
        await sessions.lookup(cookie_of(session))
    assert server.session_requests == 2


async def test_an_answer_whose_expiry_has_passed_is_refused(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    session = issuer.session()
    answer = session.answer()
    answer["session"]["expiresAt"] = "2020-01-01T00:00:00.000Z"
    server.session_body = json.dumps(answer).encode()
    with pytest.raises(InvalidSessionError, match="expired"):
        await sessions.lookup(cookie_of(session))
    with pytest.raises(InvalidSessionError):
        await sessions.lookup(cookie_of(session))
    assert server.session_requests == 1  # the refusal is cached


async def test_the_cache_is_bounded_and_evicts_the_oldest(
    server: JWKSServer, issuer: Issuer
) -> None:
    sessions = SessionClient(server.session_url, cache_size=2)
    first, second, third = (issuer.session() for _ in range(3))
    for session in (first, second, third):
        await sessions.lookup(cookie_of(session))
    assert sessions.status().entries == 2
    await sessions.lookup(cookie_of(third))
    assert server.session_requests == 3
    await sessions.lookup(cookie_of(first))  # evicted: asked again
    assert server.session_requests == 4
    await sessions.aclose()


async def test_a_zero_sized_cache_asks_every_time(server: JWKSServer, issuer: Issuer) -> None:
    sessions = SessionClient(server.session_url, cache_size=0)
    session = issuer.session()
    for _ in range(3):
        await sessions.lookup(cookie_of(session))
    with pytest.raises(InvalidSessionError):
        await sessions.lookup(SessionCredential.bearer("unknown"))
    with pytest.raises(InvalidSessionError):
        await sessions.lookup(SessionCredential.bearer("unknown"))
    assert server.session_requests == 5
    assert sessions.status().entries == sessions.status().refusals == 0
    await sessions.aclose()


async def test_clear_forgets_answers_and_refusals(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    await sessions.lookup(cookie_of(issuer.session()))
    with pytest.raises(InvalidSessionError):
        await sessions.lookup(SessionCredential.bearer("unknown"))
    sessions.clear()
    assert (sessions.status().entries, sessions.status().refusals) == (0, 0)


# -- the server unavailable -----------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_and_cached_answers_keep_serving(
    status: int, server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    known, new = issuer.session(), issuer.session()
    await sessions.lookup(cookie_of(known))
    server.session_status = status
    server.session_headers = {"Retry-After": "1"}
    with pytest.raises(SessionServiceError, match=f"HTTP {status}") as caught:
        await sessions.lookup(cookie_of(new))
    assert isinstance(caught.value, ServiceUnavailableError)
    assert caught.value.status_code == 503
    assert caught.value.retry_after == 1.0
    with pytest.raises(SessionServiceError, match="not asked again") as again:
        await sessions.lookup(cookie_of(new))
    assert again.value.retry_after is not None
    assert 0 < again.value.retry_after <= 1
    assert 0 < sessions.status().retry_in <= 1
    assert (await sessions.lookup(cookie_of(known))).session_id == known.id
    assert server.session_requests == 2
    server.reset()
    await anyio.sleep(sessions.status().retry_in + 0.05)
    assert (await sessions.lookup(cookie_of(new))).session_id == new.id
    assert server.session_requests == 1


async def test_an_http_date_retry_after_is_honoured(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    server.session_status = 503
    server.session_headers = {"Retry-After": formatdate(time.time() + 30, usegmt=True)}
    with pytest.raises(SessionServiceError) as caught:
        await sessions.lookup(cookie_of(issuer.session()))
    assert caught.value.retry_after is not None
    assert 25 < caught.value.retry_after <= 30


async def test_a_huge_retry_after_is_cut(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    server.session_status = 503
    server.session_headers = {"Retry-After": "86400"}
    with pytest.raises(SessionServiceError) as caught:
        await sessions.lookup(cookie_of(issuer.session()))
    assert caught.value.retry_after == MAX_RETRY_AFTER


async def test_without_retry_after_calls_pause_for_the_retry_interval(
    server: JWKSServer, issuer: Issuer
) -> None:
    session = issuer.session()
    paused = SessionClient(server.session_url, retry_interval=30)
    eager = SessionClient(server.session_url, retry_interval=0)
    server.session_status = 500
    for client in (paused, eager):
        for _ in range(2):
            with pytest.raises(SessionServiceError) as caught:
                await client.lookup(cookie_of(session))
    assert caught.value.retry_after is None  # eager: nothing to wait for
    assert server.session_requests == 3  # paused asked once, eager twice
    assert 29 < paused.status().retry_in <= 30
    assert (paused.status().failures, eager.status().failures) == (1, 2)
    await paused.aclose()
    await eager.aclose()


async def test_an_unreachable_server(issuer: Issuer) -> None:
    sessions = SessionClient(f"http://127.0.0.1:{free_port()}/api/auth/get-session")
    with pytest.raises(SessionServiceError, match="could not be reached") as caught:
        await sessions.lookup(cookie_of(issuer.session()))
    assert caught.value.retry_after == 1.0
    assert caught.value.__cause__ is not None
    await sessions.aclose()


async def test_a_slow_server_times_out(server: JWKSServer, issuer: Issuer) -> None:
    sessions = SessionClient(server.session_url, timeout=0.2)
    server.session_delay = 3
    with pytest.raises(SessionServiceError, match=r"did not answer within 0\.2 s"):
        await sessions.lookup(cookie_of(issuer.session()))
    await sessions.aclose()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>Bad gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "not null nor"),
        (b'"session"', "not null nor"),
        (b'{"session": null, "user": null}', "not null nor"),
        (b'{"session": {}, "user": {}}', "session.id"),
        (b'{"session": {"id": "s"}, "user": {}}', "session.userId"),
        (b'{"session": {"id": "s", "userId": "u"}, "user": {"id": "v"}}', "user.id"),
        (b'{"session": {"id": "s", "userId": "u"}, "user": {"id": "u"}}', "expiresAt"),
        (
            b'{"session": {"id": "s", "userId": "u", "expiresAt": 1e12}, "user": {"id": "u"}}',
            "expiresAt",
        ),
        (
            b'{"session": {"id": "s", "userId": "u", "expiresAt": "tomorrow"}, '
            b'"user": {"id": "u"}}',
            "expiresAt",
        ),
    ],
)
async def test_answers_that_are_not_get_sessions_are_a_service_error(
    body: bytes, reason: str, server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    server.session_body = body
    session = issuer.session()
    with pytest.raises(SessionServiceError, match=reason) as caught:
        await sessions.lookup(cookie_of(session))
    assert caught.value.retry_after is None
    with pytest.raises(SessionServiceError):  # not cached, and no pause: asked again
        await sessions.lookup(cookie_of(session))
    assert server.session_requests == 2


async def test_an_answer_for_another_session_is_a_service_error(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    server.session_body = json.dumps(issuer.session().answer()).encode()
    with pytest.raises(SessionServiceError, match="another session"):
        await sessions.lookup(cookie_of(issuer.session()))


@pytest.mark.parametrize("depth", [900, 5000])
async def test_a_deeply_nested_answer_is_a_service_error(
    depth: int, server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    # Deeper than the recursion limit: json refuses it; a little less: it parses, and
    # making it read-only then fails. Either way a 503, never a crash.
    session = issuer.session(deep="@")
    nested = b"[" * depth + b"]" * depth
    server.session_body = json.dumps(session.answer()).encode().replace(b'"@"', nested)
    with pytest.raises(SessionServiceError, match=r"not JSON|nested too deeply"):
        await sessions.lookup(cookie_of(session))


async def test_an_oversized_answer_is_refused(server: JWKSServer, issuer: Issuer) -> None:
    sessions = SessionClient(server.session_url, max_body_size=1024)
    session = issuer.session(bio="x" * 2000)
    with pytest.raises(SessionServiceError, match="larger than 1024 bytes"):
        await sessions.lookup(cookie_of(session))
    await sessions.aclose()


@pytest.mark.parametrize("status", [302, 401, 404])
async def test_other_statuses_are_a_service_error_and_redirects_are_not_followed(
    status: int, server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    server.session_status = status
    server.session_headers = {"Location": server.session_url}
    with pytest.raises(SessionServiceError, match=f"HTTP {status}") as caught:
        await sessions.lookup(cookie_of(issuer.session()))
    assert ("redirect" in caught.value.message) == (status == 302)
    assert server.session_requests == 1


async def test_a_connection_dropped_mid_answer_is_a_service_error(issuer: Issuer) -> None:
    # A reset in the middle of a body: cheap to fake, not to provoke from a real server.
    async def broken_stream() -> AsyncIterator[bytes]:
        yield b'{"session": '
        raise httpx.ReadError("connection reset by peer")

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken_stream())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        sessions = SessionClient("http://auth.test/api/auth/get-session", client=client)
        with pytest.raises(SessionServiceError, match="could not be reached"):
            await sessions.lookup(cookie_of(issuer.session()))


async def test_an_unexpected_failure_is_a_service_error_and_logged(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a transport bug")

    caplog.set_level(logging.WARNING, logger=LOGGER)
    session = issuer.session()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        sessions = SessionClient("http://auth.test/api/auth/get-session", client=client)
        with pytest.raises(SessionServiceError, match=r"could not be handled \(RuntimeError\)"):
            await sessions.lookup(cookie_of(session))
    assert "failed unexpectedly" in caplog.text
    assert session.token not in caplog.text


# -- clients, events and logs ----------------------------------------------------------


async def test_cookies_get_session_sets_are_never_sent_back(
    server: JWKSServer, issuer: Issuer, sessions: SessionClient
) -> None:
    server.session_headers = {"Set-Cookie": "better-auth.session_data=someone-elses; Path=/"}
    first, second = issuer.session(), issuer.session()
    await sessions.lookup(cookie_of(first))
    await sessions.lookup(SessionCredential.bearer(second.token))
    assert [h.get("cookie") for h in server.session_request_headers] == [
        f"{COOKIE}={issuer.session_cookies(first)[COOKIE]}",
        None,
    ]


async def test_a_given_client_is_used_without_its_cookies_or_headers_and_left_open(
    server: JWKSServer, issuer: Issuer
) -> None:
    async with httpx.AsyncClient(
        cookies={"stray": "cookie"}, headers={"X-Api-Key": "secret"}
    ) as client:
        sessions = SessionClient(server.session_url, client=client)
        session = issuer.session()
        await sessions.lookup(SessionCredential.bearer(session.token))
        await sessions.aclose()
        assert not client.is_closed
    (headers,) = server.session_request_headers
    assert "cookie" not in headers
    assert "x-api-key" not in headers


async def test_the_own_client_keeps_connections_alive_and_is_closed(
    server: JWKSServer, issuer: Issuer
) -> None:
    sessions = SessionClient(server.session_url)
    for _ in range(3):
        await sessions.lookup(SessionCredential.bearer(issuer.session().token))
    assert {h.get("connection") for h in server.session_request_headers} == {None}
    await sessions.aclose()
    await sessions.aclose()  # twice is harmless
    # A lookup after aclose opens a new client.
    await sessions.lookup(SessionCredential.bearer(issuer.session().token))
    await sessions.aclose()


async def test_lookups_emit_events(server: JWKSServer, issuer: Issuer) -> None:
    events: list[tuple[str, Mapping[str, Any]]] = []
    sessions = SessionClient(
        server.session_url, on_event=lambda name, data: events.append((name, data))
    )
    session = issuer.session()
    await sessions.lookup(cookie_of(session))
    await sessions.lookup(cookie_of(session))
    for _ in range(2):
        with pytest.raises(InvalidSessionError):
            await sessions.lookup(SessionCredential.bearer("unknown"))
    server.session_status = 503
    with pytest.raises(SessionServiceError):
        await sessions.lookup(SessionCredential.bearer("other"))
    with pytest.raises(SessionServiceError):
        await sessions.lookup(SessionCredential.bearer("other"))
    assert {name for name, _ in events} == {"session_lookup"}
    summary = [(d["kind"], d["cached"], d["outcome"], d["reason"]) for _, d in events]
    assert summary == [
        ("cookie", False, "accepted", None),
        ("cookie", True, "accepted", None),
        ("bearer", False, "refused", "InvalidSessionError"),
        ("bearer", True, "refused", "InvalidSessionError"),
        ("bearer", False, "unavailable", "SessionServiceError"),
        ("bearer", False, "unavailable", "SessionServiceError"),
    ]
    durations = [d["duration"] for _, d in events]
    assert [d is not None for d in durations] == [True, False, True, False, True, False]
    await sessions.aclose()


async def test_a_raising_event_hook_is_logged_and_ignored(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(name: str, data: Mapping[str, Any]) -> None:
        raise RuntimeError("broken metrics")

    sessions = SessionClient(server.session_url, on_event=hook)
    session = issuer.session()
    assert (await sessions.lookup(cookie_of(session))).session_id == session.id
    assert "on_event hook raised" in caplog.text
    await sessions.aclose()


async def test_no_token_in_logs_or_messages(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    sessions = SessionClient(server.session_url, retry_interval=0)
    session = issuer.session()
    messages: list[str] = []
    await sessions.lookup(cookie_of(session))
    issuer.revoke_session(session)
    for status, value in ((200, session.token), (503, session.signed_token)):
        server.session_status = status
        try:
            await sessions.lookup(SessionCredential.bearer(value))
        except (InvalidSessionError, SessionServiceError) as exc:
            messages.append(str(exc))
    assert len(messages) == 2
    assert "asking get-session" in caplog.text
    assert "HTTP 503" in caplog.text
    for text in (caplog.text, *messages):
        assert session.token not in text
    await sessions.aclose()


# -- Retry-After parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("-1", None),
        ("1.5", None),
        ("\u00b2", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("99999999999", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_reads_future_dates() -> None:
    seconds = parse_retry_after(formatdate(time.time() + 60, usegmt=True))
    assert seconds is not None
    assert 55 < seconds <= 60
