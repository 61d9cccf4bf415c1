"""The get-session client: asks Better Auth who a session cookie or session token belongs to.

Answers are cached, so a session costs one call per ``cache_ttl`` however many
requests carry it; concurrent lookups of one credential share one call; refusals
are cached briefly; and the server's ``Retry-After`` is honoured.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

import httpx

from ._cookies import encode_cookie_value
from ._observability import EventHook
from ._remote import MAX_RETRY_AFTER, LookupStatus, RemoteLookup, SharedCache, freeze_json
from .errors import InvalidSessionError, SessionServiceError

__all__ = [
    "MAX_CREDENTIAL_LENGTH",
    "MAX_RETRY_AFTER",
    "SessionClient",
    "SessionClientStatus",
    "SessionCredential",
    "SessionRecord",
    "session_expiry",
]

#: Longest cookie value or bearer token sent to get-session, in characters.
MAX_CREDENTIAL_LENGTH = 4096

# RFC 6750's b64token, plus "%" for a percent-encoded signed token.
_BEARER = re.compile(r"[A-Za-z0-9\-._~+/%]+=*")
# A cookie name: an RFC 7230 token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_USER_AGENT = "starlette-betterauth"

_REFUSED = "the session is unknown, expired or signed out (Better Auth's get-session answered null)"
_EXPIRED = "the session has expired"


class SessionCredential:
    """A session credential to send to get-session: one cookie, or a bearer session token.

    Build one with :meth:`cookie` or :meth:`bearer`. ``key`` is the SHA-256 of
    the kind, name and value, used as the cache key so that no token is kept
    in clear; ``token`` is the raw session token the value names (before the
    signature), used to check the answer.
    """

    __slots__ = ("key", "kind", "name", "token", "value")

    kind: Literal["cookie", "bearer"]
    name: str | None
    value: str
    token: str
    key: bytes

    def __init__(self, kind: Literal["cookie", "bearer"], name: str | None, value: str) -> None:
        # Use cookie() or bearer(): they check the value first.
        self.kind = kind
        self.name = name
        self.value = value
        self.token = value.rpartition(".")[0] or value
        self.key = hashlib.sha256(f"{kind}\0{name or ''}\0{value}".encode()).digest()

    @classmethod
    def cookie(cls, name: str, value: str) -> SessionCredential:
        """The cookie ``name`` with ``value`` (decoded, as :func:`parse_cookies` returns it).

        Sent alone, percent-encoded as Better Auth writes it.

        Raises:
            ValueError: ``name`` is not a cookie name.
            InvalidSessionError: ``value`` is empty or longer than :data:`MAX_CREDENTIAL_LENGTH`.
        """
        if not _COOKIE_NAME.fullmatch(name):
            raise ValueError(f"not a cookie name: {name!r}")
        if not value or len(value) > MAX_CREDENTIAL_LENGTH:
            raise InvalidSessionError("the session cookie is empty or too long")
        return cls("cookie", name, value)

    @classmethod
    def bearer(cls, token: str) -> SessionCredential:
        """A session token for ``Authorization: Bearer``, raw or signed (``<token>.<signature>``).

        Raises:
            InvalidSessionError: the value cannot be a session token (characters, length).
        """
        if len(token) > MAX_CREDENTIAL_LENGTH or not _BEARER.fullmatch(token):
            raise InvalidSessionError(
                "the bearer value is not a session token (RFC 6750 characters, at most "
                f"{MAX_CREDENTIAL_LENGTH})"
            )
        credential = cls("bearer", None, token)
        if "%" in token:  # Better Auth decodes a percent-encoded signed token
            credential.token = unquote(token).rpartition(".")[0] or unquote(token)
        return credential

    def __repr__(self) -> str:
        # Never the value: reprs end up in logs and tracebacks.
        return f"SessionCredential({self.kind!r}, {self.name!r}, sha256={self.key.hex()[:12]})"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Better Auth's answer for a live session, read-only.

    Attributes:
        session: the ``session`` object of the answer, without its ``token``
            (only its hash is kept); nested objects are read-only mappings and
            lists are tuples.
        user: the ``user`` object (``id``, ``email``, ``name``, ``role``,
            ``banned``, ...), read-only likewise.
        session_id: ``session.id``.
        user_id: ``session.userId`` (equal to ``user.id``).
        expires_at: ``session.expiresAt`` as Unix seconds.
        token_hash: hex SHA-256 of the raw session token.
    """

    session: Mapping[str, Any]
    user: Mapping[str, Any]
    session_id: str
    user_id: str
    expires_at: float
    token_hash: str


