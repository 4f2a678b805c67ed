"""Waiting out a navigation that a page's own script starts (webauthn.js ends each ceremony
with location.assign). ChromeDriver aborts a command sent while such a navigation is still
loading ("aborted by navigation: Inspected target navigated or closed"), even after the new
page's elements are present; on a loaded 2-core machine that window is wide enough to be hit.
Shared by approval.py and attack.py (both run as scripts from this directory)."""

import time

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

ABORTED = "aborted by navigation"


def landed(driver, element_id, timeout=20.0):
    """Waits until the page that has `element_id` has finished loading, riding out commands
    aborted by the navigation on the way; returns the element."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = driver.find_elements(By.ID, element_id)
            if found and driver.execute_script("return document.readyState") == "complete":
                return found[0]
        except WebDriverException as e:
            if ABORTED not in str(e):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"no loaded page with #{element_id} after {timeout} s")
        time.sleep(0.05)


def retried(run, timeout=20.0):
    """`run()`, sent again while it is aborted by a navigation (it must be safe to repeat)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return run()
        except WebDriverException as e:
            if ABORTED not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.05)
