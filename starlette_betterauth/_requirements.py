"""Authorization shared by the guards and the FastAPI dependencies.

Both read the user BetterAuthMiddleware put in the scope, check it against a
:class:`Requirement` and answer a refusal exactly as the middleware would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from starlette.responses import Response

from ._responses import ErrorResponse, error_response, missing_token
from ._user import BetterAuthUser
from .errors import (
    BetterAuthError,
    ConfigurationError,
    InsufficientRoleError,
    InsufficientScopeError,
)

__all__ = ["MISSING", "Refusal", "Requirement", "describe", "http_response", "user_in"]


class Refusal:
    """An authorization error and the response it is answered with, built once."""

    __slots__ = ("error", "response")

    def __init__(self, error: BetterAuthError) -> None:
        self.error = error
        self.response: ErrorResponse = error_response(error)


#: The same answer the middleware gives a request without a token.
MISSING: Final = Refusal(missing_token())


class Requirement:
    """Roles or scopes an endpoint needs: one name, any of several, or all of several."""

    __slots__ = ("_all", "_denied", "_names", "_scopes")

    def __init__(
        self,
        kind: str,
        where: str,
        positional: tuple[object, ...],
        any_of: Iterable[str] | None,
        all_of: Iterable[str] | None,
    ) -> None:
        given = [form for form in (positional or None, any_of, all_of) if form is not None]
        if len(given) != 1:
            raise ConfigurationError(
                f"{where} takes one {kind} ({where}('name')), any_of=(...) or all_of=(...); "
                f"got {len(given)} of those"
            )
        if positional:
            if len(positional) > 1 or not isinstance(positional[0], str):
                raise ConfigurationError(_positional_message(kind, where, positional))
            names = self._names_of(kind, where, "", positional)
        else:
            keyword = "any_of" if any_of is not None else "all_of"
            names = self._names_of(kind, where, keyword, any_of if any_of is not None else all_of)
        self._all = all_of is not None or len(names) == 1
        if len(names) == 1:
            description = f"the {names[0]!r} {kind}"
        else:
            description = f"{'all' if self._all else 'one'} of the {kind}s {', '.join(names)}"
        self._names = frozenset(names)
        self._scopes = kind == "scope"
        message = f"this endpoint needs {description}"
        # RFC 6750 section 3.1: a 403 insufficient_scope names the scopes to ask for.
        self._denied = Refusal(
            InsufficientScopeError(message, scope=" ".join(names))
            if self._scopes
            else InsufficientRoleError(message)
        )

    @staticmethod
    def _names_of(kind: str, where: str, keyword: str, value: object) -> tuple[str, ...]:
        label = f"{where}({keyword}=...)" if keyword else where
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ConfigurationError(
                f"{label} takes a tuple of {kind}s, e.g. {keyword}=('admin', 'editor'), "
                f"got {value!r}"
            )
        names = tuple(value)
        if not names:
            raise ConfigurationError(f"{label} needs at least one {kind}")
        # A role claim is split on commas and a scope claim on spaces, so such a
        # name could never be held: it is a misspelt list.
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ConfigurationError(f"{label}: a {kind} is a non-empty string, got {name!r}")
            joined = any(c.isspace() for c in name) if kind == "scope" else "," in name
            if joined or name != name.strip():
                raise ConfigurationError(
                    f"{label}: {name!r} is not one {kind}; list several as "
                    f"any_of=(...) (either) or all_of=(...) (every one)"
                )
        return tuple(dict.fromkeys(names))

    def check(self, user: BetterAuthUser | None) -> BetterAuthUser | Refusal:
        """``user`` when they meet the requirement, else the refusal to answer with."""
        if user is None:
            return MISSING
        held = user.scopes if self._scopes else user.roles
        allowed = self._names <= held if self._all else not self._names.isdisjoint(held)
        return user if allowed else self._denied


def _positional_message(kind: str, where: str, positional: tuple[object, ...]) -> str:
    first = positional[0]
    if callable(first):
        return f"{where} needs a {kind}: write @{where}('name') above {describe(first)}"
    if len(positional) == 1 and isinstance(first, Iterable) and not isinstance(first, str):
        positional = tuple(first)
    if not all(isinstance(p, str) for p in positional):
        return f"{where} takes {kind} names (strings), got {first!r}"
    listed = ", ".join(repr(p) for p in positional)
    return (
        f"{where}({listed}) is ambiguous: write {where}(any_of=({listed})) "
        f"to need one of them or {where}(all_of=({listed})) to need every one"
    )


def describe(func: object) -> str:
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None)
    if isinstance(name, str):
        return f"{module}.{name}" if isinstance(module, str) else name
    return repr(func)


def user_in(scope: Mapping[str, Any], where: str) -> BetterAuthUser | None:
    """The user BetterAuthMiddleware put in ``scope["state"]``, None when anonymous.

    Raises:
        RuntimeError: the middleware did not run for this connection (a
            misconfigured app fails closed, loudly).
    """
    state = scope.get("state")
    if not isinstance(state, dict) or "user" not in state:
        raise RuntimeError(
            f"{where} found no user in request.state: add BetterAuthMiddleware to the app "
            "(it must run before the endpoint)"
        )
    user = state["user"]
    if user is None or isinstance(user, BetterAuthUser):
        return user
    raise RuntimeError(f"{where}: request.state.user is a {type(user).__name__}, not a user")


def http_response(prepared: ErrorResponse) -> Response:
    """A fresh Response carrying exactly the middleware's status, headers and body."""
    status, headers, body = prepared
    response = Response(body, status_code=status)
    response.raw_headers = list(headers)
    return response
