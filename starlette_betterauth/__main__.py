"""Command line: ``python -m starlette_betterauth`` (see ``_cli``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    from ._cli import run

    code: int = run(sys.argv[1:] if argv is None else argv)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
