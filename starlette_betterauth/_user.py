"""The authenticated user handed to handlers, and where its roles come from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from starlette.authentication import BaseUser

from ._frozen import freeze_claims
from .errors import BannedUserError, ConfigurationError, DPoPBindingError

__all__ = ["BetterAuthUser", "RoleSource", "UserBuilder"]

logger = logging.getLogger("starlette_betterauth")

#: What a roles callable returns: one comma-separated string, strings, or None (no roles).
RoleNames: TypeAlias = str | list[str] | tuple[str, ...] | set[str] | frozenset[str] | None
#: A claim name, a dotted path into nested claims, or a callable of the claims.
RoleSource: TypeAlias = str | Callable[[Mapping[str, Any]], RoleNames]


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
            session: the session's user object, with ``sub`` its id); nested
            objects are read-only dicts and arrays tuples.
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
        # (the verified-token cache), so it is immutable, its claims included.
        _fill(
            self,
            id,
            email,
            name,
            roles,
            scopes,
            freeze_claims(claims),
            kind,
            session_id,
            expires_at,
            client_id,
            dpop_jkt,
        )

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


# The slots' own setters, called directly: BetterAuthUser refuses attribute
# assignment, and object.__setattr__ by name costs twice as much per field.


def _slot_setter(name: str) -> Callable[[BetterAuthUser, Any], None]:
    setter: Callable[[BetterAuthUser, Any], None] = vars(BetterAuthUser)[name].__set__
    return setter


_set_id = _slot_setter("id")
_set_email = _slot_setter("email")
_set_name = _slot_setter("name")
_set_roles = _slot_setter("roles")
_set_scopes = _slot_setter("scopes")
_set_claims = _slot_setter("claims")
_set_kind = _slot_setter("kind")
_set_session_id = _slot_setter("session_id")
_set_expires_at = _slot_setter("expires_at")
_set_client_id = _slot_setter("client_id")
_set_dpop_jkt = _slot_setter("dpop_jkt")
_new = object.__new__


def _fill(
    user: BetterAuthUser,
    id: str,
    email: str | None,
    name: str | None,
    roles: frozenset[str],
    scopes: frozenset[str],
    claims: Mapping[str, Any],
    kind: str,
    session_id: str | None,
    expires_at: float | None,
    client_id: str | None,
    dpop_jkt: str | None,
) -> BetterAuthUser:
    """Set every field of ``user`` (``claims`` already frozen) and return it."""
    _set_id(user, id)
    _set_email(user, email)
    _set_name(user, name)
    _set_roles(user, roles)
    _set_scopes(user, scopes)
    _set_claims(user, claims)
    _set_kind(user, kind)
    _set_session_id(user, session_id)
    _set_expires_at(user, expires_at)
    _set_client_id(user, client_id)
    _set_dpop_jkt(user, dpop_jkt)
    return user


def _sid(claims: Mapping[str, Any]) -> str | None:
    sid = claims.get("sid")
    return sid if type(sid) is str else None


# What may pad a role or scope name: ASCII space and tab, as in "user, admin".
# Nothing else is stripped (str.strip() would also take NBSP, U+3000, NEL and
# U+001C-U+001F, so "admin\u00a0" would count as "admin").
_PADDING = " \t"
# What a roles callable may return: a string, or a list or set of strings.
_ROLE_COLLECTIONS = (list, tuple, set, frozenset)


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
        parts: Iterable[object] = value.split(separator)
    elif isinstance(value, _ROLE_COLLECTIONS):
        parts = value
    else:
        return frozenset()
    return frozenset(
        name for name in (p.strip(_PADDING) for p in parts if isinstance(p, str)) if name
    )


def _claim_reader(name: str) -> Callable[[Mapping[str, Any]], object]:
    """The claim ``name`` itself when the claims have it, else the dotted path it spells.

    Namespaced claim names (``"https://example.com/roles"``) contain dots, so the
    exact name is tried before ``"org.roles"`` is read as ``claims["org"]["roles"]``.
    """
    parts = name.split(".")

    def read(claims: Mapping[str, Any]) -> object:
        if name in claims or len(parts) == 1:
            return claims.get(name)
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
                # not the characters of a string. Anything but a string or a list
                # or set of strings is a bug: no roles, rather than a dict's keys.
                if found is None:
                    return frozenset()
                if isinstance(found, str) or (
                    isinstance(found, _ROLE_COLLECTIONS)
                    and all(isinstance(name, str) for name in found)
                ):
                    return _split(found, ",")
                logger.error(
                    "the roles callable returned a %s, not a string or a list or set of "
                    "strings; the user gets no roles",
                    type(found).__name__,
                )
                return frozenset()

            self._read_roles: Callable[[Mapping[str, Any]], frozenset[str]] = read_with
        elif isinstance(roles, str) and roles and "." not in roles:
            claim = roles
            self._role_claim = claim
            self._read_roles = lambda c: _split_memo(c.get(claim), ",", _ROLE_NAMES)
        elif isinstance(roles, str) and roles:
            read = _claim_reader(roles)
            self._read_roles = lambda c: _split_memo(read(c), ",", _ROLE_NAMES)
        else:
            raise ConfigurationError(
                f"roles must be a claim name, dotted path or callable: {roles!r}"
            )
        self.allow_banned = allow_banned

    #: The one claim roles come from (not a path or a callable): read in place.
    _role_claim: str | None = None

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
        banned = claims.get("banned")
        # Better Auth types banned as boolean | null: anything but false or null
        # ("true", 1, [true]) is read as banned, so a malformed claim fails closed.
        if banned is not None and banned is not False and not self.allow_banned:
            raise BannedUserError(
                "this user is banned"
                if banned is True
                else "the banned claim is neither false nor null; the user is treated as banned"
            )
        email = claims.get("email")
        name = claims.get("name")
        # The common case, a role claim already met, costs one lookup.
        role = claims.get(self._role_claim) if self._role_claim is not None else None
        roles = _ROLE_NAMES.get(role) if type(role) is str else None
        if roles is None:
            roles = self._read_roles(claims)
        scope = claims.get("scope")
        scopes = _EMPTY if scope is None else _split_memo(scope, " ", _SCOPE_NAMES)
        sub = claims.get("sub", "")
        user = _fill(
            _new(BetterAuthUser),
            sub if type(sub) is str else str(sub),
            email if isinstance(email, str) else None,
            name if isinstance(name, str) else None,
            roles,
            scopes,
            freeze_claims(claims),
            kind,
            session_id if session_id is not None else _sid(claims),
            expires_at,
            _client_id(claims),
            _dpop_jkt(claims) if "cnf" in claims else None,
        )
        granted = _GRANTED.get((roles, scopes))
        if granted is None:
            granted = (
                "authenticated",
                *sorted(f"role:{r}" for r in roles),
                *sorted(f"scope:{s}" for s in scopes),
            )
            if len(_GRANTED) < _MAX_MEMO:
                _GRANTED[(roles, scopes)] = granted
        return user, granted


_EMPTY: frozenset[str] = frozenset()
# Role and scope claims repeat across users ("user", "user,admin"): each distinct
# value is split once and its frozenset shared by every user holding it, and so
# is the tuple of credential scopes of each combination. Bounded: past the bound,
# new values are split every time (a server has a handful; only one minting odd
# claims gets there).
_MAX_MEMO = 1024
_MAX_MEMO_VALUE = 256
_ROLE_NAMES: dict[str, frozenset[str]] = {}
_SCOPE_NAMES: dict[str, frozenset[str]] = {}
_GRANTED: dict[tuple[frozenset[str], frozenset[str]], tuple[str, ...]] = {}


def _split_memo(value: object, separator: str, memo: dict[str, frozenset[str]]) -> frozenset[str]:
    """:func:`_split`, remembered by value for strings."""
    if value is None:
        return _EMPTY
    if type(value) is not str:
        return _split(value, separator)
    names = memo.get(value)
    if names is None:
        names = _split(value, separator)
        if len(memo) < _MAX_MEMO and len(value) <= _MAX_MEMO_VALUE:
            memo[value] = names
    return names
