"""Read-only claims: what one cached user shares with every request that carries its token."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from ._claims import short_repr
from .errors import InvalidClaimError

__all__ = ["FrozenClaims", "FrozenObject", "freeze_claims", "freeze_json"]


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


# Claim values that repeat across the users of one server (its issuer, the
# audience, role names, the client): one copy of each is shared by every cached
# user instead of one per token. Bounded; past the bound, values already known are
# still shared.
_REPEATING = ("iss", "aud", "role", "azp", "client_id", "scope")
_VALUES: dict[str, str] = {}
_MAX_VALUES = 1024
_MAX_VALUE_LENGTH = 256
_CONTAINERS = frozenset({dict, list})


class _Layout:
    """What every claims object with one set of names, in one order, shares.

    ``index``: the position of each name; ``repeating``: positions of claims whose
    values repeat across users; ``same``: ``(id, sub)`` positions, whose values
    are usually one string (Better Auth's ``id`` is its ``sub``).
    """

    __slots__ = ("index", "repeating", "same")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.index = {name: position for position, name in enumerate(names)}
        self.repeating = tuple(self.index[n] for n in _REPEATING if n in self.index)
        self.same = (
            (self.index["id"], self.index["sub"])
            if "id" in self.index and "sub" in self.index
            else None
        )


# Layouts by their names: a Better Auth server's tokens have a handful. Bounded;
# past the bound, a new layout is built for each such claims object.
_LAYOUTS: dict[tuple[str, ...], _Layout] = {}
_MAX_LAYOUTS = 256


class FrozenClaims(Mapping[str, Any]):
    """A user's claims, read-only: the whole verified payload as a mapping.

    Built once per token and shared by every request carrying it (the caches), so
    it cannot be changed; ``dict(claims)`` (or ``claims.copy()``) is a plain,
    mutable copy. The names are stored once for every token of the same shape,
    the values in a tuple: a cached user holds no dict of its own.
    """

    __slots__ = ("_index", "_values")

    _index: dict[str, int]
    _values: tuple[Any, ...]

    def __getitem__(self, name: str) -> Any:
        return self._values[self._index[name]]

    def get(self, name: str, default: Any = None) -> Any:
        """The value of claim ``name``, else ``default``."""
        position = self._index.get(name)
        return default if position is None else self._values[position]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def copy(self) -> dict[str, Any]:
        """A plain, mutable copy (nested objects stay read-only; copy them as needed)."""
        return dict(zip(self._index, self._values, strict=True))

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.copy(), **other}

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**other, **self.copy()}

    def __copy__(self) -> dict[str, Any]:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(self.copy(), memo)

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (self.copy(),)

    def __repr__(self) -> str:
        return f"FrozenClaims({self.copy()!r})"


_new = object.__new__
_set_index = vars(FrozenClaims)["_index"].__set__
_set_values = vars(FrozenClaims)["_values"].__set__


def freeze_claims(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``claims``, nested JSON objects and arrays included.

    One user is shared by every request carrying the same credential (the
    verified-token and session caches), so no handler may change what the next
    one reads: the top level is a :class:`FrozenClaims`, arrays become tuples
    and objects :class:`FrozenObject`. Better Auth's claims are flat, so usually
    this is two tuples made in C, the names' layout shared by every token of the
    same shape, and the values that repeat across users shared too.
    """
    names = tuple(claims)
    layout = _LAYOUTS.get(names)
    if layout is None:
        layout = _Layout(names)
        if len(_LAYOUTS) < _MAX_LAYOUTS:
            _LAYOUTS[names] = layout
    values = list(claims.values())
    if not _CONTAINERS.isdisjoint(map(type, values)):
        for position, value in enumerate(values):
            if type(value) is dict or type(value) is list:
                try:
                    values[position] = freeze_json(value)
                except RecursionError as exc:
                    raise InvalidClaimError(
                        f"the {short_repr(names[position])} claim is nested too deeply"
                    ) from exc
    share = _VALUES.setdefault if len(_VALUES) < _MAX_VALUES else _VALUES.get
    for position in layout.repeating:
        value = values[position]
        if type(value) is str and len(value) <= _MAX_VALUE_LENGTH:
            values[position] = share(value, value)
    same = layout.same
    if same is not None:
        first, second = same
        value = values[second]
        if type(value) is str and values[first] == value:
            values[first] = value
    frozen = _new(FrozenClaims)
    _set_index(frozen, layout.index)
    _set_values(frozen, tuple(values))
    return frozen