#: Counters of a :class:`SessionClient` (``calls``, ``hits``, ``shared``, ...).
SessionClientStatus = LookupStatus


class SessionClient(RemoteLookup[SessionCredential, SessionRecord]):
    """Looks sessions up with Better Auth's ``GET /api/auth/get-session``, with caching.

    Rules:

    - an answer is cached under the SHA-256 of the credential (never the token
      in clear), for at most ``cache_ttl`` seconds and never past the session's
      ``expiresAt``; at most ``cache_size`` answers, the oldest evicted first;
    - one call per credential is in flight however many lookups wait for it; a
      waiter that is cancelled does not abort it (it is bounded by ``timeout``);
    - a null answer (unknown, expired or signed-out session) raises
      :class:`InvalidSessionError` and is cached for ``refusal_ttl`` seconds (at
      most ``cache_size`` refusals);
    - an answer whose ``expiresAt`` has passed is refused the same way;
    - no answer to be had raises :class:`SessionServiceError` (HTTP 503): the
      server unreachable or slower than ``timeout``, an HTTP status other than
      200 (redirects are not followed), a body that is not JSON, larger than
      ``max_body_size`` or not shaped like get-session's answer. After a 429 or
      5xx, no call is made before its ``Retry-After`` (at most
      :data:`MAX_RETRY_AFTER` seconds) has passed, or ``retry_interval``
      seconds without one, nor after the server was unreachable or timed out:
      lookups meanwhile raise :class:`SessionServiceError` with ``retry_after``
      set. Cached answers keep serving all along.

    Only the one credential is sent: the cookie alone as ``Cookie``, or the
    token as ``Authorization: Bearer``; never the client's cookie jar or default
    headers. The client made by default keeps connections alive (one pooled
    client for all lookups) and stores no cookie that get-session sets. A client
    passed as ``client`` is used as is: it would store those cookies (Better
    Auth refreshes ``session_data`` in its answers), so give it a jar that
    refuses them if it is used for anything else.

    Args:
        url: get-session's URL, e.g. ``https://auth.example.com/api/auth/get-session``.
        client: an ``httpx.AsyncClient`` to use (the caller closes it).
        cache_size: answers (and, separately, refusals) kept at most; 0 keeps none.
        cache_ttl: seconds an answer is kept at most; 0 keeps none. This bounds
            how long a sign-out, revocation or ban takes to be seen.
        refusal_ttl: seconds a refusal is kept; 0 keeps none.
        timeout: seconds a call may take, body included.
        max_body_size: bytes of answer accepted.
        retry_interval: seconds without calls after a failure that came with no
            ``Retry-After``; 0 retries at once.
        on_event: ``(name, data)`` hook: each lookup emits ``session_lookup``
            with ``kind`` (``"cookie"`` or ``"bearer"``), ``cached`` (answered
            from a cache, no call), ``shared`` (waited for another lookup's call),
            ``outcome`` (``"accepted"``, ``"refused"`` or ``"unavailable"``),
            ``reason`` (the error's class name, or None) and ``duration`` (seconds
            of the call, or None). A hook that raises is logged and ignored.
        shared: a cache shared by processes (the Redis one), asked before each
            call this client would make, and told the answers (never the session
            token: it is taken out of what is shared).

    Raises:
        ConfigurationError: a URL that is not http(s), or a bad setting (named).

    Example::

        sessions = SessionClient("https://auth.example.com/api/auth/get-session")
        record = await sessions.lookup(SessionCredential.bearer(token))
        record.user["email"], record.session_id, record.expires_at
    """

    service = "get-session"
    event = "session_lookup"
    unavailable = SessionServiceError

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 60.0,
        refusal_ttl: float = 5.0,
        timeout: float = 5.0,
        max_body_size: int = 256 * 1024,
        retry_interval: float = 1.0,
        on_event: EventHook | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        super().__init__(
            url,
            client=client,
            cache_size=cache_size,
            cache_ttl=cache_ttl,
            refusal_ttl=refusal_ttl,
            timeout=timeout,
            max_body_size=max_body_size,
            retry_interval=retry_interval,
            on_event=on_event,
            shared=shared,
        )

    async def lookup(self, credential: SessionCredential) -> SessionRecord:
        """The live session ``credential`` names, from the cache or from get-session.

        Raises:
            InvalidSessionError: the session is unknown, expired or signed out (401).
            SessionServiceError: no answer can be had now (503); see ``retry_after``.
        """
        return await super().lookup(credential)

    def _event_data(self, credential: SessionCredential) -> dict[str, Any]:
        return {"kind": credential.kind}

    def _shareable(self, body: bytes) -> bytes:
        # The session and the user only: never the session token, which is the credential.
        answer = json.loads(body)
        if not isinstance(answer, dict):
            return body  # null: the refusal
        session = {k: v for k, v in answer["session"].items() if k != "token"}
        return json.dumps(
            {"session": session, "user": answer["user"]}, separators=(",", ":")
        ).encode()

    def _request(self, credential: SessionCredential) -> httpx.Request:
        headers = [("accept", "application/json"), ("user-agent", _USER_AGENT)]
        if credential.kind == "cookie":
            headers.append(("cookie", f"{credential.name}={encode_cookie_value(credential.value)}"))
        else:
            headers.append(("authorization", f"Bearer {credential.value}"))
        # Built here, not with client.build_request: the client's cookie jar and
        # default headers must never be sent along.
        return httpx.Request(
            "GET", self.url, headers=headers, extensions={"timeout": self._timeout_extension}
        )

    # -- answers ---------------------------------------------------------------

    def _parse(self, body: bytes, credential: SessionCredential) -> tuple[SessionRecord, float]:
        try:
            answer = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SessionServiceError("the get-session answer is not JSON") from exc
        if answer is None:
            raise InvalidSessionError(_REFUSED)
        session = answer.get("session") if isinstance(answer, dict) else None
        user = answer.get("user") if isinstance(answer, dict) else None
        if not isinstance(session, dict) or not isinstance(user, dict):
            raise _bad_shape('not null nor {"session": {...}, "user": {...}}')
        session_id, user_id = session.get("id"), session.get("userId")
        if not isinstance(session_id, str) or not session_id:
            raise _bad_shape("session.id is not a string")
        if not isinstance(user_id, str) or not user_id:
            raise _bad_shape("session.userId is not a string")
        if user.get("id") != user_id:
            raise _bad_shape("user.id is not session.userId")
        token = session.get("token")
        if token is not None and token != credential.token:
            raise _bad_shape("it names another session")
        expires_at = session_expiry(session.get("expiresAt"))
        if expires_at is None:
            raise _bad_shape("session.expiresAt is not an ISO 8601 date")
        if expires_at <= time.time():
            raise InvalidSessionError(_EXPIRED)
        try:
            frozen_session = freeze_json({k: v for k, v in session.items() if k != "token"})
            frozen_user = freeze_json(user)
        except RecursionError as exc:
            raise _bad_shape("it is nested too deeply") from exc
        record = SessionRecord(
            session=frozen_session,
            user=frozen_user,
            session_id=session_id,
            user_id=user_id,
            expires_at=expires_at,
            token_hash=hashlib.sha256(credential.token.encode()).hexdigest(),
        )
        return record, expires_at


def _bad_shape(why: str) -> SessionServiceError:
    return SessionServiceError(f"the get-session answer is not usable: {why}")


def session_expiry(value: object) -> float | None:
    """Unix seconds from a JSON date (a JavaScript ``Date``: ISO 8601), or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
