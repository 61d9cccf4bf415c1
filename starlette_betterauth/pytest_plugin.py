"""pytest fixtures for apps that use starlette-betterauth (loaded automatically by pytest).

``betterauth_issuer`` mints Better Auth-shaped tokens and sessions;
``betterauth_jwks_server`` serves its key set and answers get-session on
127.0.0.1, and is stopped after the test; ``betterauth_session`` is a session
of that issuer::

    def test_me(betterauth_jwks_server, betterauth_issuer):
        app = make_app(base_url=betterauth_jwks_server.url)
        token = betterauth_issuer.token(role="admin")

    def test_browser(betterauth_jwks_server, betterauth_issuer, betterauth_session):
        cookies = betterauth_issuer.session_cookies(betterauth_session)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import Issuer, JWKSServer, TestSession

__all__ = ["betterauth_issuer", "betterauth_jwks_server", "betterauth_session"]


@pytest.fixture
def betterauth_issuer() -> Issuer:
    """An :class:`~starlette_betterauth.testing.Issuer` with one EdDSA key."""
    return Issuer()


@pytest.fixture
def betterauth_jwks_server(betterauth_issuer: Issuer) -> Iterator[JWKSServer]:
    """A running :class:`~starlette_betterauth.testing.JWKSServer` for ``betterauth_issuer``."""
    with JWKSServer(betterauth_issuer) as server:
        yield server


@pytest.fixture
def betterauth_session(betterauth_issuer: Issuer) -> TestSession:
    """A session of ``betterauth_issuer`` (role ``user``, seven days), as after sign-in."""
    return betterauth_issuer.session()
