"""The ``fastapi-betterauth`` package (PyPI), used as its README shows.

Its ``BetterAuth`` dependency fetches keys with PyJWT's ``PyJWKClient`` and
verifies EdDSA tokens in FastAPI's thread pool. The endpoint is ``async`` so
that only the dependency, not the endpoint too, runs in a thread.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from fastapi_betterauth import BetterAuth, User

app = FastAPI()
better_auth = BetterAuth(os.environ["BENCH_BASE_URL"])


@app.get("/hello")
async def hello(user: Annotated[User, Depends(better_auth)]) -> PlainTextResponse:
    """The endpoint every benchmarked app serves."""
    return PlainTextResponse("hello")
