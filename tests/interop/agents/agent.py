"""A small agent that knows nothing of CADA (tests/tests/e2e/secrets_agents.rs).

It reads its API base URLs and tokens from the environment, as SDKs do, and calls them with
Python's own HTTP client (urllib), the token in `Authorization` as GitHub's and Stripe's
SDKs send it. `cada-parent run` gives it base URLs at the local secrets endpoint and
placeholders (cada:NAME) instead of tokens.

    agent.py calls         the calls below; prints one JSON line {env, <call>: {status, body}}
                           and exits with $AGENT_EXIT (default 0)
    agent.py get URL_VAR TOKEN_VAR PATH...
                           GET $URL_VAR/PATH with "Authorization: Bearer $TOKEN_VAR" for each
                           PATH; prints one JSON line [{status, body}, ...]
    agent.py wait          prints "waiting", exits 42 on SIGTERM
    agent.py touch FILE    writes FILE (to show it started)
"""
import base64
import json
import os
import signal
import sys
import urllib.error
import urllib.request


def call(method, url, authorization, body=None):
    req = urllib.request.Request(url, method=method, data=body)
    req.add_header("Authorization", authorization)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return {"status": r.status, "body": r.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode("utf-8", "replace")}


def calls():
    gh, gh_token = os.environ["GITHUB_API_URL"], os.environ["GITHUB_TOKEN"]
    st, st_key = os.environ["STRIPE_API_BASE"], os.environ["STRIPE_API_KEY"]
    basic = base64.b64encode(f"x-access-token:{gh_token}".encode()).decode()
    out = {
        "env": dict(os.environ),
        "github": call("GET", f"{gh}/repos/acme/app/issues?state=open", f"Bearer {gh_token}"),
        "stripe": call("POST", f"{st}/v1/charges", f"Bearer {st_key}", b'{"amount":100}'),
        # GitHub's placeholder sent to Stripe's endpoint, three ways.
        "elsewhere_header": call("GET", f"{st}/v1/charges", f"Bearer {gh_token}"),
        "elsewhere_basic": call("GET", f"{st}/v1/charges", f"Basic {basic}"),
        "elsewhere_body": call(
            "POST", f"{st}/v1/charges", f"Bearer {st_key}",
            json.dumps({"source": gh_token}).encode(),
        ),
    }
    print(json.dumps(out), flush=True)
    sys.exit(int(os.environ.get("AGENT_EXIT", "0")))


def wait():
    def on_term(_sig, _frame):
        print("got SIGTERM", flush=True)
        sys.exit(42)

    signal.signal(signal.SIGTERM, on_term)
    print("waiting", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    if sys.argv[1] == "calls":
        calls()
    elif sys.argv[1] == "get":
        base, token = os.environ[sys.argv[2]], os.environ[sys.argv[3]]
        print(json.dumps([call("GET", f"{base}{p}", f"Bearer {token}") for p in sys.argv[4:]]))
    elif sys.argv[1] == "wait":
        wait()
    elif sys.argv[1] == "touch":
        with open(sys.argv[2], "w") as f:
            f.write("started")
