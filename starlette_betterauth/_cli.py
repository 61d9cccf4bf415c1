"""The command line (placeholder until its subcommands land)."""

from __future__ import annotations

__all__ = ["run"]


def run(argv: list[str]) -> int:
    """Run the command line with ``argv``; return the exit code."""
    return 0
