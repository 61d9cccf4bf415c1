"""The apps the HTTP benchmark serves with uvicorn, one per way of authenticating.

Each answers ``GET /hello`` with the same short text, reads its settings from
environment variables set by ``bench/http_load.py`` (``BENCH_BASE_URL``: the Better
Auth base URL, whose ``/api/auth/jwks`` serves the keys), and is served as
``uvicorn apps.<module>:app --app-dir bench``.
"""
