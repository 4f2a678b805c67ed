"""Drives the owner's approval page in headless Chromium (Selenium 4, WebDriver) with a
virtual WebAuthn authenticator: registers a passkey with the one-time code, signs out and in
again, approves one request, denies another, and checks that a page without a session and a
form posted from another site are refused. Screenshots go to --screenshots (test artifacts,
never committed). Prints one JSON object on stdout; exits non-zero on the first failed check.

Usage (install.sh prints the two paths):
  DIR/bin/python approval.py --url http://localhost:PORT --code CODE --approve ID --deny ID \
      [--csrf-target ID] --screenshots DIR --chromium /usr/bin/chromium --chromedriver /usr/bin/chromedriver
"""

import argparse
import http.server
import json
import os
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import (
    Protocol,
    Transport,
    VirtualAuthenticatorOptions,
)
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from settle import landed, retried

WAIT = 20  # seconds for any one page change


class Check(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Check(what)


def start_attacker(target_url, csrf_guess):
    """A page on another site (127.0.0.1 is not localhost's site) with a form that posts a
    decision to the approval page."""
    page = (
        "<!doctype html><html><body><h1>Win a prize</h1>"
        f'<form id="evil" method="post" action="{target_url}">'
        f'<input type="hidden" name="csrf" value="{csrf_guess}">'
        '<input type="hidden" name="action" value="once">'
        '<button id="go" type="submit">Claim</button></form></body></html>'
    ).encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the page's public URL, http://localhost:PORT")
    ap.add_argument("--code", required=True, help="the one-time registration code")
    ap.add_argument("--approve", required=True, help="id of the request to approve once")
    ap.add_argument("--deny", required=True, help="id of the request to deny")
    ap.add_argument(
        "--csrf-target",
        help="id of a pending request the cross-site form tries to approve (default: --approve)",
    )
    ap.add_argument("--screenshots", required=True, help="directory for the screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = ap.parse_args()
    base = a.url.rstrip("/")
    os.makedirs(a.screenshots, exist_ok=True)
    shots = []
    steps = []
    t0 = time.monotonic()

    opts = webdriver.ChromeOptions()
    opts.binary_location = a.chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # runs as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        opts.add_argument(arg)
    # The test's own driver binary: Selenium Manager never downloads one.
    driver = webdriver.Chrome(service=Service(executable_path=a.chromedriver), options=opts)
    attacker = None
    try:
        wait = WebDriverWait(driver, WAIT)

        def shot(name):
            path = os.path.join(a.screenshots, f"{len(shots) + 1:02d}-{name}.png")
            driver.save_screenshot(path)
            shots.append(path)

        def step(name):
            steps.append({"step": name, "at_s": round(time.monotonic() - t0, 3)})


        driver.add_virtual_authenticator(
            VirtualAuthenticatorOptions(
                protocol=Protocol.CTAP2,
                transport=Transport.INTERNAL,
                has_resident_key=True,
                has_user_verification=True,
                is_user_consenting=True,
                is_user_verified=True,
            )
        )
        step("browser started")

        # 1. No session: the request page is not shown; the sign-in page is.
        driver.get(f"{base}/r/{a.approve}")
        wait.until(EC.presence_of_element_located((By.ID, "code")))
        check("/signin" in driver.current_url, f"no-session GET landed on {driver.current_url}")
        check(not driver.find_elements(By.ID, "agent-did"), "request shown without a session")
        shot("no-session-redirected-to-signin")
        step("no-session GET refused")

        # 2. Register the first passkey with the one-time code; lands on the request.
        driver.find_element(By.ID, "code").send_keys(a.code)
        driver.find_element(By.ID, "register").click()
        landed(driver, "agent-did")
        check(driver.current_url.endswith(f"/r/{a.approve}"), driver.current_url)
        creds = retried(driver.get_credentials)
        check(len(creds) == 1, f"{len(creds)} credentials in the authenticator")
        shot("registered-request-page")
        step("registered")

        # 3. Sign out, then sign in with the passkey.
        driver.find_element(By.ID, "signout").click()
        wait.until(EC.presence_of_element_located((By.ID, "signin")))
        driver.find_element(By.ID, "signin").click()
        landed(driver, "requests")
        rows = driver.find_elements(By.CSS_SELECTOR, "#requests a.request")
        hrefs = [r.get_attribute("href") for r in rows]
        check(any(h.endswith(f"/r/{a.approve}") for h in hrefs), f"rows: {hrefs}")
        check(any(h.endswith(f"/r/{a.deny}") for h in hrefs), f"rows: {hrefs}")
        shot("signed-in-list")
        step("signed in")

        # 4. Approve once.
        driver.get(f"{base}/r/{a.approve}")
        wait.until(EC.presence_of_element_located((By.ID, "approve-once")))
        shown = {
            k: driver.find_element(By.ID, k).text
            for k in ("agent-did", "measurement", "contract", "tool", "arguments", "refusal")
        }
        shot("request-to-approve")
        driver.find_element(By.ID, "approve-once").click()
        result = wait.until(EC.presence_of_element_located((By.ID, "result")))
        check("approved" in result.get_attribute("class"), f"approve: {result.text}")
        shot("approved")
        step("approved")

        # 5. Deny the other one.
        driver.get(f"{base}/r/{a.deny}")
        wait.until(EC.presence_of_element_located((By.ID, "deny")))
        shot("request-to-deny")
        driver.find_element(By.ID, "deny").click()
        result = wait.until(EC.presence_of_element_located((By.ID, "result")))
        check("denied" in result.get_attribute("class"), f"deny: {result.text}")
        shot("denied")
        step("denied")

        # 6. A form posted from another site, with the session cookie in the browser.
        attacker = start_attacker(f"{base}/r/{a.csrf_target or a.approve}", "guess")
        driver.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
        wait.until(EC.presence_of_element_located((By.ID, "go"))).click()
        code = wait.until(EC.presence_of_element_located((By.ID, "error-code")))
        check(code.text == "web.csrf", f"cross-site POST answered {code.text!r}")
        shot("cross-site-post-refused")
        step("cross-site POST refused")

        # 7. Sign out: the list is gone again.
        driver.get(f"{base}/")
        wait.until(EC.presence_of_element_located((By.ID, "signout"))).click()
        wait.until(EC.presence_of_element_located((By.ID, "signin")))
        driver.get(f"{base}/r/{a.deny}")
        wait.until(EC.presence_of_element_located((By.ID, "code")))
        check(not driver.find_elements(By.ID, "agent-did"), "request shown after sign-out")
        step("signed out")

        out = {
            "ok": True,
            "steps": steps,
            "shown": shown,
            "screenshots": shots,
            "browser": driver.capabilities.get("browserVersion"),
            "seconds": round(time.monotonic() - t0, 3),
        }
        print(json.dumps(out))
        return 0
    except Exception as e:  # report every failure the same way, with a last screenshot
        try:
            path = os.path.join(a.screenshots, "zz-failure.png")
            driver.save_screenshot(path)
            shots.append(path)
            page = driver.page_source[:4000]
        except Exception:
            page = ""
        print(
            json.dumps(
                {
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}",
                    "url": driver.current_url,
                    "page": page,
                    "steps": steps,
                    "screenshots": shots,
                }
            )
        )
        return 1
    finally:
        if attacker is not None:
            attacker.shutdown()
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
