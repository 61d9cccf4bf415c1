"""The README's commands and Python examples stay true; it links into the documentation site."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_lines_give_the_demo_and_test_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)


def test_python_examples_compile() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    assert len(blocks) >= 2  # Starlette and FastAPI
    for number, block in enumerate(blocks):
        # Examples may use top-level await, as in an async function's body.
        compile(block, f"README.md python block {number}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_links_into_the_site_name_existing_pages() -> None:
    """The short tour's links into ``docs/`` point at pages (and anchors' pages) that exist."""
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), link
