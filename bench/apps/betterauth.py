"""The baseline app behind this package's middleware, configured as a user would.

``BENCH_TOKEN_CACHE_SIZE`` sets the verified-token cache (default 10,000).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware

from .noauth import hello

app = Starlette(
    routes=[Route("/hello", hello)],
    middleware=[
        Middleware(
            BetterAuthMiddleware,
            base_url=os.environ["BENCH_BASE_URL"],
            token_cache_size=int(os.environ.get("BENCH_TOKEN_CACHE_SIZE", "10000")),
            warm_on_startup=True,
        )
    ],
)
