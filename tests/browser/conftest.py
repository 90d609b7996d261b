"""Browser tests: Debian's headless Chromium (`make browser`) driven by Playwright (its own browser
download is never used). Without the browser these tests fail under CI=true and skip loudly
elsewhere, as the docker tests do without an engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The unit tests' helpers: deployments without images, the server in a subprocess.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))

CHROMIUM = os.environ.get("BEPBUILD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM}; run `make browser` (Debian's chromium and chromium-driver)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed; run `make venv` (the test extra)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session."""
    missing = _missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh page; a screenshot of it is left in the test's tmp folder whatever happens."""
    # bypass_csp: the page's CSP (script-src 'self') would refuse the test's own wait_for_function scripts
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    try:
        pg.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
    finally:
        context.close()


@pytest.fixture
def server(bepbuild_home: Path) -> Iterator[Any]:
    from webkit import Server

    s = Server(bepbuild_home, extra_env={"SCORE_DELAY": "0.35"})
    yield s
    s.stop()
