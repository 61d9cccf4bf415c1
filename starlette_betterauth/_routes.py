"""Public routes: the paths a request may reach without a token."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import ConfigurationError

__all__ = ["PREFLIGHT", "PublicRoutes"]

_ANY: frozenset[str] = frozenset()
#: The pseudo-method of rules that let CORS preflights through and nothing else.
PREFLIGHT = "PREFLIGHT"
_PREFLIGHT_HEADERS = frozenset({b"origin", b"access-control-request-method"})


class PublicRoutes:
    """Compiled public-route rules.

    A rule is ``"/path"`` (exactly that path) or ``"/prefix/*"`` (``/prefix``
    itself and every path below it, segment by segment: ``"/docs/*"`` matches
    ``/docs`` and ``/docs/oauth2-redirect``, never ``/docs-internal``), each
    optionally led by methods: ``"GET /health"``, ``"GET,HEAD /docs/*"``. The
    method ``PREFLIGHT`` matches CORS preflights only: ``OPTIONS`` requests that
    carry ``Origin`` and ``Access-Control-Request-Method`` (``"PREFLIGHT /*"``),
    where ``"OPTIONS /*"`` would let any OPTIONS request reach the app. A rule
    with methods matches HTTP requests only; a rule without matches websockets
    too.

    Raises:
        ConfigurationError: a rule that is not of these forms, or a ``*`` that
            does not follow a ``/`` (``"/docs*"`` would also match ``/docs-internal``).
    """

    def __init__(self, rules: Iterable[str]) -> None:
        self._exact: dict[str, frozenset[str]] = {}
        self._prefixes: list[tuple[str, frozenset[str]]] = []
        for rule in rules:
            methods, path = self._parse(rule)
            if path.endswith("/*"):
                self._prefixes.append((path[:-2], methods))
            else:
                previous = self._exact.get(path)
                if previous is None:
                    self._exact[path] = methods
                elif not previous or not methods:
                    self._exact[path] = _ANY
                else:
                    self._exact[path] = previous | methods

    @staticmethod
    def _parse(rule: str) -> tuple[frozenset[str], str]:
        words = rule.split()
        if len(words) == 1:
            methods, path = _ANY, words[0]
        elif len(words) == 2:
            methods = frozenset(m.upper() for m in words[0].split(",") if m)
            path = words[1]
            if not methods:  # an empty set would mean "every method"
                raise ConfigurationError(f"a public route names no method: {rule!r}")
        else:
            raise ConfigurationError(f"a public route is 'PATH' or 'METHODS PATH', got {rule!r}")
        if not path.startswith("/") or "*" in path[:-1]:
            raise ConfigurationError(
                f"a public route path starts with '/' and may end with '/*', got {rule!r}"
            )
        if path.endswith("*") and not path.endswith("/*"):
            raise ConfigurationError(
                f"in public route {rule!r}, '*' must follow '/': {path!r} would also match "
                f"{path[:-1] + '-internal'!r}; write {path[:-1].rstrip('/') + '/*'!r} for "
                f"{path[:-1].rstrip('/') or '/'!r} and every path below it"
            )
        return methods, path

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def matches(
        self, method: str | None, path: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> bool:
        """Whether a request may go without a token.

        ``method`` is None for websockets; ``headers`` (the ASGI scope's) are
        read only for ``PREFLIGHT`` rules.
        """
        methods = self._exact.get(path)
        if methods is not None and _allows(methods, method, headers):
            return True
        for prefix, methods in self._prefixes:
            if (
                path.startswith(prefix)
                and (len(path) == len(prefix) or path[len(prefix)] == "/")
                and _allows(methods, method, headers)
            ):
                return True
        return False


def _allows(
    methods: frozenset[str], method: str | None, headers: Sequence[tuple[bytes, bytes]]
) -> bool:
    if not methods or method in methods:
        return True
    return method == "OPTIONS" and PREFLIGHT in methods and _is_preflight(headers)


def _is_preflight(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """An OPTIONS request is a CORS preflight when it names an origin and a method."""
    seen = {name.lower() for name, _ in headers if name.lower() in _PREFLIGHT_HEADERS}
    return seen == _PREFLIGHT_HEADERS
