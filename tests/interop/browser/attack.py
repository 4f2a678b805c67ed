"""Attacks on the owner's approval page that only a real browser can judge (the step-up
review, tests/tests/e2e/stepup_attack.rs): headless Chromium (Selenium 4) with a virtual
WebAuthn authenticator registers a passkey with the one-time code, then

1. opens a request whose tool name, arguments and refusal message are hostile (markup,
   script, bidi override, zero-width and look-alike characters): no script runs, no alert
   opens, and the text the owner reads (innerText) carries no invisible or
   direction-changing character;
2. is sent to a request page by a top-level navigation from another site (a link on
   127.0.0.1, a different site from localhost): the SameSite=Strict session cookie is not
   sent, so the decision buttons are not shown under the owner's cursor (the
   "double-clickjacking" set-up) — the sign-in page is;
3. loads a page on another site that frames the request page: the frame stays empty of
   the page (frame-ancestors 'none', X-Frame-Options DENY).

Prints one JSON object on stdout (`ok`, what was seen); exits non-zero on the first failed
check. Screenshots go to --screenshots (test artifacts, never committed).

Usage: DIR/bin/python attack.py --url http://localhost:PORT --code CODE --hostile ID
    --target ID --screenshots DIR --chromium PATH --chromedriver PATH
"""

import argparse
import http.server
import json
import os
import sys
import threading

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import (
    Protocol,
    Transport,
    VirtualAuthenticatorOptions,
)
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from settle import landed

WAIT = 20
HIDDEN = [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069,
          0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x061C, 0xFEFF]


class Check(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Check(what)


def attacker_site(pages):
    """Serves `pages` (path -> HTML) on 127.0.0.1 (another site than localhost)."""

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "not found").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def no_alert(driver):
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return None
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--code", required=True)
    ap.add_argument("--hostile", required=True, help="id of the hostile request")
    ap.add_argument("--target", required=True, help="id of a pending request")
    ap.add_argument("--screenshots", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = ap.parse_args()
    base = a.url.rstrip("/")
    os.makedirs(a.screenshots, exist_ok=True)
    report = {"ok": False}
    opts = webdriver.ChromeOptions()
    opts.binary_location = a.chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1000", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=a.chromedriver), options=opts)
    site = None
    n = [0]

    def shot(name):
        n[0] += 1
        driver.save_screenshot(os.path.join(a.screenshots, f"{n[0]:02d}-{name}.png"))

    try:
        wait = WebDriverWait(driver, WAIT)
        driver.add_virtual_authenticator(VirtualAuthenticatorOptions(
            protocol=Protocol.CTAP2, transport=Transport.INTERNAL, has_resident_key=True,
            has_user_verification=True, is_user_consenting=True, is_user_verified=True))
        driver.get(f"{base}/signin")
        wait.until(EC.presence_of_element_located((By.ID, "code"))).send_keys(a.code)
        driver.find_element(By.ID, "register").click()
        landed(driver, "requests")

        # 1. The hostile request, as the owner reads it.
        driver.execute_script("window.__pwned = undefined;")
        driver.get(f"{base}/r/{a.hostile}")
        wait.until(EC.presence_of_element_located((By.ID, "approve-once")))
        shot("hostile-request")
        check(no_alert(driver) is None, "an alert opened on the hostile request page")
        check(driver.execute_script("return window.__pwned === undefined && "
                                    "document.querySelectorAll('img,iframe,a[href^=\"http\"]')"
                                    ".length === 0;"),
              "agent markup became elements of the page")
        shown = {k: driver.find_element(By.ID, k).text
                 for k in ("tool", "arguments", "refusal")}
        for k, text in shown.items():
            bad = [hex(ord(c)) for c in text if ord(c) in HIDDEN]
            check(not bad, f"#{k} shows invisible characters {bad}: {text!r}")
        warning = driver.find_elements(By.ID, "warning")
        check(warning and warning[0].is_displayed(), "no warning banner on a disguised request")
        report["shown"] = shown

        # 2. A top-level navigation from another site to a request page.
        pages = {
            "/link": f'<!doctype html><a id="go" href="{base}/r/{a.target}">your parcel</a>',
            "/frame": f'<!doctype html><iframe id="f" src="{base}/r/{a.target}" '
                      'width="800" height="600"></iframe>',
        }
        site = attacker_site(pages)
        other = f"http://127.0.0.1:{site.server_address[1]}"
        driver.get(f"{other}/link")
        wait.until(EC.presence_of_element_located((By.ID, "go"))).click()
        wait.until(lambda d: d.current_url.startswith(base))
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        shot("cross-site-navigation")
        report["cross_site_navigation_landed_on"] = driver.current_url
        check(not driver.find_elements(By.ID, "approve-once"),
              "a cross-site navigation shows the decision buttons (the session cookie went "
              "along)")

        # 3. Framed by another site.
        driver.get(f"{other}/frame")
        frame = wait.until(EC.presence_of_element_located((By.ID, "f")))
        driver.switch_to.frame(frame)
        framed = driver.find_elements(By.ID, "approve-once") + driver.find_elements(By.ID, "code")
        driver.switch_to.default_content()
        shot("framed")
        check(not framed, "the page rendered inside another site's frame")

        report["ok"] = True
    except Check as e:
        report["failed"] = str(e)
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        report["failed"] = f"{type(e).__name__}: {e}"
    finally:
        driver.quit()
        if site:
            site.shutdown()
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
