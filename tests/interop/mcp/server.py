"""MCP test server for the CADA interop test, built on the official MCP Python SDK.

    DIR/bin/python tests/interop/mcp/server.py --port P [--json] [--stateless]

Written against mcp==2.3.0 (see install.sh), where the high-level server is
`mcp.server.mcpserver.MCPServer` (it was called FastMCP in mcp 1.x).

Transport: streamable HTTP at http://127.0.0.1:P/mcp.
  * default: SSE responses, STATEFUL (the SDK default): the reply to
    `initialize` carries an `Mcp-Session-Id` header, later requests must send it,
    the client may open a GET /mcp SSE stream and ends with DELETE /mcp.
  * --json: `json_response=True`, so each POST is answered with one
    application/json body instead of an SSE stream. Still STATEFUL (session ids
    as above); GET /mcp is still served as an SSE stream by the SDK.
  * --stateless: `stateless_http=True`: no session ids, so the SDK client
    opens no GET stream and sends no DELETE (a GET sent by hand is still
    answered 200 with an idle SSE stream).
  Independently of these flags, the SDK routes any request whose
  `MCP-Protocol-Version` header is a 2026-era version (2026-07-28) to its
  "modern" single-exchange handler: no initialize, no session id, and
  `Mcp-Method` / `Mcp-Name` headers that must match the JSON body. The SDK's
  own client does that by default (it probes `server/discover` first).

DNS-rebinding protection is the SDK default for a 127.0.0.1 bind: the Host
header must be 127.0.0.1:*, localhost:* or [::1]:* (else 421), and an Origin
header, if any, must be http://127.0.0.1:* / localhost / [::1] (else 403).

Tools: echo(text) -> text, add(a, b) -> a + b, delete_all() -> "deleted".

Every HTTP request is logged to stderr as one JSON line, written when the
response starts (other stderr lines, SDK warnings and tracebacks, are not
JSON: pick the lines starting with "{"), e.g.
    {"method": "POST", "path": "/mcp", "status": 200, "cada-agent": "..."}
with every request header whose name starts with `cada-` (lowercased), plus the
MCP routing headers (mcp-session-id, mcp-protocol-version, mcp-method,
mcp-name) when present. "ready" is printed on stdout once the port listens.
SIGTERM/SIGINT shut it down cleanly (exit 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import asyncio
import json
import signal
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

SERVER_NAME = "cada-interop-server"
MCP_HEADERS = ("mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name")


def build_server() -> MCPServer:
    # WARNING keeps the SDK's INFO chatter ("Created new transport ...") off
    # stderr, so stderr is mostly the JSON request lines; the SDK's warnings
    # (e.g. "Invalid Host header") still appear, as plain text lines.
    server = MCPServer(SERVER_NAME, version="1.0.0", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def delete_all() -> str:
        """A dangerous tool that a CADA contract is not expected to grant."""
        return "deleted"

    @server.tool()
    def whoami() -> str:
        """The agent cada-gate verified (with --cada-middleware), else "anonymous"."""
        from mcp.server.auth.middleware.auth_context import get_access_token

        token = get_access_token()
        return token.client_id if token else "anonymous"

    return server


class HeaderLog:
    """Tiny ASGI middleware: one JSON line on stderr per HTTP request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = {"method": scope["method"], "path": scope["path"]}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name.startswith("cada-") or name in MCP_HEADERS:
                value = raw_value.decode("latin-1")
                # A repeated header is kept as a list, so duplicates are visible.
                if name in entry:
                    prev = entry[name]
                    entry[name] = (prev if isinstance(prev, list) else [prev]) + [value]
                else:
                    entry[name] = value
        logged = False

        def log(status):
            nonlocal logged
            if not logged:
                logged = True
                entry["status"] = status
                sys.stderr.write(json.dumps(entry) + "\n")
                sys.stderr.flush()

        async def send_logged(message):
            if message["type"] == "http.response.start":
                log(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            log(None)  # no response was started (client gone, or the app failed)


def _after_shutdown(signum, frame) -> None:
    """Signal handler uvicorn's re-raised SIGTERM/SIGINT lands on: nothing to do."""


async def serve(args) -> None:
    mcp_server = build_server()
    app = mcp_server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=args.json,
        stateless_http=args.stateless,
        host=args.host,
    )
    if args.cada_middleware:
        # clients/python: the gate's verified agent becomes the SDK's authenticated user.
        sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "clients" / "python"))
        from cada_mcp import CadaGateMiddleware

        app = CadaGateMiddleware(app)
    config = uvicorn.Config(
        HeaderLog(app),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # An open GET /mcp SSE stream must not hold up SIGTERM for long.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    # uvicorn handles SIGTERM/SIGINT itself (graceful shutdown, lifespan
    # shutdown included) and then re-raises the captured signal against the
    # handler that was installed before serve(). The default SIGTERM action
    # would then kill the process by signal; a no-op handler here turns that
    # into a normal exit 0 once serve() returns.
    signal.signal(signal.SIGTERM, _after_shutdown)
    signal.signal(signal.SIGINT, _after_shutdown)

    watcher = asyncio.ensure_future(announce())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    if not server.started:
        # Bind failure and the like: uvicorn has logged the reason already.
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--json", action="store_true", help="JSON responses instead of SSE")
    parser.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id (default: stateful)")
    parser.add_argument("--cada-middleware", action="store_true",
                        help="wrap the app in clients/python's CadaGateMiddleware (requests must come through cada-gate)")
    args = parser.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
