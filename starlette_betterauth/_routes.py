"""Public routes: the paths a request may reach without a token."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["PublicRoutes", "route_path"]

_ANY: frozenset[str] = frozenset()


def route_path(scope: Mapping[str, Any]) -> str:
    """The path the app routes on: ``scope["path"]`` less the ``root_path`` it starts with.

    Servers run with a root path (``uvicorn --root-path /api``) and mounted
    apps (Starlette's ``Mount``) put the full path in ``scope["path"]`` and the
    prefix in ``scope["root_path"]``; routers strip the prefix as Starlette's
    does, and so must public rules, or ``"/health"`` would never match. A path
    that does not start with the root path (servers that leave it out) is
    already the routed path. The root path itself is ``"/"``.
    """
    path: str = scope["path"]
    root_path = scope.get("root_path")
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    if not rest:
        return "/"
    return rest if rest[0] == "/" else path


class PublicRoutes:
    """Compiled public-route rules.

    A rule is ``"/path"`` (exact), ``"/prefix/*"`` (that prefix and below), each
    optionally led by methods: ``"GET /health"``, ``"OPTIONS /*"`` (CORS
    preflight), ``"GET,HEAD /docs*"``. A rule with methods matches HTTP requests
    only; a rule without matches websockets too.
    """

    def __init__(self, rules: Iterable[str]) -> None:
        self._exact: dict[str, frozenset[str]] = {}
        self._prefixes: list[tuple[str, frozenset[str]]] = []
        for rule in rules:
            methods, path = self._parse(rule)
            if path.endswith("*"):
                self._prefixes.append((path[:-1], methods))
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
        else:
            raise ConfigurationError(f"a public route is 'PATH' or 'METHODS PATH', got {rule!r}")
        if not path.startswith("/") or "*" in path[:-1]:
            raise ConfigurationError(
                f"a public route path starts with '/' and may end with '*', got {rule!r}"
            )
        return methods, path

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def matches(self, method: str | None, path: str) -> bool:
        """Whether a request (``method`` None for websockets) may go without a token."""
        methods = self._exact.get(path)
        if methods is not None and (not methods or method in methods):
            return True
        for prefix, methods in self._prefixes:
            if path.startswith(prefix) and (not methods or method in methods):
                return True
        return False
