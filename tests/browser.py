"""Headless Chromium for the browser tests: Debian's chromium and chromium-driver, offline, console logged.

The tests install nothing: where /usr/bin/chromium or /usr/bin/chromedriver is missing they are skipped with
``SKIP_REASON``.
"""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AVAILABLE = CHROMIUM.is_file() and CHROMEDRIVER.is_file()
SKIP_REASON = ("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
               "apt-get install -y chromium chromium-driver")

# Without the background-networking flags Chromium keeps dialling Google services, which a closed network
# refuses (and which a test has no business doing).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]
TIMEOUT = 60  # seconds; generous because the test machine's cores are shared


def make_driver(profile: Path, downloads: Path | None = None):
    """A headless Chromium driven by chromedriver, keeping the browser console for ``driver.get_log``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    return driver
