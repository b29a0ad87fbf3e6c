"""Headless Chromium for tests that look at pages (Debian's chromium and chromium-driver, via selenium)."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser():
    """A headless Chromium WebDriver; skips the test when none is installed (CI requires one)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        selenium_missing = True
    else:
        selenium_missing = False
    if selenium_missing or not CHROMIUM or not CHROMEDRIVER:
        reason = "needs selenium and Debian's chromium + chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("LATENTSEARCH_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = Options()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for console_errors
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1200, 900)
    return driver


def console_errors(driver) -> list[str]:
    """The page's console errors since the last call (a failed fetch, a 404 favicon, a script error)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def in_viewport(driver, selector: str) -> bool:
    """Whether the first element matching ``selector`` is shown whole inside the window, as the user sees it."""
    return driver.execute_script(
        """const e = document.querySelector(arguments[0]);
        if (!e || !e.getClientRects().length) return false;
        const r = e.getBoundingClientRect();
        return r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth;""",
        selector,
    )
