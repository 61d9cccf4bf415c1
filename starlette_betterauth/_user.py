"""The authenticated user handed to handlers, and where its roles come from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from starlette.authentication import BaseUser

from .errors import BannedUserError, ConfigurationError, DPoPBindingError

__all__ = ["BetterAuthUser", "RoleSource", "UserBuilder"]

logger = logging.getLogger("starlette_betterauth")

#: A claim name, a dotted path into nested claims, or a callable of the claims.
RoleSource: TypeAlias = str | Callable[[Mapping[str, Any]], Iterable[str]]


class BetterAuthUser(BaseUser):
    """The verified caller, as ``request.state.user`` and ``request.user``.

    Attributes:
        id: the user id (the ``sub`` claim).
        email: the ``email`` claim, if any.
        name: the ``name`` claim, if any.
        roles: the user's roles; Better Auth's admin plugin stores several as
            one comma-separated string, ``"user,admin"``, which becomes
            ``frozenset({"user", "admin"})``.
        scopes: OAuth scopes from a space-separated ``scope`` claim.
        claims: a read-only mapping of the whole verified payload (for a
            session: the session's user object, with ``sub`` its id).
        kind: which credential authenticated the user: ``"jwt"``,
            ``"session_cookie"``, ``"session_token"`` or ``"access_token"``.
        session_id: the Better Auth session's id, where known.
        expires_at: when the credential stops being valid (Unix seconds), where known.
        client_id: for an OAuth access token, the client it was issued to
            (``client_id``, else ``azp``); None for session credentials.
        dpop_jkt: for a DPoP-bound token, the thumbprint of its key (``cnf.jkt``,
            RFC 9449): it is accepted only with ``Authorization: DPoP`` and a
            proof signed by that key.
    """

    __slots__ = (
        "claims",
        "client_id",
        "dpop_jkt",
        "email",
        "expires_at",
        "id",
        "kind",
        "name",
        "roles",
        "scopes",
        "session_id",
    )

    id: str
    email: str | None
    name: str | None
    roles: frozenset[str]
    scopes: frozenset[str]
    claims: Mapping[str, Any]
    kind: str
    session_id: str | None
    expires_at: float | None
    client_id: str | None
    dpop_jkt: str | None

    def __init__(
        self,
        *,
        id: str,
        email: str | None,
        name: str | None,
        roles: frozenset[str],
        scopes: frozenset[str],
        claims: Mapping[str, Any],
        kind: str = "jwt",
        session_id: str | None = None,
        expires_at: float | None = None,
        client_id: str | None = None,
        dpop_jkt: str | None = None,
    ) -> None:
        # One user object is shared by every request carrying the same token
        # (the verified-token cache), so it is immutable.
        setter = object.__setattr__
        setter(self, "id", id)
        setter(self, "email", email)
        setter(self, "name", name)
        setter(self, "roles", roles)
        setter(self, "scopes", scopes)
        setter(self, "claims", claims)
        setter(self, "kind", kind)
        setter(self, "session_id", session_id)
        setter(self, "expires_at", expires_at)
        setter(self, "client_id", client_id)
        setter(self, "dpop_jkt", dpop_jkt)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"BetterAuthUser is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"BetterAuthUser is immutable; cannot delete {name!r}")

    @property
    def is_authenticated(self) -> bool:
        """Always true: anonymous callers are ``None`` / Starlette's ``UnauthenticatedUser``."""
        return True

    @property
    def display_name(self) -> str:
        """The name, else the email, else the id."""
        return self.name or self.email or self.id

    @property
    def identity(self) -> str:
        """The user id."""
        return self.id

    @property
    def is_machine(self) -> bool:
        """True for a token a client got for itself (OAuth ``client_credentials``).

        Such a token acts for no user: its subject is the client (``sub`` equals
        ``client_id``, or is absent) and it belongs to no session. Its ``id``
        is the client id.
        """
        return self.client_id is not None and self.id == self.client_id and self.session_id is None

    def has_role(self, role: str) -> bool:
        """Whether the user has ``role``."""
        return role in self.roles

    def __repr__(self) -> str:
        client = f", client_id={self.client_id!r}" if self.client_id is not None else ""
        return (
            f"BetterAuthUser(id={self.id!r}, email={self.email!r}, roles={sorted(self.roles)}, "
            f"kind={self.kind!r}{client})"
        )


def _sid(claims: Mapping[str, Any]) -> str | None:
    sid = claims.get("sid")
    return sid if type(sid) is str else None


def _client_id(claims: Mapping[str, Any]) -> str | None:
    client_id = claims.get("client_id")
    if type(client_id) is str and client_id:
        return client_id
    azp = claims.get("azp")
    return azp if type(azp) is str and azp else None


def _dpop_jkt(claims: Mapping[str, Any]) -> str | None:
    """``cnf.jkt``; a ``cnf`` binding the token to anything else cannot be honoured here."""
    confirmation = claims.get("cnf")
    if confirmation is None:
        return None
    jkt = confirmation.get("jkt") if isinstance(confirmation, Mapping) else None
    if type(jkt) is not str or not jkt:
        raise DPoPBindingError(
            "the token is bound to a key (cnf) by a method this API cannot check; only "
            "DPoP bindings (cnf.jkt) are supported"
        )
    return jkt


def _split(value: object, separator: str) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(part for part in (p.strip() for p in value.split(separator)) if part)
    if isinstance(value, list | tuple):
        return frozenset(v.strip() for v in value if isinstance(v, str) and v.strip())
    return frozenset()


def _listed(value: object) -> object:
    if value is None or isinstance(value, str):
        return value
    return list(value) if isinstance(value, Iterable) else None


def _dotted(path: str) -> Callable[[Mapping[str, Any]], object]:
    parts = path.split(".")

    def read(claims: Mapping[str, Any]) -> object:
        value: object = claims
        for part in parts:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return read


class UserBuilder:
    """Builds a BetterAuthUser and its Starlette credentials from verified claims.

    ``roles`` is where roles come from: a claim name (default ``"role"``), a
    dotted path into nested claims (``"org.roles"``), or a callable receiving the
    claims. Credentials scopes are ``"authenticated"``, ``"role:<name>"`` per
    role and ``"scope:<name>"`` per OAuth scope.
    """

    def __init__(self, roles: RoleSource = "role", *, allow_banned: bool = False) -> None:
        if callable(roles):
            source = roles

            def read_with(claims: Mapping[str, Any]) -> frozenset[str]:
                try:
                    found = source(claims)
                except Exception:
                    # A broken roles callable must not turn requests into 500s:
                    # the user gets no roles (least privilege) and the bug is logged.
                    logger.exception("the roles callable raised; the user gets no roles")
                    return frozenset()
                # It may hand back the claim as is: "user,admin" is two roles,
                # not the characters of a string.
                return _split(_listed(found), ",")

            self._read_roles: Callable[[Mapping[str, Any]], frozenset[str]] = read_with
        elif isinstance(roles, str) and roles and all(roles.split(".")):
            read = _dotted(roles)
            self._read_roles = lambda c: _split(read(c), ",")
        else:
            raise ConfigurationError(
                f"roles must be a claim name, dotted path or callable: {roles!r}"
            )
        self.allow_banned = allow_banned

    def build(
        self,
        claims: Mapping[str, Any],
        *,
        kind: str = "jwt",
        session_id: str | None = None,
        expires_at: float | None = None,
    ) -> tuple[BetterAuthUser, tuple[str, ...]]:
        """Return the user and its credential scopes; raise BannedUserError for a banned user.

        The scopes are a tuple so a cached result can be shared: build a fresh
        ``AuthCredentials(scopes)`` for each request. ``client_id`` (else
        ``azp``) and ``cnf.jkt`` are read from the claims; a ``cnf`` of another
        kind raises :class:`DPoPBindingError`.
        """
        if claims.get("banned") is True and not self.allow_banned:
            raise BannedUserError("this user is banned")
        email = claims.get("email")
        name = claims.get("name")
        roles = self._read_roles(claims)
        scopes = _split(claims.get("scope"), " ")
        user = BetterAuthUser(
            id=str(claims.get("sub", "")),
            email=email if isinstance(email, str) else None,
            name=name if isinstance(name, str) else None,
            roles=roles,
            scopes=scopes,
            claims=claims,
            kind=kind,
            session_id=session_id if session_id is not None else _sid(claims),
            expires_at=expires_at,
            client_id=_client_id(claims),
            dpop_jkt=_dpop_jkt(claims) if "cnf" in claims else None,
        )
        granted = ("authenticated", *sorted(f"role:{r}" for r in roles))
        return user, (*granted, *sorted(f"scope:{s}" for s in scopes))
