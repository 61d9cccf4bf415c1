"""DPoP (RFC 9449): checking the proof that comes with a sender-constrained access token.

A DPoP-bound token carries ``cnf.jkt``, the thumbprint of the client's key; each
request sends it as ``Authorization: DPoP <token>`` with a ``DPoP`` header
holding a fresh proof JWT signed by that key. :class:`DPoPVerifier` checks a
proof against the request as the app sees it: ``typ`` ``dpop+jwt``, an
asymmetric ``alg``, the public ``jwk`` of its header (never private or
symmetric material), the signature, ``htm`` and ``htu`` (scheme and host from
the request, or the configured public origin behind a proxy), ``iat`` within
``max_age`` (and not ahead of the clock beyond the leeway), ``ath`` the hash of
the token, the key's thumbprint ``cnf.jkt``, and ``jti`` never seen before
within the proof's lifetime (a bounded cache). Nothing here does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.datastructures import URL
from starlette.types import Scope

from ._claims import MAX_NUMERIC_DATE, short_repr
from ._compact import parse_token
from ._keys import SUPPORTED_ALGORITHMS, VerificationKey, parse_jwk
from ._settings import check_algorithms, check_http_url, check_leeway
from .errors import ConfigurationError, InvalidDPoPProofError, MalformedTokenError, OpaqueTokenError

__all__ = [
    "DEFAULT_DPOP_MAX_AGE",
    "DPOP_PROOF_TYPE",
    "DPoPVerifier",
    "ReplayCache",
    "access_token_hash",
    "jwk_thumbprint",
    "normalize_htu",
]

#: The ``typ`` of a DPoP proof's header.
DPOP_PROOF_TYPE = "dpop+jwt"
#: Seconds a proof is accepted after its ``iat`` (Better Auth's provider uses 300 too).
DEFAULT_DPOP_MAX_AGE = 300.0
#: Longest ``jti`` accepted (Better Auth's limit).
MAX_JTI_LENGTH = 512

# RFC 7638: the members of each key type that a thumbprint covers, in order.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url: what ``cnf.jkt`` holds.

    Raises:
        ValueError: the key type is not EC, OKP or RSA, or a required member is
            missing or not a string.
    """
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if type(kty) is str else None
    if members is None:
        raise ValueError(f"no thumbprint for key type {short_repr(jwk.get('kty'))}")
    required = {}
    for name in members:
        value = jwk.get(name)
        if type(value) is not str:
            raise ValueError(f"the JWK's {name} is missing or not a string")
        required[name] = value
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(token: str) -> str:
    """The ``ath`` of a proof for ``token``: base64url of its SHA-256 (RFC 9449 section 4.2)."""
    return _b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def normalize_htu(url: str) -> str:
    """``scheme://host[:port]/path`` of an http(s) URL: lower-case scheme and host, the
    default port dropped, the path percent-decoded (as ASGI servers decode a request's
    path), query and fragment ignored.

    Raises:
        ValueError: not an absolute http(s) URL.
    """
    parts = urlsplit(url)
    return _origin(parts.scheme, parts.hostname, parts.port) + (unquote(parts.path) or "/")


def _origin(scheme: str, host: str | None, port: int | None) -> str:
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("not an absolute http(s) URL")
    host = host.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}"


class ReplayCache:
    """Proof ids seen recently, bounded: a proof is accepted once within its lifetime.

    Each entry lives until its proof expires. When the cache is full the oldest
    entry is dropped, and from then on no proof issued at or before that
    entry's ``iat`` is accepted (it could be the replay of a forgotten one): under
    a load beyond ``max_entries`` proofs per ``max_age`` the accepted window
    narrows instead of letting replays through.
    """

    def __init__(self, max_entries: int) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError("dpop_replay_cache_size must be a positive integer")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._floor = -1.0  # proofs issued at or before this may replay evicted ones

    def __len__(self) -> int:
        return len(self._entries)

    def reserve(self, key: bytes, iat: float, expires: float) -> str | None:
        """Record ``key``; None when accepted, else why the proof is refused."""
        if iat <= self._floor:
            return (
                "the DPoP proof is older than the proofs this API can still check for "
                "replay (too many proofs lately): send a fresh one"
            )
        entries = self._entries
        now = time.time()
        while entries:
            first = next(iter(entries.values()))
            if first[0] > now:
                break
            entries.popitem(last=False)
        seen = entries.get(key)
        if seen is not None and seen[0] > now:
            return "the DPoP proof was used before (its jti is replayed): send a fresh proof"
        if len(entries) >= self.max_entries:
            _, (_, evicted_iat) = entries.popitem(last=False)
            self._floor = max(self._floor, evicted_iat)
        entries[key] = (expires, iat)
        return None


