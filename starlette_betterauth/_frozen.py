"""Read-only claims: what one cached user shares with every request that carries its token."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from ._claims import short_repr
from .errors import InvalidClaimError

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


#: Deepest nesting of objects and arrays copied; deeper is refused the same way on every
#: Python (the interpreter's own recursion limit counts frames differently across versions).
MAX_JSON_DEPTH = 64


def freeze_json(value: Any, _depth: int = 0) -> Any:
    """A read-only copy of a parsed JSON value: objects :class:`FrozenObject`, arrays tuples.

    Raises:
        RecursionError: objects and arrays nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    if _depth >= MAX_JSON_DEPTH:
        raise RecursionError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if kind is dict:
        return FrozenObject(
            {name: freeze_json(member, _depth + 1) for name, member in value.items()}
        )
    return tuple([freeze_json(item, _depth + 1) for item in value])


# Claim names seen, each kept once: every cached user of a Better Auth server has
# the same dozen names, and one copy of each is shared instead of one per token.
# Bounded; past the bound, names already known are still shared.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 1024
_CONTAINERS = frozenset({dict, list})


def freeze_claims(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``claims``, nested JSON objects and arrays included.

    One user is shared by every request carrying the same credential (the
    verified-token and session caches), so no handler may change what the next
    one reads: the top level is a read-only view, arrays become tuples and
    objects :class:`FrozenObject`. Better Auth's claims are flat, so usually
    this is a copy, made in C, with one string per claim name shared by all users.
    """
    shared = _NAMES.setdefault if len(_NAMES) < _MAX_NAMES else _NAMES.get
    frozen = dict(zip(map(shared, claims, claims), claims.values(), strict=True))
    if not _CONTAINERS.isdisjoint(map(type, frozen.values())):
        for name, value in frozen.items():
            if type(value) is dict or type(value) is list:
                # Replacing values while iterating is safe: the keys do not change.
                try:
                    frozen[name] = freeze_json(value)
                except RecursionError as exc:
                    raise InvalidClaimError(
                        f"the {short_repr(name)} claim is nested too deeply"
                    ) from exc
    return MappingProxyType(frozen)
