#!/usr/bin/env bash
# Install the official MCP Python SDK (PyPI `mcp`), pinned, into DIR for the end-to-end
# interop test (server.py / client.py beside this file). Usage: tests/interop/mcp/install.sh DIR
# Run them with DIR/bin/python. How it installs: ../pip-install.sh.
#
# Note: mcp 2.x depends on `httpx2` (the httpx fork), not `httpx`; httpx is not used by the SDK
# at this version, so httpx2 is what is pinned.
set -euo pipefail
export NAME=tests/interop/mcp/install.sh
export PINS="mcp==2.3.0 mcp-types==2.3.0 uvicorn==0.54.0 httpx2==2.16.2 httpcore2==2.16.2 starlette==1.10.0 anyio==4.16.0 sse-starlette==3.7.0"
export MARK=.cada-mcp-interop
export WHAT="MCP SDK"
export CHECK='import mcp, mcp.client.streamable_http, mcp.server.mcpserver, uvicorn, httpx2'
exec bash "$(dirname -- "$0")/../pip-install.sh" "$@"
