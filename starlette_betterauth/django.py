"""Django (ASGI): ``request.user`` is the user BetterAuthMiddleware authenticated.

Wrap Django's ASGI application in the middleware, then add
:class:`BetterAuthUserMiddleware` to ``MIDDLEWARE``::

    # asgi.py
    from django.core.asgi import get_asgi_application
    from starlette_betterauth import BetterAuthMiddleware

    application = BetterAuthMiddleware(
        get_asgi_application(), base_url="https://auth.example.com", public=["/health"]
    )

    # settings.py
    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",  # if you use it
        "starlette_betterauth.django.BetterAuthUserMiddleware",
    ]

    # views.py
    from starlette_betterauth import requires_role

    def me(request):                        # sync and async views alike
        return JsonResponse({"id": request.user.id})

    @requires_role("admin")
    async def admin(request):
        ...

:func:`~starlette_betterauth.requires_role` and
:func:`~starlette_betterauth.requires_scope` guard sync and async views and
answer refusals with an ``HttpResponse`` carrying the middleware's status,
``WWW-Authenticate`` header and JSON body. Django under WSGI has no ASGI
scope: verify tokens there with :class:`~starlette_betterauth.SyncTokenVerifier`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured
    from django.http import HttpRequest, HttpResponse, HttpResponseBase
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError("starlette_betterauth.django needs Django: pip install django") from exc

from starlette.authentication import UnauthenticatedUser

from ._connections import scope_of
from ._requirements import user_in
from ._responses import ErrorResponse, header_dict
from ._user import BetterAuthUser

__all__ = ["BetterAuthUserMiddleware", "better_auth_user"]

_WHERE = "starlette_betterauth.django.BetterAuthUserMiddleware"


def better_auth_user(request: HttpRequest) -> BetterAuthUser | None:
    """The user BetterAuthMiddleware authenticated for ``request``; None when anonymous.

    Raises:
        ImproperlyConfigured: the request did not come through BetterAuthMiddleware
            (Django served under WSGI, or the ASGI application not wrapped).
    """
    scope = scope_of(request)
    if scope is None:
        raise ImproperlyConfigured(
            f"{_WHERE} needs Django served over ASGI with its application wrapped in "
            "BetterAuthMiddleware (under WSGI, verify tokens with SyncTokenVerifier)"
        )
    try:
        return user_in(scope, _WHERE)
    except RuntimeError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def _anonymous() -> Any:
    """Django's ``AnonymousUser``; Starlette's ``UnauthenticatedUser`` without django.contrib.auth.

    Imported here, not with the module: the guards import this module as soon
    as Django is imported, before its settings or apps may be ready.
    """
    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth.models import AnonymousUser

        return AnonymousUser()
    return UnauthenticatedUser()


class BetterAuthUserMiddleware:
    """Django middleware setting ``request.user`` to the :class:`BetterAuthUser`.

    For an anonymous request (a public route, ``optional=True``) the user is
    the one Django's ``AuthenticationMiddleware`` set before it (its session
    user, when listed first), else ``AnonymousUser`` (Starlette's
    ``UnauthenticatedUser`` where ``django.contrib.auth`` is not installed). ``request.auser()``
    answers the same in async views. Works in sync and async middleware chains.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]
    ) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            # Django then awaits what __call__ returns: get_response's coroutine.
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        """Set ``request.user``, then call the rest of the chain."""
        self._set_user(request)
        return self.get_response(request)

    @staticmethod
    def _set_user(request: HttpRequest) -> None:
        user = better_auth_user(request)
        if user is not None:
            request.user = user
        elif not hasattr(request, "user"):
            request.user = _anonymous()
        chosen = request.user

        async def auser() -> Any:
            return chosen

        request.auser = auser


class _DjangoAdapter:
    """Django views take the request first and return an ``HttpResponse``."""

    types: tuple[type, ...] = (HttpRequest,)
    request_hint: type | None = None

    def answer(self, connection: Any, prepared: ErrorResponse) -> HttpResponse:
        status, headers, body = prepared
        return HttpResponse(
            body,
            status=status,
            headers=header_dict(headers),
        )

    async def deny_websocket(self, connection: Any, prepared: ErrorResponse) -> HttpResponse:
        return self.answer(connection, prepared)  # Django itself serves no websockets

    def current(self) -> None:
        return None


#: The guards' adapter for Django views.
ADAPTER = _DjangoAdapter()
