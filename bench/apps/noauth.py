"""The baseline: the same Starlette app with no authentication at all."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    """The endpoint every benchmarked app serves."""
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/hello", hello)])
