"""Latency of an echo tools/call with the official MCP Python SDK client, direct to a server
and through cada-parent proxy + cada-gate, interleaved call by call (so both see the same
machine), for tests/benches/mcp_gate.rs (scripts/bench-mcp.sh).

    PY tests/benches/mcp_sdk_latency.py --direct URL --through URL [--calls 2000]
        [--warmup 200] [--mode auto|legacy|2026-07-28]

Written against mcp==2.3.0 (tests/interop/mcp/install.sh). Each URL gets one SDK Client
(its default httpx2 client: one keep-alive connection); the calls alternate direct,
through, through, direct, … Prints one JSON document:
  {"calls": N, "mode": M, "direct": {"p50_ms", "p90_ms", "p99_ms"}, "through": {…},
   "added_p50_ms": through p50 - direct p50, "paired_added_p50_ms": median of
   (through - direct) over adjacent pairs}
and exits non-zero if a call fails or returns something other than its text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import anyio
from mcp import Client


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round((len(s) - 1) * p))]


def summary(xs: list[float]) -> dict:
    return {"p50_ms": round(pct(xs, 0.5), 3), "p90_ms": round(pct(xs, 0.9), 3), "p99_ms": round(pct(xs, 0.99), 3)}


async def call(client: Client, n: int) -> float:
    text = f"call {n}"
    t = time.perf_counter_ns()
    result = await client.call_tool("echo", {"text": text})
    ms = (time.perf_counter_ns() - t) / 1e6
    got = "".join(getattr(b, "text", "") for b in result.content)
    if result.is_error or got != text:
        raise RuntimeError(f"echo answered {got!r} (is_error={result.is_error}), wanted {text!r}")
    return ms


async def run(args) -> dict:
    async with Client(args.direct, mode=args.mode) as direct, Client(args.through, mode=args.mode) as through:
        for n in range(args.warmup):
            await call(direct, n)
            await call(through, n)
        d: list[float] = []
        t: list[float] = []
        for n in range(args.calls):
            # Alternate which goes first, so neither always follows the other.
            if n % 2 == 0:
                d.append(await call(direct, n))
                t.append(await call(through, n))
            else:
                t.append(await call(through, n))
                d.append(await call(direct, n))
    return {
        "calls": args.calls,
        "mode": args.mode,
        "direct": summary(d),
        "through": summary(t),
        "added_p50_ms": round(pct(t, 0.5) - pct(d, 0.5), 3),
        "paired_added_p50_ms": round(statistics.median(b - a for a, b in zip(d, t)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direct", required=True)
    parser.add_argument("--through", required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--mode", default="auto")
    args = parser.parse_args()
    try:
        out = anyio.run(run, args)
    except Exception as e:  # one line the harness can show
        sys.stdout.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        sys.exit(1)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
