"""FastAPI with no authentication: what FastAPI itself costs, for context."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/hello")
async def hello() -> PlainTextResponse:
    """The endpoint every benchmarked app serves."""
    return PlainTextResponse("hello")
