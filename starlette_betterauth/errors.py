"""The exception tree of starlette-betterauth.

Every error the package raises derives from :class:`BetterAuthError`; no raw
``jwt.*`` or ``httpx.*`` exception escapes the public API::

    BetterAuthError
    ├── ConfigurationError            the package was configured wrongly (raised at construction)
    ├── AuthenticationError           401: the request carries no acceptable credentials
    │   ├── MissingTokenError             no bearer token was presented
    │   ├── InvalidRequestError           the Authorization header itself is malformed
    │   └── InvalidTokenError             a token was presented and refused
    │       ├── MalformedTokenError           not a well-formed compact JWS
    │       │   └── OpaqueTokenError              a Better Auth session token, not a JWT
    │       ├── UnsupportedAlgorithmError     alg not accepted, or not the key's algorithm
    │       ├── UnknownKeyError               no key in the key set has the token's kid
    │       ├── InvalidSignatureError         the signature does not verify
    │       ├── InvalidClaimError             a claim is missing or of the wrong type
    │       │   ├── ExpiredTokenError             exp is in the past
    │       │   ├── ImmatureTokenError            nbf or iat is in the future
    │       │   ├── InvalidIssuerError            iss is not the expected issuer
    │       │   └── InvalidAudienceError          aud names no accepted audience
    │       ├── InvalidSessionError           the session is unknown, expired or signed out
    │       ├── TokenTypeError                another kind of token (an ID token, a session JWT)
    │       ├── InactiveTokenError            introspection says the token is not active
    │       ├── DPoPBindingError              a DPoP-bound token sent as Bearer, or the reverse
    │       ├── InvalidDPoPProofError         the DPoP proof is missing, malformed or does not fit
    │       └── (subclass it for your own rules)
    ├── AuthorizationError            403: authenticated, but not allowed
    │   ├── InsufficientRoleError         the user lacks a required role or scope
    │   │   └── InsufficientScopeError        the token lacks a required OAuth scope
    │   ├── BannedUserError               the token says the user is banned
    │   └── CrossSiteRequestError         a cookie-authenticated request from an untrusted origin
    └── ServiceUnavailableError       503: no answer can be had now; retry later
        ├── KeySetError                   no usable key set can be had
        │   ├── KeySetFetchError              the key server was unreachable, slow, or failed
        │   └── KeySetInvalidError            the key server answered no usable key set
        ├── SessionServiceError           get-session was unreachable, slow, or answered badly
        └── IntrospectionError            token introspection was unreachable, slow, or failed

Each authentication and authorization error carries the HTTP ``status_code`` and
the RFC 6750 ``error`` code (``None`` when no token was presented) that a
response should use; a :class:`ServiceUnavailableError` also carries
``retry_after``, the seconds to wait when the server said so (``Retry-After``).
Messages never contain the token.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "BannedUserError",
    "BetterAuthError",
    "ConfigurationError",
    "CrossSiteRequestError",
    "DPoPBindingError",
    "ExpiredTokenError",
    "ImmatureTokenError",
    "InactiveTokenError",
    "InsufficientRoleError",
    "InsufficientScopeError",
    "IntrospectionError",
    "InvalidAudienceError",
    "InvalidClaimError",
    "InvalidDPoPProofError",
    "InvalidIssuerError",
    "InvalidRequestError",
    "InvalidSessionError",
    "InvalidSignatureError",
    "InvalidTokenError",
    "KeySetError",
    "KeySetFetchError",
    "KeySetInvalidError",
    "MalformedTokenError",
    "MissingTokenError",
    "OpaqueTokenError",
    "ServiceUnavailableError",
    "SessionServiceError",
    "TokenTypeError",
    "UnknownKeyError",
    "UnsupportedAlgorithmError",
]


class BetterAuthError(Exception):
    """Root of every exception raised by starlette-betterauth."""

    #: HTTP status a response to this error should carry.
    status_code: int = 500
    #: RFC 6750 ``error`` code for the ``WWW-Authenticate`` header, if any.
    error_code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(BetterAuthError, ValueError):
    """The package was configured wrongly; raised at construction, never per request."""


class AuthenticationError(BetterAuthError):
    """The request carries no acceptable credentials (HTTP 401)."""

    status_code = 401
    error_code: str | None = "invalid_token"


class MissingTokenError(AuthenticationError):
    """No bearer token was presented."""

    error_code = None


class InvalidRequestError(AuthenticationError):
    """The Authorization header is malformed: wrong scheme, repeated, or empty."""

    error_code = "invalid_request"


class InvalidTokenError(AuthenticationError):
    """A token was presented and refused."""


class MalformedTokenError(InvalidTokenError):
    """The token is not a well-formed compact JWS (segments, base64url, JSON, size)."""


class OpaqueTokenError(MalformedTokenError):
    """The token is a Better Auth opaque session token, which only the server can check."""


class UnsupportedAlgorithmError(InvalidTokenError):
    """The token's ``alg`` is not accepted, or is not the algorithm of its key."""


