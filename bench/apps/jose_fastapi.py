"""The FastAPI tutorial pattern with python-jose: an OAuth2 bearer dependency.

``get_current_user`` decodes the token with the public key (PEM, from
``BENCH_RS256_PUBLIC_KEY``) on every request, as the tutorial's code does with
its key constant. RS256 only: python-jose cannot verify EdDSA.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.responses import PlainTextResponse
from fastapi.security import OAuth2PasswordBearer
from jose import JWTError, jwt

PUBLIC_KEY = os.environ["BENCH_RS256_PUBLIC_KEY"]
ALGORITHM = "RS256"
BASE_URL = os.environ["BENCH_BASE_URL"]

app = FastAPI()
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


async def get_current_user(token: Annotated[str, Depends(oauth2_scheme)]) -> dict[str, Any]:
    """The user's claims, or 401."""
    credentials_exception = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        payload: dict[str, Any] = jwt.decode(
            token, PUBLIC_KEY, algorithms=[ALGORITHM], audience=BASE_URL, issuer=BASE_URL
        )
    except JWTError as exc:
        raise credentials_exception from exc
    if payload.get("sub") is None:
        raise credentials_exception
    return payload


@app.get("/hello")
async def hello(user: Annotated[dict[str, Any], Depends(get_current_user)]) -> PlainTextResponse:
    """The endpoint every benchmarked app serves."""
    return PlainTextResponse("hello")
