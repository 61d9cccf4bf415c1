"""Test helpers for apps that use starlette-betterauth: keys, tokens and a real JWKS server.

Nothing here talks to a real Better Auth server: :class:`Issuer` mints tokens
shaped exactly like Better Auth's (EdDSA by default, no ``typ``, the user row as
claims, ``iss`` and ``aud`` equal to the base URL) and :class:`JWKSServer`
serves its key set from a real HTTP server on 127.0.0.1::

    from starlette_betterauth.testing import Issuer, JWKSServer

    issuer = Issuer()
    with JWKSServer(issuer) as server:
        app.add_middleware(BetterAuthMiddleware, base_url=server.url)
        token = issuer.token(role="admin")

Also available as pytest fixtures (``betterauth_issuer``, ``betterauth_jwks_server``)
once the package is installed.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from ._settings import DEFAULT_JWKS_PATH

__all__ = [
    "ALGORITHMS",
    "Issuer",
    "JWKSServer",
    "SigningKey",
    "b64url",
    "jwks_transport",
]

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
    # Better Auth's kids are random 32-character alphanumeric ids.
    return "".join(secrets.choice(_KID_ALPHABET) for _ in range(32))


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


class Issuer:
    """Mints Better Auth-shaped JWTs and holds the key set that verifies them.

    Args:
        base_url: the Better Auth baseURL the tokens name as ``iss`` and ``aud``.
            :class:`JWKSServer` sets it to its own URL when left as None.
        alg: the signing algorithm of the first key.
    """

    def __init__(self, base_url: str | None = None, *, alg: str = "EdDSA") -> None:
        self.base_url = base_url or "http://127.0.0.1"
        self.keys: list[SigningKey] = [SigningKey(alg)]
        self._lock = threading.Lock()

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


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer (size caps, timeouts) are expected here.
        pass


class JWKSServer:
    """A real HTTP server on 127.0.0.1 serving an issuer's key set at ``/api/auth/jwks``.

    Counts requests and can misbehave on demand (status, delay, body, headers),
    so tests can prove caching and failure handling. Use as a context manager,
    or call :meth:`start` and :meth:`stop`.

    Attributes:
        url: the base URL (pass it as ``base_url``); ``issuer.base_url`` is set to it.
        jwks_url: the key set's URL.
        requests: how many requests were served (any path).
        status, delay, body, headers: set to make the next answers misbehave.
    """

    def __init__(
        self, issuer: Issuer | None = None, *, path: str = DEFAULT_JWKS_PATH, port: int = 0
    ) -> None:
        self.issuer = issuer or Issuer()
        self.path = path
        self.port = port
        self.requests = 0
        self.request_paths: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.body: bytes | Callable[[], Iterator[bytes]] | None = None
        self.headers: dict[str, str] = {}
        self._stopping = threading.Event()
        self._counter = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.jwks_url = ""

    def reset(self) -> None:
        """Back to well-behaved, with the request count at zero."""
        with self._counter:
            self.requests = 0
            self.request_paths.clear()
        self.status, self.delay, self.body, self.headers = 200, 0.0, None, {}

    def start(self) -> JWKSServer:
        """Start serving on 127.0.0.1, on ``port`` (by default a free port)."""
        server = _QuietServer(("127.0.0.1", self.port), self._handler())
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.jwks_url = self.url + self.path
        if self.issuer.base_url == "http://127.0.0.1":
            self.issuer.base_url = self.url
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="JWKSServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> JWKSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with owner._counter:
                    owner.requests += 1
                    owner.request_paths.append(self.path)
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

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in owner.headers.items():
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
