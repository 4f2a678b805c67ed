"""Upstream servers for the path-confusion test (tests/tests/e2e/path_confusion.rs): two
servers that resolve a request path in different ways, each recording what it served.

    PYTHON upstream.py starlette --port P --log FILE
    PYTHON upstream.py files --port P --root DIR --log FILE

starlette (uvicorn + Starlette, from the MCP interop venv): routes on the percent-DECODED
path without resolving dot segments, so /admin/%2e%2e/mcp reaches the /admin mount:
    /mcp              -> "mcp"        (the endpoint a contract grants)
    /base/mcp         -> "base/mcp"   (the same behind an upstream base path)
    /admin/...        -> "admin"      (must never be reached)
    anything else     -> "other"      (404, but still reached)

files (Python's http.server, SimpleHTTPRequestHandler over --root): unquotes the path and
then removes dot segments (posixpath.normpath), so /pub/..%2Fsecret.txt opens
ROOT/secret.txt, outside /pub.

Each request appends one JSON line to --log when it is answered:
    {"server": "starlette", "served": "admin", "raw_path": "/admin/%2e%2e/mcp", "path": ...,
     "rpc": "tools/call", "tool": "echo", "content_digest_ok": true,
     "identity": [["cada-agent", "did:key:..."]], "x-forwarded-for": ["127.0.0.1"],
     "headers": [["host", "127.0.0.1:..."], ...]}
    {"server": "files", "raw_path": "/pub/..%2Fsecret.txt", "file": "secret.txt", "found": true}
"ready" is printed on stdout once the port listens. SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import threading

_lock = threading.Lock()


def record(log: str, entry: dict) -> None:
    with _lock, open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def body_facts(body: bytes, headers) -> dict:
    """What an MCP server would act on: the JSON-RPC call of the body, whether the body is
    the one its Content-Digest names, the identity and forwarding headers it got (every
    header whose name, lower-cased with `_` read as `-`, starts with `cada-agent`), and the
    headers as received (names lower-cased, values cut at 200 characters)."""
    facts: dict = {"identity": [], "x-forwarded-for": [], "headers": []}
    digest = None
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        facts["headers"].append([name.lower(), value[:200]])
        folded = name.lower().replace("_", "-")
        if folded.startswith("cada-agent"):
            facts["identity"].append([name, value])
        elif folded == "x-forwarded-for":
            facts["x-forwarded-for"].append(value)
        elif folded == "content-digest":
            digest = value
    if body:
        try:
            msg = json.loads(body)
            facts["rpc"] = msg.get("method")
            facts["tool"] = (msg.get("params") or {}).get("name")
        except (ValueError, AttributeError):
            facts["rpc"] = "unreadable"
    want = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    facts["content_digest_ok"] = digest == want
    return facts


def run_starlette(port: int, log: str) -> None:
    import asyncio

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    def endpoint(name: str, status: int = 200):
        async def handle(request):
            body = await request.body()
            entry = {"server": "starlette", "served": name, "method": request.method,
                     "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
                     "path": request.scope["path"]}
            entry.update(body_facts(body, request.scope["headers"]))
            record(log, entry)
            return JSONResponse({"served": name}, status_code=status)

        return handle

    methods = ["GET", "POST", "DELETE"]
    app = Starlette(routes=[
        Route("/mcp", endpoint("mcp"), methods=methods),
        Mount("/base", routes=[Route("/mcp", endpoint("base/mcp"), methods=methods),
                               Route("/{rest:path}", endpoint("other", 404), methods=methods)]),
        Mount("/admin", routes=[Route("/{rest:path}", endpoint("admin"), methods=methods)]),
        Route("/{rest:path}", endpoint("other", 404), methods=methods),
    ])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))

    async def main() -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            if task.done():
                sys.exit(1)
            await asyncio.sleep(0.02)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await task

    asyncio.run(main())


def run_files(port: int, root: str, log: str) -> None:
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = os.path.realpath(root)

    class Handler(SimpleHTTPRequestHandler):
        def send_head(self):
            path = self.translate_path(self.path)
            f = super().send_head()
            record(log, {"server": "files", "method": self.command, "raw_path": self.path,
                         "file": os.path.relpath(os.path.realpath(path), root),
                         "found": f is not None})
            return f

        def log_message(self, *args):  # quiet: the JSON log says it all
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(Handler, directory=root))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    httpd.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["starlette", "files"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--root")
    a = p.parse_args()
    if a.kind == "starlette":
        run_starlette(a.port, a.log)
    else:
        run_files(a.port, a.root, a.log)


if __name__ == "__main__":
    main()