class DPoPVerifier:
    """Checks DPoP proofs for one API (see the module docstring).

    Args:
        algorithms: proof algorithms accepted (asymmetric only; default all of
            EdDSA, ES256, ES512, PS256, RS256).
        max_age: seconds a proof is accepted after its ``iat``.
        leeway: seconds a proof's ``iat`` may be ahead of this machine's clock.
        replay_cache_size: proof ids remembered at most.
        public_origin: the ``scheme://host[:port]`` clients reach this API at,
            when a proxy in front of it changes the scheme or host the app sees;
            by default the request's own (its scheme and ``Host`` header).

    Raises:
        ConfigurationError: a bad setting, named.
    """

    def __init__(
        self,
        *,
        algorithms: Iterable[str] | None = None,
        max_age: float = DEFAULT_DPOP_MAX_AGE,
        leeway: float = 10.0,
        replay_cache_size: int = 100_000,
        public_origin: str | None = None,
    ) -> None:
        accepted = check_algorithms(algorithms) if algorithms is not None else SUPPORTED_ALGORITHMS
        self.algorithms = accepted
        #: The algorithms a ``WWW-Authenticate: DPoP algs="..."`` challenge names.
        self.algs: tuple[str, ...] = tuple(sorted(accepted))
        if isinstance(max_age, bool) or not isinstance(max_age, int | float) or not max_age > 0:
            raise ConfigurationError("dpop_max_age must be a positive number of seconds")
        if not max_age <= 3600:
            raise ConfigurationError("dpop_max_age must be at most 3600 seconds")
        self.max_age = float(max_age)
        self.leeway = check_leeway(leeway)
        self.replays = ReplayCache(replay_cache_size)
        self.public_origin: str | None = None
        if public_origin is not None:
            check_http_url("public_origin", public_origin)
            parts = urlsplit(public_origin)
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ConfigurationError(
                    f"public_origin is scheme://host[:port] only, got {public_origin!r}"
                )
            self.public_origin = normalize_htu(public_origin).removesuffix("/")
        # Parsed proof keys by (thumbprint, alg): a client signs every proof with one key.
        self._keys: dict[tuple[str, str], VerificationKey] = {}

    def request_url(self, scope: Scope) -> str:
        """The request's URL as the proof's ``htu`` must name it (normalized).

        The scheme and host are the public origin's when one is configured, else
        the request's own (its scheme, ``Host`` header, else the server address),
        as Starlette's ``request.url`` has them; ``ws``/``wss`` count as
        ``http``/``https``. The path is the request's decoded path.
        """
        path = scope.get("path") or "/"
        if self.public_origin is not None:
            return self.public_origin + path
        scheme = scope.get("scheme", "http")
        scheme = _WEBSOCKET_SCHEMES.get(scheme, scheme)
        try:
            parts = urlsplit(str(URL(scope={**scope, "scheme": scheme, "path": "/"})))
            return _origin(parts.scheme, parts.hostname, parts.port) + path
        except (ValueError, KeyError):  # no usable host: no proof can name this request
            return f"{scheme}://(unknown host){path}"

    def verify(
        self, proof: str | None, *, method: str, url: str, token: str, jkt: str
    ) -> Mapping[str, Any]:
        """Check ``proof`` for a request to ``url`` with ``method`` carrying ``token``,
        bound to the key whose thumbprint is ``jkt``; return the proof's claims.

        ``url`` is normalized (:meth:`request_url`).

        Raises:
            InvalidDPoPProofError: the proof is missing or refused; the message says why.
        """
        if proof is None:
            raise InvalidDPoPProofError(
                "the request has no DPoP header: a DPoP-bound token needs a proof (RFC 9449)"
            )
        try:
            parsed = parse_token(proof)
        except OpaqueTokenError as exc:
            raise InvalidDPoPProofError("the DPoP proof is not a JWT") from exc
        except MalformedTokenError as exc:
            raise InvalidDPoPProofError(f"the DPoP proof is malformed: {exc.message}") from exc
        header, claims = parsed.header, parsed.claims
        typ = header.get("typ")
        if type(typ) is not str or typ.lower() != DPOP_PROOF_TYPE:
            raise InvalidDPoPProofError(
                f"the DPoP proof's typ is {short_repr(typ)}, not {DPOP_PROOF_TYPE!r}"
            )
        alg = header.get("alg")
        if type(alg) is not str or alg not in self.algorithms:
            raise InvalidDPoPProofError(
                f"the DPoP proof's alg {short_repr(alg)} is not accepted (asymmetric only: "
                f"{', '.join(self.algs)})"
            )
        if "crit" in header:
            raise InvalidDPoPProofError("the DPoP proof has a crit header this API cannot honour")
        key, thumbprint = self._key(header.get("jwk"), alg)
        if not key.verify(alg, parsed.signing_input, parsed.signature):
            raise InvalidDPoPProofError("the DPoP proof's signature does not verify with its jwk")
        htm, htu, jti = claims.get("htm"), claims.get("htu"), claims.get("jti")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise InvalidDPoPProofError("the DPoP proof's iat is missing or not a NumericDate")
        if type(htm) is not str or type(htu) is not str or type(jti) is not str or not jti:
            raise InvalidDPoPProofError("the DPoP proof needs htm, htu and jti strings and an iat")
        if not 0 <= iat <= MAX_NUMERIC_DATE:  # also false for NaN
            raise InvalidDPoPProofError("the DPoP proof's iat is missing or not a NumericDate")
        if len(jti) > MAX_JTI_LENGTH:
            raise InvalidDPoPProofError("the DPoP proof's jti is too long")
        if htm.upper() != method.upper():
            raise InvalidDPoPProofError(
                f"the DPoP proof is for {short_repr(htm)} requests, not {method.upper()}"
            )
        try:
            named = normalize_htu(htu)
        except ValueError as exc:
            raise InvalidDPoPProofError("the DPoP proof's htu is not an http(s) URL") from exc
        if named != url:
            raise InvalidDPoPProofError(
                f"the DPoP proof's htu {short_repr(named, 120)} is not this request's URL "
                f"{short_repr(url, 120)} (behind a proxy, set public_origin)"
            )
        now = time.time()
        if iat > now + self.leeway:
            raise InvalidDPoPProofError(
                "the DPoP proof was issued in the future (check the client's clock)"
            )
        if now - iat > self.max_age:
            raise InvalidDPoPProofError(
                f"the DPoP proof is older than {self.max_age:g} s: send a fresh one"
            )
        ath = claims.get("ath")
        if ath != access_token_hash(token):
            raise InvalidDPoPProofError(
                "the DPoP proof's ath is not the hash of this access token"
                if ath is not None
                else "the DPoP proof has no ath (the hash of the access token)"
            )
        if thumbprint != jkt:
            raise InvalidDPoPProofError(
                "the DPoP proof is signed by another key than the one the token is bound to "
                "(cnf.jkt)"
            )
        replay_key = hashlib.sha256(f"{thumbprint}\0{jti}".encode()).digest()
        refused = self.replays.reserve(replay_key, float(iat), iat + self.max_age + self.leeway)
        if refused is not None:
            raise InvalidDPoPProofError(refused)
        return claims

    def _key(self, jwk: object, alg: str) -> tuple[VerificationKey, str]:
        if not isinstance(jwk, dict):
            raise InvalidDPoPProofError("the DPoP proof's header has no jwk (its public key)")
        if jwk.get("kty") == "oct" or _PRIVATE_MEMBERS & jwk.keys():
            raise InvalidDPoPProofError(
                "the DPoP proof's jwk holds private or symmetric key material"
            )
        try:
            thumbprint = jwk_thumbprint(jwk)
        except ValueError as exc:
            raise InvalidDPoPProofError(f"the DPoP proof's jwk is not usable: {exc}") from exc
        key = self._keys.get((thumbprint, alg))
        if key is None:
            try:
                # A proof's jwk rarely names its alg: the proof's header does (RFC 9449).
                named = {"alg": alg, **jwk, "kid": thumbprint}
                key = parse_jwk(named, frozenset({alg}))
            except Exception as exc:  # KeyRejected, or members of shapes no JWK has
                raise InvalidDPoPProofError(f"the DPoP proof's jwk is not usable: {exc}") from exc
            if len(self._keys) >= 1024:
                self._keys.clear()
            self._keys[thumbprint, alg] = key
        return key, thumbprint
