"""Read-only claims: what one cached user shares with every request that carries its token."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

__all__ = ["FrozenObject", "freeze_claims", "freeze_json"]


class FrozenObject(dict[str, Any]):
    """A JSON object inside a user's claims, read-only.

    Still a ``dict``, so ``json.dumps`` and ``JSONResponse`` take the claims as
    they are; every method that would change it raises ``TypeError``. Copies
    (``dict(obj)``, ``copy.copy``, ``copy.deepcopy``) are plain, mutable dicts.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a user's claims are read-only; change a copy: dict(claims[...])")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (dict(self),)


def freeze_json(value: Any) -> Any:
    """A read-only copy of a parsed JSON value: objects :class:`FrozenObject`, arrays tuples."""
    kind = type(value)
    if kind is dict:
        return FrozenObject({name: freeze_json(member) for name, member in value.items()})
    if kind is list:
        return tuple([freeze_json(item) for item in value])
    return value


def freeze_claims(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``claims``, nested JSON objects and arrays included.

    One user is shared by every request carrying the same credential (the
    verified-token and session caches), so no handler may change what the next
    one reads: the top level is a read-only view, arrays become tuples and
    objects :class:`FrozenObject`. Better Auth's claims are flat, so usually
    this is a copy and one pass over a dozen values.
    """
    # A read-only view (what the verifier returns) copies its dict at C speed;
    # dict(view) would go through the mapping protocol, member by member.
    frozen = (
        claims.copy() if type(claims) is MappingProxyType or type(claims) is dict else dict(claims)
    )
    for name, value in frozen.items():
        if type(value) is dict or type(value) is list:
            # Replacing values while iterating is safe: the keys do not change.
            frozen[name] = freeze_json(value)
    return MappingProxyType(frozen)
