"""MkDocs hook: the package's docstrings use a few reStructuredText habits; render them cleanly.

Sphinx-style roles (``:class:`~pkg.Name```) become plain code naming the object, and a
paragraph ending in ``::`` before a code block ends in one colon, so the generated API
reference reads as the docstrings mean it, without touching them.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):<code>(~?)([^<]+)</code>")
_LITERAL_BLOCK = re.compile(r"::</p>")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Rewrite the rendered page's leftover reStructuredText markup."""
    return _LITERAL_BLOCK.sub(":</p>", _ROLE.sub(_role, html))
