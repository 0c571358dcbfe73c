"""Debian's headless Chromium, driven by Playwright for Python: one launcher for every
browser test (the Keycloak pages, the portals).

Playwright's own browser download is not used (it could not be fetched here, and CI must test
the browser the machine has): `executable_path` is Debian's /usr/bin/chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

from tests.helpers import require_tool

# Headless Chromium as root on a machine without a network: no sandbox (root), no GPU, and
# none of the background connections that fail and slow the start down.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's headless chromium driven by Playwright; a fresh profile per launch."""
    executable = require_tool("chromium", "chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_ARGS, chromium_sandbox=False)
        try:
            yield browser
        finally:
            browser.close()
