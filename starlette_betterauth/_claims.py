"""Validation of a verified token's registered claims (exp, nbf, iat, iss, aud, sub)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
)

__all__ = ["MAX_NUMERIC_DATE", "ClaimRules", "numeric_date", "one_of", "short_repr"]

# NumericDate bounds: 1970 to the end of year 9999. Anything else is nonsense.
MAX_NUMERIC_DATE = 253402300799


def numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """Return claim ``name`` as a NumericDate, None when absent; refuse any other type."""
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if type(value) is not int and type(value) is not float:
        raise InvalidClaimError(f"the {name} claim is not a JSON number")
    if not 0 <= value <= MAX_NUMERIC_DATE:  # also false for NaN
        raise InvalidClaimError(f"the {name} claim is out of range")
    return float(value)


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """What a token's claims must satisfy. ``None`` for issuer/audiences skips that check."""

    issuer: str | None
    audiences: frozenset[str] | None
    leeway: float = 10.0
    require_exp: bool = True
    require_sub: bool = True

    def check(self, claims: Mapping[str, Any], now: float) -> float | None:
        """Validate ``claims`` at time ``now``; return ``exp`` (None if absent and allowed).

        Raises:
            InvalidClaimError: (a subclass naming the claim) the first rule broken.
        """
        exp = self.check_times(claims, now)
        error = self.issuer_error(claims) or self.audience_error(claims) or self.sub_error(claims)
        if error is not None:
            raise error
        return exp

    def check_times(self, claims: Mapping[str, Any], now: float) -> float | None:
        """Validate exp, nbf and iat only; return exp (None if absent and allowed).

        Raises:
            InvalidClaimError: a time claim is missing or not a NumericDate.
            ExpiredTokenError: exp is past (beyond the leeway).
            ImmatureTokenError: nbf or iat is in the future (beyond the leeway).
        """
        # Better Auth's exp and iat are in-range integers and it sets no nbf: that
        # case is checked inline; anything else goes through numeric_date.
        exp = claims.get("exp")
        if type(exp) is not int or not 0 <= exp <= MAX_NUMERIC_DATE:
            exp = numeric_date(claims, "exp")
        if exp is None:
            if self.require_exp:
                raise InvalidClaimError("the exp claim is missing")
        elif now >= exp + self.leeway:
            raise ExpiredTokenError("the token has expired")
        if "nbf" in claims:
            nbf = numeric_date(claims, "nbf")
            if nbf is not None and now + self.leeway < nbf:
                raise ImmatureTokenError("the token is not valid yet (nbf is in the future)")
        iat = claims.get("iat")
        if type(iat) is not int or not 0 <= iat <= MAX_NUMERIC_DATE:
            iat = numeric_date(claims, "iat")
        if iat is not None and now + self.leeway < iat:
            raise ImmatureTokenError("the token was issued in the future (check the clocks)")
        return None if exp is None else float(exp)

    def times_error(self, claims: Mapping[str, Any], now: float) -> InvalidClaimError | None:
        """The error :meth:`check_times` raises for ``claims`` at ``now``, or None."""
        try:
            self.check_times(claims, now)
        except InvalidClaimError as error:
            return error
        return None

    def issuer_error(self, claims: Mapping[str, Any]) -> InvalidIssuerError | None:
        """None when ``iss`` is the expected issuer (or none is expected), else the error."""
        if self.issuer is None:
            return None
        iss = claims.get("iss")
        if iss == self.issuer and type(iss) is str:
            return None
        return InvalidIssuerError(
            f"iss is {short_repr(iss)} but the expected issuer is {self.issuer!r}"
        )

    def audience_error(self, claims: Mapping[str, Any]) -> InvalidAudienceError | None:
        """None when ``aud`` names an accepted audience (or any is accepted), else the error."""
        if self.audiences is None:
            return None
        aud = claims.get("aud")
        if type(aud) is str:
            matched = aud in self.audiences
        elif type(aud) is list:
            matched = any(type(a) is str and a in self.audiences for a in aud)
        else:
            matched = False
        if matched:
            return None
        return InvalidAudienceError(
            f"aud is {short_repr(aud)} but the accepted audience is {one_of(self.audiences)}"
        )

    def sub_error(self, claims: Mapping[str, Any]) -> InvalidClaimError | None:
        """None when ``sub`` is a non-empty string (or is not required), else the error."""
        value = claims.get("sub")
        if not self.require_sub or (type(value) is str and value):
            return None
        return InvalidClaimError("the sub claim is missing or not a non-empty string")


def one_of(names: frozenset[str]) -> str:
    """``'a' or 'b'``: accepted values for a message, in a stable order."""
    return " or ".join(repr(name) for name in sorted(names))


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