class UnknownKeyError(InvalidTokenError):
    """No key in the key set has the token's ``kid``, even after a refresh."""


class InvalidSignatureError(InvalidTokenError):
    """The signature does not verify with the key the token names."""


class InvalidClaimError(InvalidTokenError):
    """A required claim is missing, or a claim has the wrong type or value."""


class ExpiredTokenError(InvalidClaimError):
    """The token's ``exp`` is in the past."""


class ImmatureTokenError(InvalidClaimError):
    """The token's ``nbf`` or ``iat`` is in the future."""


class InvalidIssuerError(InvalidClaimError):
    """The token's ``iss`` is not the expected issuer."""


class InvalidAudienceError(InvalidClaimError):
    """The token's ``aud`` names none of the accepted audiences."""


class InvalidSessionError(InvalidTokenError):
    """The session is unknown, expired or signed out: Better Auth's get-session answered null."""


class TokenTypeError(InvalidTokenError):
    """The token is of another type than the kind accepts: an ID token or a session JWT
    where an OAuth access token is expected, an access token where a session JWT is."""


class InactiveTokenError(InvalidTokenError):
    """Token introspection (RFC 7662) answered that the token is not active."""


class DPoPBindingError(InvalidTokenError):
    """A DPoP-bound token (``cnf``) was sent as a Bearer token, or an unbound one as DPoP."""


class InvalidDPoPProofError(InvalidTokenError):
    """The DPoP proof (RFC 9449) is missing, malformed, replayed, or does not fit the request."""

    error_code = "invalid_dpop_proof"


class AuthorizationError(BetterAuthError):
    """The caller is authenticated but not allowed (HTTP 403)."""

    status_code = 403
    error_code: str | None = "insufficient_scope"


class InsufficientRoleError(AuthorizationError):
    """The user lacks a role or scope the endpoint requires."""


class InsufficientScopeError(InsufficientRoleError):
    """The token lacks an OAuth scope the endpoint requires.

    Attributes:
        scope: the scopes to ask for, space-separated (RFC 6750's ``scope`` attribute).
    """

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class BannedUserError(AuthorizationError):
    """The token says the user is banned (Better Auth's admin plugin)."""

    error_code = None


class CrossSiteRequestError(AuthorizationError):
    """A cookie-authenticated unsafe request or websocket came from an untrusted origin."""

    error_code = None


class ServiceUnavailableError(BetterAuthError):
    """No answer can be had from the Better Auth server now (HTTP 503); retry later.

    Attributes:
        retry_after: seconds to wait before retrying, when known (from the
            server's ``Retry-After``, or the package's own back-off); None otherwise.
    """

    status_code = 503

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KeySetError(ServiceUnavailableError):
    """No usable key set can be had (HTTP 503); the request may be retried."""


class KeySetFetchError(KeySetError):
    """The key server could not be reached, timed out, or answered an HTTP error."""


class KeySetInvalidError(KeySetError):
    """The key server answered something that is not a usable key set."""


class SessionServiceError(ServiceUnavailableError):
    """Better Auth's get-session could not be had: unreachable, slow, 429, 5xx or a bad answer."""


class IntrospectionError(ServiceUnavailableError):
    """Token introspection could not be had: unreachable, slow, 429, 5xx or a bad answer."""
