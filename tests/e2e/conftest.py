"""The browser that reads the servers' pages: the system's chromium, driven by Playwright.

`browser_page` is a fresh page in a wide window of the chromium installed on the machine
(Playwright downloads no browser of its own here); where chromium is missing, the tests
that read pages skip. When such a test fails, a screenshot of its page is saved under
pytest's temporary folder and its path is printed with the failure.

Playwright runs for each page test alone, never for the session: while its sync API runs,
the thread counts as inside a running event loop, and Prefect's functions that are both
sync and async (`run_deployment`) then hand back coroutines to a module fixture that drives
the loop. That is also why pytest-playwright's `page` is not used (its Playwright lives for
the session; and it parametrizes each test by a session-scoped browser name, which makes
pytest run the page tests after every other test of their module, so that the module's
parametrized fixtures would be set up a second time).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium")
# --no-sandbox: chromium refuses to run as root with its sandbox. The rest keeps it from
# reaching out by itself (updates, sync, QUIC probes): the test machines are offline.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Narrower, Prefect's deployments table hides a long schedule as "+1".
WINDOW = {"width": 1920, "height": 1080}
# The UIs are single-page apps that render after they load, on a CI machine that is
# running the loop's servers at the same time: give their text this long to appear.
PAGE_TIMEOUT_MS = 60_000
SCREENSHOT = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system's chromium (a skip where it is not installed)."""
    if CHROMIUM is None:
        pytest.skip("the page tests need chromium: install it with `apt-get install chromium`")
    return CHROMIUM


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where failing page tests leave a picture of their page."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def browser_page(
    chromium: str, screenshots: Path, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A page of a headless chromium of its own, waiting up to PAGE_TIMEOUT_MS for text."""
    name = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-")
    request.node.stash[SCREENSHOT] = screenshots / f"{name}.png"
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport=WINDOW)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """After a page test fails (its page still open), save the page and say where."""
    report = yield
    path = item.stash.get(SCREENSHOT, None)
    page = getattr(item, "funcargs", {}).get("browser_page")
    if report.when != "call" or not report.failed or path is None or page is None:
        return report
    try:
        page.screenshot(path=path, full_page=True)
        report.sections.append(("screenshot", f"the page as it failed: {path}"))
    except PlaywrightError as error:  # the browser itself went: the failure says enough
        report.sections.append(("screenshot", f"none taken: {error.message}"))
    return report
