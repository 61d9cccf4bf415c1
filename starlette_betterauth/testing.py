"""Test helpers for apps that use starlette-betterauth: keys, tokens, sessions, a real server.

Nothing here talks to a real Better Auth server, and nothing needs Node:
:class:`Issuer` mints tokens shaped exactly like Better Auth's (EdDSA by
default, no ``typ``, the user row as claims, ``iss`` and ``aud`` equal to the
base URL) and :class:`JWKSServer` serves its key set from a real HTTP server on
127.0.0.1::

    from starlette_betterauth.testing import Issuer, JWKSServer

    issuer = Issuer()
    with JWKSServer(issuer) as server:
        app.add_middleware(BetterAuthMiddleware, base_url=server.url)
        token = issuer.token(role="admin")

Sessions too: :meth:`Issuer.session` records a session as a Better Auth
database would, :meth:`Issuer.session_cookies` mints the browser's cookies for
it (the signed ``session_token`` and the JWKS-signed ``session_data`` cookie
cache of Better Auth 1.7), and the server answers ``GET /api/auth/get-session``
for it until it expires or is revoked::

    session = issuer.session(role="admin")
    client.cookies.update(issuer.session_cookies(session))     # a browser
    headers = {"Authorization": f"Bearer {session.token}"}      # the bearer plugin
    issuer.revoke_session(session)                              # signs it out

OAuth too, shaped like Better Auth's OAuth provider (``@better-auth/oauth-provider``):
:meth:`Issuer.access_token` mints RFC 9068 access tokens (``at+jwt``, ``scope``,
``aud`` the resource; :meth:`Issuer.client_credentials_token` a machine token,
``dpop_key=`` a DPoP-bound one), :meth:`Issuer.opaque_access_token` an opaque one
the server answers for at ``/api/auth/oauth2/introspect``, :meth:`Issuer.id_token`
an ID token, and :class:`DPoPKey` the proofs of a DPoP client::

    key = DPoPKey()
    token = issuer.access_token(scope="reports:read", audience=API, dpop_key=key)
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": key.proof("GET", f"{API}/reports", token=token),
    }

Also available as pytest fixtures (``betterauth_issuer``, ``betterauth_jwks_server``,
``betterauth_session``) once the package is installed.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import math
import secrets
import selectors
import socket
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from ._cookies import (
    DEFAULT_COOKIE_PREFIX,
    CookieNames,
    encode_cookie_value,
    parse_cookies,
    sign_session_token,
    split_signed_token,
)
from ._dpop import DPOP_PROOF_TYPE, access_token_hash, jwk_thumbprint
from ._settings import DEFAULT_JWKS_PATH
from .errors import InvalidSessionError

__all__ = [
    "ALGORITHMS",
    "DEFAULT_BASE_PATH",
    "DEFAULT_SESSION_PATH",
    "SESSION_COOKIE_AUDIENCE",
    "SESSION_COOKIE_TYPE",
    "DPoPKey",
    "Issuer",
    "JWKSServer",
    "SigningKey",
    "TestSession",
    "b64url",
    "jwks_transport",
]

#: Better Auth's default basePath: its OAuth issuer is the base URL plus this.
DEFAULT_BASE_PATH = "/api/auth"
#: Better Auth's default basePath plus its get-session endpoint.
DEFAULT_SESSION_PATH = "/api/auth/get-session"
#: The ``typ`` header of Better Auth 1.7's JWKS-signed cookie cache.
SESSION_COOKIE_TYPE = "better-auth.session-cache+jwt"
#: The ``aud`` claim of Better Auth 1.7's JWKS-signed cookie cache.
SESSION_COOKIE_AUDIENCE = "better-auth:session-cache"

#: Every algorithm a Better Auth server can sign with and the package verifies.
ALGORITHMS: tuple[str, ...] = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
_KID_ALPHABET = string.ascii_letters + string.digits


def b64url(data: bytes | str | Mapping[str, Any]) -> str:
    """Unpadded base64url of bytes, of a string, or of a JSON object."""
    if isinstance(data, Mapping):
        data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _random_kid() -> str:
    # Better Auth's kids, ids and session tokens are random 32-character alphanumeric strings.
    return "".join(secrets.choice(_KID_ALPHABET) for _ in range(32))


def _iso(when: float) -> str:
    """A JavaScript ``Date`` as JSON: ISO 8601, milliseconds, ``Z``."""
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TestSession:
    """A session recorded in an :class:`Issuer`, as Better Auth's get-session answers it.

    A snapshot taken when the session was made: later changes (:meth:`Issuer.ban`,
    :meth:`Issuer.update_user`) show in the server's answers and in cookies
    minted afterwards, not here.

    Attributes:
        token: the raw session token (32 alphanumerics): what sign-in returns as
            ``token``, for ``Authorization: Bearer`` with the bearer plugin.
        signed_token: ``<token>.<base64 HMAC-SHA256(secret, token)>`` with the
            issuer's secret: the ``set-auth-token`` header's form, and the
            ``session_token`` cookie's value once decoded.
        id: the session's id.
        user_id: the user's id.
        expires_at: when the session expires, Unix seconds.
        session: the ``session`` object of the get-session answer (token included).
        user: the ``user`` object of the get-session answer.
    """

    __test__: ClassVar[bool] = False  # not a test class, whatever pytest guesses from the name

    token: str
    signed_token: str
    id: str
    user_id: str
    expires_at: float
    session: dict[str, Any] = field(repr=False)
    user: dict[str, Any] = field(repr=False)

    def answer(self) -> dict[str, Any]:
        """The get-session answer for this snapshot: ``{"session": ..., "user": ...}``."""
        return {"session": dict(self.session), "user": dict(self.user)}


class SigningKey:
    """A private key of one algorithm, with the public JWK a Better Auth server would list.

    ``SigningKey("ES256")`` generates a fresh key (RSA keys are 2048 bits).
    """

    def __init__(self, alg: str = "EdDSA", *, kid: str | None = None) -> None:
        if alg not in ALGORITHMS:
            raise ValueError(f"alg must be one of {ALGORITHMS}, got {alg!r}")
        self.alg = alg
        self.kid = kid or _random_kid()
        self.private_key: Any
        if alg == "EdDSA":
            self.private_key = ed25519.Ed25519PrivateKey.generate()
        elif alg == "ES256":
            self.private_key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES512":
            self.private_key = ec.generate_private_key(ec.SECP521R1())
        else:
            self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._algorithm = get_default_algorithms()[alg]

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public JWK, shaped like Better Auth's (alg and kid, no use)."""
        jwk: dict[str, Any] = self._algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update(alg=self.alg, kid=self.kid)
        return jwk

    def sign_bytes(self, signing_input: bytes) -> bytes:
        """The raw JWS signature of ``signing_input``."""
        return self._algorithm.sign(signing_input, self.private_key)

    def sign(self, claims: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
        """A compact JWS of ``claims``; the header is ``{"alg", "kid"}`` plus ``header``."""
        full_header: dict[str, Any] = {"alg": self.alg, "kid": self.kid}
        full_header.update(header or {})
        signing_input = f"{b64url(full_header)}.{b64url(claims)}"
        signature = self.sign_bytes(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url(signature)}"


class DPoPKey:
    """A DPoP client's key pair (RFC 9449): mints proofs and names the key's thumbprint.

    ``DPoPKey("ES256")`` generates a fresh key (any of :data:`ALGORITHMS`; ES256
    by default, as most clients use).

    Example::

        key = DPoPKey()
        token = issuer.access_token(scope="read", audience=API, dpop_key=key)
        proof = key.proof("POST", "https://api.example.com/orders", token=token)
    """

    def __init__(self, alg: str = "ES256") -> None:
        self._key = SigningKey(alg)
        self.alg = alg

    @property
    def jwk(self) -> dict[str, Any]:
        """The public JWK a proof's header carries (key members only)."""
        return {
            name: value
            for name, value in self._key.public_jwk.items()
            if name not in ("alg", "kid", "use", "key_ops")
        }

    @property
    def jkt(self) -> str:
        """The key's RFC 7638 thumbprint: the ``cnf.jkt`` of the tokens bound to it."""
        return jwk_thumbprint(self.jwk)

    def proof(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        issued_at: float | None = None,
        jti: str | None = None,
        header: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A DPoP proof for one request: ``htm`` ``method``, ``htu`` ``url``, a fresh
        ``jti``, ``iat`` now, and ``ath`` the hash of ``token`` when given.

        ``header`` adds or replaces header members (``{"typ": "JWT"}``); other
        keywords add or replace claims, a None value removes one.
        """
        payload: dict[str, Any] = {
            "jti": jti or secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time() if issued_at is None else issued_at),
        }
        if token is not None:
            payload["ath"] = access_token_hash(token)
        _merge(payload, claims)
        full_header: dict[str, Any] = {"typ": DPOP_PROOF_TYPE, "alg": self.alg, "jwk": self.jwk}
        _merge(full_header, header or {})
        signing_input = f"{b64url(full_header)}.{b64url(payload)}"
        signature = self._key.sign_bytes(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url(signature)}"


class Issuer:
    """Mints Better Auth-shaped JWTs and holds the key set that verifies them.

    It also keeps the sessions it made (:meth:`session`), which the
    :class:`JWKSServer` serving it answers for at get-session, and mints their
    cookies (:meth:`session_cookies`).

    Args:
        base_url: the Better Auth baseURL the tokens name as ``iss`` and ``aud``.
            :class:`JWKSServer` sets it to its own URL when left as None.
        alg: the signing algorithm of the first key.
        secret: the server's ``BETTER_AUTH_SECRET``, which signs session token
            cookies; random by default.
    """

    def __init__(
        self, base_url: str | None = None, *, alg: str = "EdDSA", secret: str | None = None
    ) -> None:
        self.base_url = base_url or "http://127.0.0.1"
        self.keys: list[SigningKey] = [SigningKey(alg)]
        self.secret = secret or secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, Any]] = {}  # by token
        self._users: dict[str, dict[str, Any]] = {}  # by id
        self._opaque: dict[str, dict[str, Any]] = {}  # opaque access tokens' claims
        #: OAuth clients allowed to introspect: ``{client_id: client_secret}``.
        self.clients: dict[str, str] = {}

    @property
    def current_key(self) -> SigningKey:
        """The key new tokens are signed with (the newest, as Better Auth does)."""
        return self.keys[-1]

    def jwks(self) -> dict[str, Any]:
        """The key set document: ``{"keys": [...]}``."""
        with self._lock:
            return {"keys": [key.public_jwk for key in self.keys]}

    def rotate(self, alg: str | None = None) -> SigningKey:
        """Add a new signing key (the old ones stay listed, as in the grace period)."""
        key = SigningKey(alg or self.current_key.alg)
        with self._lock:
            self.keys.append(key)
        return key

    def remove_key(self, kid: str) -> None:
        """Take a key out of the key set, as when its grace period ends."""
        with self._lock:
            self.keys = [key for key in self.keys if key.kid != kid]

    def claims(
        self,
        *,
        user_id: str | None = None,
        email: str = "user@example.com",
        name: str = "Test User",
        role: str | None = "user",
        banned: bool = False,
        expires_in: float = 900,
        issued_at: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims Better Auth's jwt plugin puts in a session JWT, overridable."""
        now = int(time.time() if issued_at is None else issued_at)
        user_id = user_id or _random_kid()
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        claims: dict[str, Any] = {
            "iat": now,
            "name": name,
            "email": email,
            "emailVerified": False,
            "createdAt": stamp.replace("+00:00", "Z"),
            "updatedAt": stamp.replace("+00:00", "Z"),
        }
        if role is not None:
            claims.update(role=role, banned=banned)
        claims.update(
            id=user_id,
            sub=user_id,
            exp=int(now + expires_in),
            iss=self.base_url,
            aud=self.base_url,
        )
        for key, value in extra.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return claims

    def token(
        self,
        *,
        key: SigningKey | None = None,
        header: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed Better Auth-shaped JWT, with claim keywords as in :meth:`claims`.

        Any other claim given as None is left out (``exp=None`` makes a token
        without exp, ``iss=None`` one without iss); ``role=None`` leaves out
        ``role`` and ``banned``, as a server without the admin plugin does.
        """
        return (key or self.current_key).sign(self.claims(**claims), header)

    def expired_token(self, **claims: Any) -> str:
        """A token that expired an hour ago."""
        return self.token(issued_at=time.time() - 4500, **claims)

    # -- OAuth provider --------------------------------------------------------

    @property
    def oauth_issuer(self) -> str:
        """The ``iss`` of Better Auth's OAuth tokens: ``base_url`` + basePath ``/api/auth``."""
        return self.base_url.rstrip("/") + DEFAULT_BASE_PATH

    def access_token(
        self,
        *,
        scope: str | Iterable[str] | None,
        audience: str | Sequence[str],
        user_id: str | None = None,
        client_id: str | None = "test-client",
        expires_in: float = 3600,
        issued_at: float | None = None,
        key: SigningKey | None = None,
        header: Mapping[str, Any] | None = None,
        dpop_key: DPoPKey | None = None,
        **claims: Any,
    ) -> str:
        """An OAuth access token shaped like Better Auth's OAuth provider issues it (RFC 9068).

        The header carries ``typ: "at+jwt"``. The claims: ``iss`` (:attr:`oauth_issuer`),
        ``aud`` (``audience``: the resource the client asked for, or a list of them),
        ``sub`` (``user_id``, random when None), ``client_id`` and ``azp``, ``sid``,
        ``scope`` (space-separated: give a string or an iterable of names; None leaves
        the claim out), ``iat``, ``exp`` (an hour later by default) and ``jti``;
        with ``dpop_key``, ``cnf.jkt`` binds it to that key; ``client_id=None``
        leaves out ``client_id`` and ``azp``. Other claim keywords
        are added or override these; a claim given as None is left out (see
        :meth:`client_credentials_token` for a machine token).

        Example::

            app.add_middleware(
                BetterAuthMiddleware,
                base_url=server.url,
                accept=[AccessToken(resource="https://api.example.com")],
            )
            token = issuer.access_token(
                scope="openid reports:read", audience="https://api.example.com"
            )
            # request.state.user.scopes == frozenset({"openid", "reports:read"})
        """
        now = int(time.time() if issued_at is None else issued_at)
        payload: dict[str, Any] = {
            "iss": self.oauth_issuer,
            "aud": audience if isinstance(audience, str) else list(audience),
            "sub": user_id or _random_kid(),
            "client_id": client_id,
            "azp": client_id,
            "sid": _random_kid(),
            "iat": now,
            "exp": int(now + expires_in),
            "jti": _random_kid(),
        }
        if client_id is None:
            del payload["client_id"], payload["azp"]
        if scope is not None:
            payload["scope"] = scope if isinstance(scope, str) else " ".join(scope)
        if dpop_key is not None:
            payload["cnf"] = {"jkt": dpop_key.jkt}
        _merge(payload, claims)
        full_header = {"typ": "at+jwt", **(header or {})}
        return (key or self.current_key).sign(payload, full_header)

    def client_credentials_token(
        self,
        *,
        scope: str | Iterable[str] | None,
        audience: str | Sequence[str],
        client_id: str = "test-client",
        **claims: Any,
    ) -> str:
        """A machine token, as the ``client_credentials`` grant gives: ``sub`` is the
        client id and there is no ``sid`` (other arguments as :meth:`access_token`)."""
        claims.setdefault("sid", None)
        return self.access_token(
            scope=scope, audience=audience, client_id=client_id, user_id=client_id, **claims
        )

    def id_token(
        self,
        *,
        client_id: str = "test-client",
        user_id: str | None = None,
        nonce: str | None = "nonce",
        expires_in: float = 36000,
        **claims: Any,
    ) -> str:
        """An OpenID Connect ID token as Better Auth's provider signs it: no ``typ``,
        ``aud`` the client id, ``nonce``, ``auth_time``, ``acr``. Never an access token."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "auth_time": now,
            "acr": "0",
            "iss": self.oauth_issuer,
            "sub": user_id or _random_kid(),
            "aud": client_id,
            "nonce": nonce,
            "iat": now,
            "exp": int(now + expires_in),
        }
        _merge(payload, claims)
        return self.current_key.sign(payload)

    def register_client(
        self, client_id: str | None = None, client_secret: str | None = None
    ) -> tuple[str, str]:
        """Register an OAuth client that may introspect; returns ``(client_id, client_secret)``."""
        pair = (client_id or _random_kid(), client_secret or _random_kid())
        with self._lock:
            self.clients[pair[0]] = pair[1]
        return pair

    def opaque_access_token(
        self,
        *,
        scope: str | Iterable[str] | None,
        user_id: str | None = None,
        client_id: str = "test-client",
        audience: str | Sequence[str] | None = None,
        expires_in: float = 3600,
        dpop_key: DPoPKey | None = None,
        prefix: str = "",
        **claims: Any,
    ) -> str:
        """An opaque access token (32 letters after ``prefix``, Better Auth's
        ``prefix.opaqueAccessToken``), recorded so the server's introspection
        answers for it as Better Auth does: ``active``, ``iss``, ``client_id``, ``azp``,
        ``sub`` and ``sid`` (none for a machine token: ``user_id=None`` and no
        ``sid``), ``exp``, ``iat``, ``scope``, ``token_type``; ``aud`` when
        ``audience`` is given, ``cnf`` with ``dpop_key``. Other keywords add or
        replace members (None removes one)."""
        now = int(time.time())
        token = prefix + "".join(secrets.choice(string.ascii_letters) for _ in range(32))
        answer: dict[str, Any] = {
            "iss": self.oauth_issuer,
            "client_id": client_id,
            "azp": client_id,
            "exp": int(now + expires_in),
            "iat": now,
            "token_type": "DPoP" if dpop_key is not None else "Bearer",
        }
        if user_id is not None:
            answer.update(sub=user_id, sid=_random_kid())
        if scope is not None:
            answer["scope"] = scope if isinstance(scope, str) else " ".join(scope)
        if audience is not None:
            answer["aud"] = audience if isinstance(audience, str) else list(audience)
        if dpop_key is not None:
            answer["cnf"] = {"jkt": dpop_key.jkt}
        _merge(answer, claims)
        with self._lock:
            self._opaque[token] = answer
        return token

    def revoke_access_token(self, token: str) -> None:
        """Revoke an opaque access token: introspection answers ``active: false``."""
        with self._lock:
            self._opaque.pop(token, None)

    def introspect(self, token: str) -> dict[str, Any]:
        """What introspection answers for ``token`` now (RFC 7662)."""
        with self._lock:
            answer = self._opaque.get(token)
        if answer is None or answer["exp"] <= time.time():
            return {"active": False}
        return {"active": True, **answer}

    # -- sessions --------------------------------------------------------------

    def session(
        self,
        user_id: str | None = None,
        *,
        email: str = "user@example.com",
        name: str = "Test User",
        role: str | None = "user",
        banned: bool = False,
        expires_in: float = 604800,
        session_fields: Mapping[str, Any] | None = None,
        **user_fields: Any,
    ) -> TestSession:
        """Record a new session, as sign-in does, and return it.

        The user row is (re)written from these arguments, shaped like Better
        Auth's (with the admin plugin: ``role`` and ``banned``; ``role=None``
        leaves both out). Extra keywords become user fields (None removes
        one); ``session_fields`` adds or removes session fields the same way.
        The session lasts ``expires_in`` seconds (Better Auth's default: 7
        days); a negative value makes one that has already expired.

        Example::

            session = issuer.session("u1", role="admin", image=None)
            session = issuer.session(expires_in=-1)       # get-session answers null
        """
        now = time.time()
        user_id = user_id or _random_kid()
        token = _random_kid()
        stamp = _iso(now)
        user: dict[str, Any] = {
            "name": name,
            "email": email,
            "emailVerified": False,
            "createdAt": stamp,
            "updatedAt": stamp,
        }
        if role is not None:
            user.update(role=role, banned=banned)
        user["id"] = user_id
        _merge(user, user_fields)
        expires_at = now + expires_in
        session: dict[str, Any] = {
            "expiresAt": _iso(expires_at),
            "token": token,
            "createdAt": stamp,
            "updatedAt": stamp,
            "ipAddress": "",
            "userAgent": "",
            "userId": user_id,
            "id": _random_kid(),
        }
        _merge(session, session_fields or {})
        with self._lock:
            self._users[user_id] = user
            self._sessions[token] = session
        return TestSession(
            token=token,
            signed_token=sign_session_token(token, self.secret),
            id=session["id"],
            user_id=user_id,
            expires_at=expires_at,
            session=dict(session),
            user=dict(user),
        )

    def get_session(self, token: str) -> dict[str, Any] | None:
        """What get-session answers for the raw ``token`` now: the session and user, or None.

        None once the session has expired or was revoked, as Better Auth does.
        """
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if _parse_iso(session["expiresAt"]) <= time.time():
                return None
            user = self._users.get(session["userId"])
            if user is None:
                return None
            return {"session": dict(session), "user": dict(user)}

    def revoke_session(self, session: TestSession | str) -> None:
        """Sign a session out (by :class:`TestSession` or raw token): get-session answers null."""
        token = session.token if isinstance(session, TestSession) else session
        with self._lock:
            self._sessions.pop(token, None)

    def revoke_user_sessions(self, user_id: str) -> int:
        """Sign out every session of a user, as Better Auth's revoke-user-sessions does.

        Returns:
            How many sessions were revoked.
        """
        with self._lock:
            tokens = [t for t, s in self._sessions.items() if s["userId"] == user_id]
            for token in tokens:
                del self._sessions[token]
        return len(tokens)

    def update_user(self, user_id: str, **fields: Any) -> None:
        """Change a user's row (a field given as None is removed); sessions see it at once.

        Raises:
            KeyError: no session of this issuer has that user.
        """
        with self._lock:
            user = self._users[user_id]
            _merge(user, fields)
            user["updatedAt"] = _iso(time.time())

    def ban(self, user_id: str, *, reason: str = "No reason", revoke_sessions: bool = True) -> None:
        """Ban a user as the admin plugin's ban-user does.

        Better Auth marks the user banned and deletes their sessions, so
        get-session answers null for them (401 at the API). With
        ``revoke_sessions=False`` the sessions stay and get-session answers
        them with ``"banned": true``: the user an API must refuse with 403.
        """
        self.update_user(user_id, banned=True, banReason=reason, banExpires=None)
        if revoke_sessions:
            self.revoke_user_sessions(user_id)

    def session_data_cookie(
        self,
        session: TestSession,
        *,
        max_age: float = 300,
        chunk_size: int = 3800,
        prefix: str = DEFAULT_COOKIE_PREFIX,
        secure: bool = False,
        key: SigningKey | None = None,
        issued_at: float | None = None,
        header: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> dict[str, str]:
        """The ``session_data`` cookie cache as Better Auth 1.7 mints it with the jwt plugin's keys.

        That is ``session.cookieCache: {enabled: true, strategy: "jwt"}`` with
        ``jwt({sessionCookieCache: true})``: a JWT signed by the issuer's current
        key with header ``{"alg", "kid", "typ": "better-auth.session-cache+jwt"}``
        and claims ``session``, ``user``, ``updatedAt`` (ms), ``version``, ``sid``
        (the session token), ``iat``, ``exp`` (``iat + max_age``), ``iss`` (the
        base URL), ``aud`` (``"better-auth:session-cache"``) and ``sub`` (the
        user id). The session and user are the issuer's current ones (the
        snapshot in ``session`` once it was revoked). A value longer than
        ``chunk_size`` is split into cookies ``.0``, ``.1``, ... as Better Auth
        does past about 4 KB.

        Args:
            session: the session the cookie caches.
            max_age: the cookie cache's lifetime (``cookieCache.maxAge``).
            chunk_size: the longest value one cookie holds.
            prefix: Better Auth's ``advanced.cookiePrefix``.
            secure: name the cookies ``__Secure-...``, as on https.
            key: sign with this key instead of the issuer's current one.
            issued_at: the ``iat`` (Unix seconds), to mint one already expired.
            header: extra or replaced header members (``{"typ": "JWT"}``).
            **claims: extra or replaced claims (``sid="other"``); None removes one.

        Returns:
            ``{cookie name: value}``, in chunk order.

        Example::

            client.cookies.update(issuer.session_data_cookie(session))
            stale = issuer.session_data_cookie(session, issued_at=time.time() - 600)
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        now = int(time.time() if issued_at is None else issued_at)
        current = self.get_session(session.token) or session.answer()
        payload: dict[str, Any] = {
            "session": current["session"],
            "user": current["user"],
            "updatedAt": int(now * 1000),
            "version": "1",
            "sid": session.token,
            "iat": now,
            "exp": int(now + max_age),
            "iss": self.base_url,
            "aud": SESSION_COOKIE_AUDIENCE,
            "sub": current["user"]["id"],
        }
        _merge(payload, claims)
        full_header: dict[str, Any] = {"typ": SESSION_COOKIE_TYPE}
        full_header.update(header or {})
        value = (key or self.current_key).sign(payload, full_header)
        name = self._cookie_names(prefix, secure).session_data[0]
        if len(value) <= chunk_size:
            return {name: value}
        count = math.ceil(len(value) / chunk_size)
        return {f"{name}.{i}": value[i * chunk_size : (i + 1) * chunk_size] for i in range(count)}

    def session_cookies(
        self,
        session: TestSession,
        *,
        secret: str | None = None,
        prefix: str = DEFAULT_COOKIE_PREFIX,
        secure: bool = False,
        session_data: bool = True,
        max_age: float = 300,
        chunk_size: int = 3800,
    ) -> dict[str, str]:
        """The cookies a browser holds after signing in: ``session_token``, then ``session_data``.

        Values are as a ``Set-Cookie`` header carries them (and a browser sends
        them back): the session token cookie is
        ``<token>.<base64 HMAC-SHA256(secret, token)>`` percent-encoded as Better
        Auth writes it (``=`` as ``%3D``).

        Args:
            session: the session.
            secret: sign with this secret instead of the issuer's (a forged cookie).
            prefix: Better Auth's ``advanced.cookiePrefix``.
            secure: name the cookies ``__Secure-...``, as on https.
            session_data: include the cookie cache (see :meth:`session_data_cookie`).
            max_age: the cookie cache's lifetime.
            chunk_size: the longest value one cookie holds.

        Example::

            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                cookies=issuer.session_cookies(session),
            ) as client:
                assert (await client.get("/me")).status_code == 200
        """
        name = self._cookie_names(prefix, secure).session_token[0]
        signed = sign_session_token(session.token, self.secret if secret is None else secret)
        cookies = {name: encode_cookie_value(signed)}
        if session_data:
            cookies.update(
                self.session_data_cookie(
                    session, max_age=max_age, chunk_size=chunk_size, prefix=prefix, secure=secure
                )
            )
        return cookies

    @staticmethod
    def _cookie_names(prefix: str, secure: bool) -> CookieNames:
        names = CookieNames.for_prefix(prefix)
        if secure:
            return names
        # The bare names come last in CookieNames' order of preference.
        return CookieNames(prefix, names.session_token[-1:], names.session_data[-1:])


def _merge(target: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Set each field of ``changes`` in ``target``; a None value removes the field."""
    for name, value in changes.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value


def _parse_iso(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


_DISCOVERY_PATH = "/.well-known/oauth-authorization-server"
_INTROSPECTION_PATH = "/oauth2/introspect"


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` of ``Authorization: Basic``, form-decoded."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        pair = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, colon, secret = pair.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if colon else None


class _QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that stops at once and hangs up on its open connections.

    ``serve_forever`` notices a stop request only between polls; this loop sleeps in
    ``select`` until a connection arrives or :meth:`wake` is called, so stopping costs
    no poll interval and an idle server costs no CPU.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        # Set before binding: a failed bind calls server_close, which closes the pair.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._stopped = False
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def serve_until_stopped(self) -> None:
        """Accept and serve connections until :meth:`wake` is called."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if self._stopped:
                    return
                if any(key.fileobj is self for key, _ in ready):
                    self._accept()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        if not self.verify_request(request, client_address):
            self.shutdown_request(request)
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def wake(self) -> None:
        """Make :meth:`serve_until_stopped` return (from any thread)."""
        self._stopped = True
        self._wake_writer.send(b"\0")

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        """End every open connection: keep-alive clients of a stopped server get no answers."""
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already gone
                    connection.shutdown(socket.SHUT_RDWR)

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer (size caps, timeouts) are expected here,
        # and so are connections cut by a stop.
        pass


class JWKSServer:
    """A real HTTP server on 127.0.0.1 serving an issuer's key set and its sessions.

    ``GET /api/auth/jwks`` answers the key set; ``GET /api/auth/get-session``
    answers ``{"session": ..., "user": ...}`` or ``null`` as Better Auth does,
    for the session named by ``Authorization: Bearer`` (raw or signed session
    token, as with the bearer plugin) or else by the ``session_token`` cookie
    (signed with the issuer's secret; the bare and ``__Secure-`` names).

    As Better Auth's OAuth provider, it answers the authorization server
    metadata at ``GET /api/auth/.well-known/oauth-authorization-server`` (RFC
    8414) and token introspection at ``POST /api/auth/oauth2/introspect`` (RFC
    7662, for the clients of :meth:`Issuer.register_client`, with
    ``client_secret_basic``).

    Counts requests and can misbehave on demand, so tests can prove caching
    and failure handling. Use as a context manager, or call :meth:`start` and
    :meth:`stop`.

    Attributes:
        url: the base URL (pass it as ``base_url``); ``issuer.base_url`` is set to it.
        jwks_url: the key set's URL.
        session_url: get-session's URL.
        requests: how many requests were served (any path).
        session_requests: how many of them were get-session requests.
        session_request_headers: the headers of the latest get-session requests
            (names in lower case; the last 1000), to check what was sent.
        status, delay, body, headers: set to make the next key set answers
            misbehave (``delay`` applies to every path but get-session).
        session_status, session_delay, session_body, session_headers: the same
            for get-session, e.g. ``session_status = 503`` with
            ``session_headers = {"Retry-After": "2"}``.
        cookie_prefix: Better Auth's ``advanced.cookiePrefix`` for the cookie it reads.
        discovery_url, introspection_url: the OAuth provider's metadata and
            introspection endpoint.
        discovery_requests, introspection_requests: how many requests each got.
        introspection_status: with ``introspection_delay``, ``introspection_body``
            and ``introspection_headers``, make introspection misbehave, as for
            get-session.

    Example::

        with JWKSServer(issuer) as server:
            session = issuer.session()
            ...
            assert server.session_requests == 1
    """

    def __init__(
        self,
        issuer: Issuer | None = None,
        *,
        path: str = DEFAULT_JWKS_PATH,
        session_path: str = DEFAULT_SESSION_PATH,
        cookie_prefix: str = DEFAULT_COOKIE_PREFIX,
        port: int = 0,
    ) -> None:
        self.issuer = issuer or Issuer()
        self.path = path
        self.session_path = session_path
        self.cookie_prefix = cookie_prefix
        self.port = port
        self.requests = 0
        self.request_paths: list[str] = []
        self.session_requests = 0
        self.session_request_headers: collections.deque[dict[str, str]] = collections.deque(
            maxlen=1000
        )
        self.status = 200
        self.delay = 0.0
        self.body: bytes | Callable[[], Iterator[bytes]] | None = None
        self.headers: dict[str, str] = {}
        self.session_status = 200
        self.session_delay = 0.0
        self.session_body: bytes | None = None
        self.session_headers: dict[str, str] = {}
        self.discovery_requests = 0
        self.introspection_requests = 0
        self.introspection_status = 200
        self.introspection_delay = 0.0
        self.introspection_body: bytes | None = None
        self.introspection_headers: dict[str, str] = {}
        self._stopping = threading.Event()
        self._counter = threading.Lock()
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.jwks_url = ""
        self.session_url = ""
        self.discovery_url = ""
        self.introspection_url = ""

    def reset(self) -> None:
        """Back to well-behaved, with the request counts at zero."""
        with self._counter:
            self.requests = 0
            self.request_paths.clear()
            self.session_requests = 0
            self.session_request_headers.clear()
            self.discovery_requests = self.introspection_requests = 0
        self.status, self.delay, self.body, self.headers = 200, 0.0, None, {}
        self.session_status, self.session_delay = 200, 0.0
        self.session_body, self.session_headers = None, {}
        self.introspection_status, self.introspection_delay = 200, 0.0
        self.introspection_body, self.introspection_headers = None, {}

    def start(self) -> JWKSServer:
        """Start serving on 127.0.0.1, on ``port`` (by default a free port)."""
        server = _QuietServer(("127.0.0.1", self.port), self._handler())
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.jwks_url = self.url + self.path
        self.session_url = self.url + self.session_path
        if self.issuer.base_url == "http://127.0.0.1":
            self.issuer.base_url = self.url
        self._stopping.clear()
        api = self.url + DEFAULT_BASE_PATH
        self.discovery_url = api + _DISCOVERY_PATH
        self.introspection_url = api + _INTROSPECTION_PATH
        self._thread = threading.Thread(
            target=server.serve_until_stopped, name="JWKSServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving at once, close open connections and release the port.

        A client holding a keep-alive connection gets no more answers: its next
        request fails as it would against a server that went away.
        """
        self._stopping.set()
        if self._server is not None:
            self._server.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._server is not None:
            self._server.hang_up()
            self._server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> JWKSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def session_token_of(self, authorization: str | None, cookies: list[str]) -> str | None:
        """The raw token of the session a get-session request names, found as Better Auth does.

        The bearer plugin comes first: a value with a dot must be a signed token
        that verifies with the issuer's secret (percent-encoded or not), one
        without is taken as the raw token. Otherwise the ``session_token``
        cookie, which must verify. None when the request names no session.
        """
        if authorization and authorization[:7].lower() == "bearer ":
            value = authorization[7:].strip()
            if value and "." not in value:
                return value
            try:
                return split_signed_token(unquote(value), secret=self.issuer.secret)[0]
            except InvalidSessionError:
                pass
        found = parse_cookies(cookies)
        for secure in ("__Secure-", ""):
            cookie = found.get(f"{secure}{self.cookie_prefix}.session_token")
            if cookie:
                try:
                    return split_signed_token(cookie, secret=self.issuer.secret)[0]
                except InvalidSessionError:
                    return None
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY a kept-alive
            # connection waits for the client's delayed ACK (about 40 ms) between them.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                with owner._counter:
                    owner.requests += 1
                    owner.request_paths.append(self.path)
                    if path == DEFAULT_BASE_PATH + _INTROSPECTION_PATH:
                        owner.introspection_requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(min(length, 1 << 16)).decode("latin-1"))
                if path != DEFAULT_BASE_PATH + _INTROSPECTION_PATH:
                    self._send(404, b'{"error":"not found"}', {})
                    return
                if owner.introspection_delay:
                    owner._stopping.wait(owner.introspection_delay)
                extra = {"Cache-Control": "no-store", **owner.introspection_headers}
                if owner.introspection_status != 200 or owner.introspection_body is not None:
                    body = owner.introspection_body or b'{"error":"server_error"}'
                    self._send(owner.introspection_status, body, extra)
                    return
                pair = _basic_credentials(self.headers.get("Authorization"))
                issuer = owner.issuer
                if pair is None or issuer.clients.get(pair[0]) != pair[1]:
                    body = b'{"error":"invalid_client","error_description":"invalid client"}'
                    self._send(401, body, extra)
                    return
                token = (form.get("token") or [""])[0]
                hint = (form.get("token_type_hint") or ["access_token"])[0]
                answer = issuer.introspect(token) if hint == "access_token" else None
                self._send(200, json.dumps(answer or {"active": False}).encode(), extra)

            def do_GET(self) -> None:
                if urlsplit(self.path).path == DEFAULT_BASE_PATH + _DISCOVERY_PATH:
                    with owner._counter:
                        owner.requests += 1
                        owner.discovery_requests += 1
                    api = owner.issuer.oauth_issuer
                    document = {
                        "issuer": api,
                        "jwks_uri": owner.url + owner.path,
                        "introspection_endpoint": api + _INTROSPECTION_PATH,
                        "token_endpoint": api + "/oauth2/token",
                        "authorization_endpoint": api + "/oauth2/authorize",
                    }
                    headers = {"Cache-Control": "public, max-age=15"}
                    self._send(200, json.dumps(document).encode(), headers)
                    return
                is_session = urlsplit(self.path).path == owner.session_path
                with owner._counter:
                    owner.requests += 1
                    owner.request_paths.append(self.path)
                    if is_session:
                        owner.session_requests += 1
                        owner.session_request_headers.append(
                            {name.lower(): value for name, value in self.headers.items()}
                        )
                if is_session:
                    self._get_session()
                    return
                if owner.delay:
                    owner._stopping.wait(owner.delay)
                if self.path != owner.path:
                    self._send(404, b'{"error":"not found"}')
                    return
                body = owner.body
                if callable(body):
                    self._stream(body())
                    return
                if body is None:
                    body = json.dumps(owner.issuer.jwks()).encode("utf-8")
                self._send(owner.status, body)

            def _get_session(self) -> None:
                if owner.session_delay:
                    owner._stopping.wait(owner.session_delay)
                status, body = owner.session_status, owner.session_body
                if body is None:
                    if status == 200:
                        token = owner.session_token_of(
                            self.headers.get("Authorization"), self.headers.get_all("Cookie", [])
                        )
                        answer = None if token is None else owner.issuer.get_session(token)
                        body = json.dumps(answer).encode("utf-8")
                    else:
                        body = b'{"message":"the test server was told to fail"}'
                extra = {"Cache-Control": "no-store", **owner.session_headers}
                self._send(status, body, extra)

            def _send(
                self, status: int, body: bytes, headers: Mapping[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (owner.headers if headers is None else headers).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, chunks: Iterator[bytes]) -> None:
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for chunk in chunks:
                        if owner._stopping.is_set():
                            break
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        return Handler


def jwks_transport(issuer: Issuer, *, path: str = DEFAULT_JWKS_PATH) -> httpx.MockTransport:
    """An httpx transport serving the issuer's key set: ``httpx.AsyncClient(transport=...)``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path != path:
            return httpx.Response(404, json={"error": "not found"})
        return httpx.Response(200, json=issuer.jwks())

    return httpx.MockTransport(handle)
