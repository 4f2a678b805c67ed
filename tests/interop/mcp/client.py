"""MCP test client for the CADA interop test, built on the official MCP Python SDK.

    DIR/bin/python tests/interop/mcp/client.py URL [--list] [--call TOOL:JSONARGS ...]
        [--mode auto|legacy|2026-07-28] [--header NAME:VALUE ...] [--timeout 30]

Written against mcp==2.3.0 (see install.sh). Output: ONE JSON document on
stdout, exit 0 whatever happened (2 only for bad command-line arguments):
  {"initialize": {"ok": true, "server": NAME, "protocol_version": V, "mode": M},
   "tools": [names]                      (with --list; null + "list_error" on failure)
   "calls": [{"tool": T, "ok": true, "result": TEXT}
           | {"tool": T, "ok": false, "error": MESSAGE, "code": JSONRPC_CODE, "data": ...}
           | {"tool": T, "ok": false, "error": TEXT, "is_error": true}   (the tool itself failed)
           | {"tool": T, "ok": false, "error": "timeout"}]}
  or {"initialize": {"ok": false, "error": MESSAGE[, "code": C]}} when the connect fails.
"error" is the SDK exception's message verbatim (MCPError.message, i.e. the
JSON-RPC error.message); a failure raised by the transport itself (not a
JSON-RPC error) carries "type" (the exception class) and "transport": true.
--timeout (30 s) bounds the whole run; the step in progress and all later ones
are then recorded as {"ok": false, "error": "timeout"}.

--mode: mcp 2.x's `Client(url)` does NOT start with `initialize` by default
(mode "auto"): it first POSTs `server/discover` with `MCP-Protocol-Version:
2026-07-28` (+ `Mcp-Method`, and `Mcp-Name` on tools/call). A 2.x SDK server
answers it and the whole connection runs on the 2026-07-28 wire: no
initialize, no Mcp-Session-Id, no GET stream, no DELETE, one POST per request.
Any JSON-RPC error to the probe (incl. a 4xx with a JSON-RPC body, or a bare
4xx/5xx, see below) makes it fall back to the classic `initialize` handshake
(protocol 2025-11-25). `--mode legacy` forces the handshake. Under "initialize"
this script reports whichever handshake happened.

FINDINGS - how mcp 2.3.0's streamable HTTP client transport
(mcp/client/streamable_http.py, StreamableHTTPTransport._handle_post_request)
treats the answer to a tools/call POST. Every case below resolves only that one
request: the call raises MCPError, the session stays usable, and later calls
work (checked against a fake endpoint, in both modes):
 (a) HTTP 200, Content-Type application/json, JSON-RPC error body: the body is
     handed to the session as is; the call raises MCPError with the body's
     code/message/data verbatim. The body's "id" is NOT rewritten here: it must
     equal the request's id. With "id": null (or any other id) the answer
     matches no request and is dropped, and the call hangs until the caller's
     own timeout (here: the run's deadline, recorded as "timeout"). When the
     200 answer is an SSE stream instead (text/event-stream, the default of a
     stateful SDK server), the error event's id IS replaced by the request's,
     so "id": null works there.
 (b) HTTP 401/403 (any status >= 400, incl. 400/404/5xx) whose Content-Type
     starts with application/json and whose body is a JSON-RPC error: the
     error is surfaced verbatim (code/message/data), its "id" replaced by the
     request's id, so "id": null is fine here. 401 gets no special treatment
     unless the app configured an OAuth provider (httpx2 auth). Without such a
     body (text/plain, empty, or JSON that is not a JSON-RPC error):
     MCPError(-32603, "Server returned an error response"), except 404:
     MCPError(-32600, "Session terminated") once a session id is held, else
     MCPError(-32601, "Not Found").
 (c) HTTP 502: as (b): a JSON-RPC error body is surfaced verbatim; anything
     else gives MCPError(-32603, "Server returned an error response").
 Also: 202 to a request -> MCPError(-32600, "server answered a request with 202
 Accepted"); a connection closed without any response (httpx2
 RemoteProtocolError) is NOT turned into an MCPError: it tears the whole
 session down (the remaining calls are reported with the same error here).
 A redirect leaving the endpoint's origin is not followed (-32600).
 Implicit tools/list: after a successful tools/call the SDK validates the
 result against the tool's output schema, and when it has not listed that
 tool yet it sends tools/list first. If that tools/list is refused, the
 call_tool raises the tools/list error although the tool DID run. A contract
 that grants tools/call should grant tools/list too.
 2026-07-28 wire: an error code -32020 (HEADER_MISMATCH) makes call_tool
 re-list and resend once; a gate should not use that code for refusals.

Session id and GET stream (classic handshake, stateful server): the client
takes Mcp-Session-Id only from the response to `initialize` (any case), and
sends it on every later POST, on the GET and on the closing DELETE, together
with MCP-Protocol-Version. Right after POSTing notifications/initialized, and
only if it holds a session id, it opens GET /mcp (Accept: text/event-stream)
in the background. If that GET fails (405, 404, any non-2xx, or not an event
stream) it retries once after 1 s and then gives up silently (debug log
only); the session works without it. If the stream opens and later ends
cleanly, it reconnects (after 1 s or the SSE retry value), with Last-Event-ID
when events had ids. On exit it sends DELETE with the session id (405 is
accepted quietly). A stateless server sends no session id: no GET, no DELETE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from contextlib import AsyncExitStack

import anyio
from mcp import Client, Implementation, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

_print_lock = threading.Lock()
_printed = False


def emit(doc: dict) -> None:
    """Print the one JSON document, at most once (the watchdog may race the normal path)."""
    global _printed
    with _print_lock:
        if _printed:
            return
        _printed = True
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()


def leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failure(exc: BaseException) -> dict:
    exc = leaf(exc)
    if isinstance(exc, MCPError):
        out = {"ok": False, "error": exc.message, "code": exc.code}
        if exc.data is not None:
            out["data"] = exc.data
        return out
    if isinstance(exc, TimeoutError):
        return {"ok": False, "error": "timeout"}
    return {"ok": False, "error": str(exc) or type(exc).__name__, "type": type(exc).__name__}


def text_of(result) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def parse_call(spec: str) -> tuple[str, dict]:
    tool, sep, raw = spec.partition(":")
    if not tool:
        raise argparse.ArgumentTypeError(f"--call {spec!r}: expected TOOL:JSONARGS")
    try:
        args = json.loads(raw) if sep and raw.strip() else {}
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--call {spec!r}: arguments are not JSON: {e}") from None
    if not isinstance(args, dict):
        raise argparse.ArgumentTypeError(f"--call {spec!r}: arguments must be a JSON object")
    return tool, args


def parse_header(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--header {spec!r}: expected NAME:VALUE")
    return name.strip(), value.strip()


def settle(args, out: dict, calls: list, pending: list, err: dict) -> None:
    """Record `err` for the steps that never finished (the first is the one in progress)."""
    for step in pending:
        if step == "initialize":
            out["initialize"] = err
            return  # nothing else ran: the document is just the failed initialize
        if step == "list":
            out["tools"] = None
            out["list_error"] = err
        else:
            calls.append({"tool": args.call[int(step.split(":")[1])][0], **err})
    pending.clear()


async def run(args, out: dict) -> None:
    # The transport exactly as Client(URL) builds it (same default httpx2 client
    # and timeouts), only with --header values added to every request.
    auth = None
    if args.cada_socket:
        # clients/python: each request gets an enclave proof through the daemon, no proxy.
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "clients", "python"))
        from cada_mcp import CadaAuth

        auth = CadaAuth(args.cada_socket)
    http = create_mcp_http_client(headers=dict(args.header) if args.header else None, auth=auth)
    transport = streamable_http_client(args.url, http_client=http)
    client = Client(
        transport,
        mode=args.mode,
        client_info=Implementation(name="cada-interop-client", version="1.0.0"),
        # No per-request timeout: the one deadline below covers the whole run
        # (a per-request timeout would surface as MCPError -32001, which a
        # server may also send on purpose, so it could not be told apart).
        cache=None,  # every list/call goes to the wire
    )
    # Steps not finished, in order; whatever ends the run early (the deadline,
    # or a transport failure that tears the session down) is recorded for them.
    pending = ["initialize"] + (["list"] if args.list else []) + [f"call:{i}" for i in range(len(args.call))]
    calls: list[dict] = []
    try:
        with anyio.move_on_after(args.timeout) as scope:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(http)
                try:
                    await stack.enter_async_context(client)
                except Exception as e:  # the handshake failed: report it and stop
                    settle(args, out, calls, pending, failure(e))
                    return
                info = client.server_info
                out["initialize"] = {
                    "ok": True,
                    "server": info.name if info is not None else None,
                    "protocol_version": client.protocol_version,
                    "mode": args.mode,
                }
                pending.pop(0)

                if args.list:
                    try:
                        names: list[str] = []
                        cursor = None
                        for _ in range(100):
                            page = await client.list_tools(cursor=cursor)
                            names += [t.name for t in page.tools]
                            cursor = page.next_cursor
                            if not cursor:
                                break
                        out["tools"] = names
                    except Exception as e:
                        out["tools"] = None
                        out["list_error"] = failure(e)
                    pending.pop(0)

                out["calls"] = calls
                for tool, tool_args in args.call:
                    entry: dict = {"tool": tool}
                    try:
                        result = await client.call_tool(tool, tool_args)
                    except Exception as e:  # a refused call must not end the run
                        entry.update(failure(e))
                    else:
                        if result.is_error:  # the tool ran and failed (not a protocol error)
                            entry.update(ok=False, error=text_of(result), is_error=True)
                        else:
                            entry.update(ok=True, result=text_of(result))
                    calls.append(entry)
                    pending.pop(0)
        if scope.cancelled_caught:
            settle(args, out, calls, pending, {"ok": False, "error": "timeout"})
    except Exception as e:  # raised by the transport's task group, not by a call
        err = failure(e)
        err["transport"] = True
        if pending:
            settle(args, out, calls, pending, err)
        else:
            out["close_error"] = err  # everything ran; closing the session failed


def main() -> None:
    parser = argparse.ArgumentParser(description="MCP SDK client for the CADA interop test")
    parser.add_argument("url")
    parser.add_argument("--list", action="store_true", help="tools/list after initialize")
    parser.add_argument("--call", action="append", default=[], type=parse_call, metavar="TOOL:JSONARGS")
    parser.add_argument("--header", action="append", default=[], type=parse_header, metavar="NAME:VALUE")
    parser.add_argument(
        "--mode",
        default="auto",
        help="SDK connect mode: auto (the SDK default: server/discover probe, falls back to initialize), "
        "legacy (initialize handshake only), or a 2026-era version such as 2026-07-28 (no handshake)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="overall limit in seconds")
    parser.add_argument("--cada-socket", metavar="PATH", help="sign each request with clients/python's CadaAuth through this daemon socket")
    args = parser.parse_args()

    out: dict = {}
    # Last resort if the SDK ignores cancellation: print what there is and leave.
    watchdog = threading.Timer(args.timeout + 10, lambda: (emit({**out, "watchdog": "timeout"}), os._exit(0)))
    watchdog.daemon = True
    watchdog.start()
    try:
        anyio.run(run, args, out)
    except Exception as e:  # never leave without the JSON document
        out.setdefault("initialize", failure(e))
        out["error"] = failure(e)
    emit(out)
    watchdog.cancel()


if __name__ == "__main__":
    main()
