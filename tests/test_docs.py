"""The documentation site in ``docs/``: built strict, its examples compile, and its pages render.

The fast tests read the Markdown: every error class has its troubleshooting entry, every
Python example compiles, every page is in the navigation. The browser test builds the site
with ``mkdocs build --strict``, serves it on 127.0.0.1 and has Debian's chromium (driven by
Playwright, as in ``test_demo.py``) take a screenshot of a few pages, checking that each
renders: found, titled, with content and the API reference generated from the docstrings.
Set ``DOCS_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import ast
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import CHROMIUM, CHROMIUM_ARGS

from starlette_betterauth import credentials, errors

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Pages screenshotted, and a text each must show once rendered.
PAGES = {
    "": "Where to go next",
    "quickstart/": "What the handler gets",
    "credential-kinds/": "The decision table",
    "configuration/": "Public routes",
    "better-auth/": "OAuth access tokens, DPoP and MCP",
    "frameworks/": "Litestar",
    "guards/": "insufficient_scope",
    "testing/": "DPoPKey",
    "deployment/": "Readiness",
    "security/": "Revocation bounds",
    "troubleshooting/": "InvalidIssuerError",
    "compatibility/": "The matrix CI runs",
    "faq/": "Look-alike",
    "reference/": "BetterAuthMiddleware",
    "reference/credentials/": "AccessToken",
    "reference/mcp/": "BetterAuthTokenVerifier",
}


def markdown_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def test_every_error_class_has_a_troubleshooting_entry() -> None:
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `(\w+)`$", page, re.MULTILINE))
    assert headings == set(errors.__all__)


def test_every_page_is_in_the_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s+([\w/-]+\.md)$", config, re.MULTILINE))
    assert listed == {str(page.relative_to(DOCS)) for page in markdown_pages()}


def test_python_examples_compile() -> None:
    count = 0
    for page in markdown_pages():
        text = page.read_text(encoding="utf-8")
        # Fences inside tabs are indented; dedent each block by its fence's indentation.
        for indent, block in re.findall(r"^( *)```python\n(.*?)^\1```", text, re.M | re.S):
            source = "\n".join(line[len(indent) :] for line in block.splitlines())
            compile(source, f"{page.name} python block", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            count += 1
    assert count >= 20


def python_blocks(page: str) -> list[str]:
    """The ``python`` fences of one page, dedented."""
    text = (DOCS / page).read_text(encoding="utf-8")
    found = re.findall(r"^( *)```python\n(.*?)^\1```", text, re.M | re.S)
    return [
        "\n".join(line[len(indent) :] for line in block.splitlines()) for indent, block in found
    ]


def test_testing_kit_example_passes_under_pytest(tmp_path: Path) -> None:
    """The testing page's module runs as a user's own test file, with the package's fixtures."""
    (example,) = [block for block in python_blocks("testing.md") if "def test_" in block]
    (tmp_path / "test_example.py").write_text(example + "\n", encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "error"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+ passed in ", result.stdout, re.MULTILINE), result.stdout


def test_every_public_module_has_a_reference_page() -> None:
    """Each public module of the package (no leading underscore) is documented by a page."""
    package = ROOT / "starlette_betterauth"
    modules = {p.stem for p in package.glob("*.py") if not p.name.startswith("_")}
    modules -= {"middleware"}  # its one public name is documented from the package root
    reference = "".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))
    for module in sorted(modules):
        assert f"::: starlette_betterauth.{module}" in reference, module


def test_credentials_reference_lists_every_public_kind() -> None:
    page = (DOCS / "reference" / "credentials.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+- (\w+)$", page, re.MULTILINE))
    assert listed == set(credentials.__all__)


def test_makefile_serves_and_builds_the_docs() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^docs:", makefile, re.MULTILINE)
    assert "mkdocs serve -a 127.0.0.1:8001" in makefile
    assert re.search(r"^docs-build:.*\n(\t.*\n)*\t.*mkdocs build --strict", makefile, re.M)


def require(path: str, what: str) -> None:
    """Skip without ``path`` (fail when ``BETTER_AUTH_REQUIRE_SERVER=1``, as in CI)."""
    if os.path.exists(path):
        return
    if os.environ.get("BETTER_AUTH_REQUIRE_SERVER") == "1":
        pytest.fail(f"{what} is missing: {path}", pytrace=False)
    pytest.skip(f"{what} is missing: {path}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built strict into a temporary folder, served on 127.0.0.1; yields its URL."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    require(mkdocs or "mkdocs", "mkdocs (the dev dependencies)")
    folder = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the built site without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.mark.browser
def test_pages_render_in_chromium(site: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    require(CHROMIUM, "Debian's chromium (`make chromium` installs it)")
    keep = os.environ.get("DOCS_SCREENSHOT_DIR")
    shots = Path(keep) if keep else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors_seen: list[str] = []
            page.on("pageerror", lambda error: errors_seen.append(str(error)))
            for path, expected in PAGES.items():
                response = page.goto(site + path)
                assert response is not None
                assert response.status == 200, path
                title = page.title()
                assert "404" not in title, (path, title)
                assert "starlette-betterauth" in title, (path, title)
                article = page.locator("article")
                assert len(article.inner_text().strip()) > 500, path
                assert expected in article.inner_text(), (path, expected)
                name = (path.strip("/").replace("/", "-") or "index") + ".png"
                page.screenshot(path=str(shots / name), full_page=False)
                assert (shots / name).stat().st_size > 10_000, name
            # The generated reference: a heading per documented object, from the docstrings.
            page.goto(site + "reference/errors/")
            heading = page.locator('[id="starlette_betterauth.errors.ExpiredTokenError"]')
            assert heading.count() == 1
            assert "exp is in the past" in heading.locator("xpath=..").inner_text()
            missing = page.goto(site + "no-such-page/")
            assert missing is not None
            assert missing.status == 404
            assert errors_seen == []
        finally:
            browser.close()
