"""Step-up test client (issue 23) on the official MCP Python SDK (mcp==2.3.0, install.sh).

    DIR/bin/python tests/interop/mcp/stepup_client.py URL --tool TOOL --args JSON
        --mode legacy|2026-07-28 --approver URL --decision approve|deny
        [--no-elicitation] [--timeout 60]

Calls TOOL through `cada-parent proxy` at URL as an SDK user would, with an elicitation
callback that plays the user (it "opens" the approval page by handing its URL to the
test's approver, which decides as the owner) unless --no-elicitation:

* --mode legacy (protocol 2025-11-25, initialize handshake): the first call_tool raises
  MCPError -32042 (URLElicitationRequiredError); the script reads the elicitation with the
  SDK's UrlElicitationRequiredError.from_error, has the owner decide, and calls again.
  Without an elicitation capability the error is the proxy's plain -32000 carrying the URL
  in data.url; the script does the same with it.
* --mode 2026-07-28: the SDK itself receives the InputRequiredResult, runs the callback
  for its URL-mode elicitation (accept) and retries with inputResponses and requestState.

The approver is POSTed {"url": PAGE, "decision": "approve"|"deny"} and answers 200 once
the owner's decision is taken.

Output: one JSON document on stdout:
  {"protocol_version": V, "elicitations": [{"mode", "url", "elicitation_id", "message",
   "via": "error"|"callback"}], "first": CALL, "final": CALL}
where CALL is {"ok": true, "result": TEXT} | {"ok": false, "error", "code", "data"}.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
import httpx2
from mcp import Client, Implementation, MCPError, types
from mcp.shared.exceptions import UrlElicitationRequiredError


def leaf(exc: BaseException) -> BaseException:
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
    return {"ok": False, "error": str(exc) or type(exc).__name__, "type": type(exc).__name__}


def text_of(result) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def decide(approver: str, url: str, decision: str) -> None:
    async with httpx2.AsyncClient(timeout=30) as h:
        r = await h.post(approver, json={"url": url, "decision": decision})
        r.raise_for_status()


async def run(args, out: dict) -> None:
    out["elicitations"] = []

    async def on_elicit(context, params):
        mode = getattr(params, "mode", "form")
        seen = {
            "mode": mode,
            "url": getattr(params, "url", None),
            "elicitation_id": getattr(params, "elicitation_id", None),
            "message": getattr(params, "message", None),
            "via": "callback",
        }
        out["elicitations"].append(seen)
        if mode != "url":
            return types.ElicitResult(action="decline")
        # The user consents to open the page; the owner decides there.
        await decide(args.approver, params.url, args.decision)
        return types.ElicitResult(action="accept")

    client = Client(
        args.url,
        mode=args.mode,
        client_info=Implementation(name="cada-stepup-client", version="1.0.0"),
        elicitation_callback=None if args.no_elicitation else on_elicit,
        cache=None,
    )
    async with client:
        out["protocol_version"] = client.protocol_version

        async def call() -> dict:
            try:
                r = await client.call_tool(args.tool, args.args)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                return failure(e)
            if r.is_error:
                return {"ok": False, "error": text_of(r), "is_error": True}
            return {"ok": True, "result": text_of(r)}

        first = await call()
        out["first"] = first
        if first["ok"]:
            return
        code = first.get("code")
        data = first.get("data") or {}
        if code == -32042:
            # 2025-11-25: read it as the SDK's own error type does.
            err = UrlElicitationRequiredError.from_error(
                types.ErrorData(code=code, message=first["error"], data=data)
            )
            for e in err.elicitations:
                out["elicitations"].append(
                    {"mode": e.mode, "url": e.url, "elicitation_id": e.elicitation_id,
                     "message": e.message, "via": "error"}
                )
            await decide(args.approver, err.elicitations[0].url, args.decision)
        elif isinstance(data, dict) and data.get("code") == "stepup.required":
            out["elicitations"].append(
                {"mode": None, "url": data.get("url"), "elicitation_id": data.get("elicitationId"),
                 "message": first["error"], "via": "plain-error"}
            )
            await decide(args.approver, data["url"], args.decision)
        else:
            # 2026-07-28 ends here: the SDK already retried after the callback.
            out["final"] = first
            return
        out["final"] = await call()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--tool", required=True)
    p.add_argument("--args", type=json.loads, default={})
    p.add_argument("--mode", default="legacy")
    p.add_argument("--approver", required=True)
    p.add_argument("--decision", choices=["approve", "deny"], default="approve")
    p.add_argument("--no-elicitation", action="store_true")
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()
    out: dict = {}

    async def bounded() -> None:
        with anyio.move_on_after(args.timeout) as scope:
            await run(args, out)
        if scope.cancelled_caught:
            out["timeout"] = True

    try:
        anyio.run(bounded)
    except BaseException as e:  # noqa: BLE001 - reported, the test reads stdout
        out["crash"] = failure(e)
    if "final" not in out and "first" in out:
        out["final"] = out["first"]
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
