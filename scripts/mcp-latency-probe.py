#!/usr/bin/env python3
"""Latency that cada-parent proxy + cada-gate add to an echo tools/call, seen by a minimal
client: one raw keep-alive HTTP/1.1 connection per URL, no MCP SDK, calls alternating direct
and through. A diagnostic beside tests/benches/mcp_gate.rs: it tells the pair's own cost from
the cost of the client that calls it.

    scripts/mcp-latency-probe.py DIRECT_PORT PROXY_PORT PROXY_PATH [--calls N]
        [--busy-ms MS] [--split] [--short]

Point it at a rig held up by `CADA_BENCH_HOLD=600 scripts/bench-mcp.sh 5 64 none sdk`
(it prints the ports), e.g. `scripts/mcp-latency-probe.py S_JSON PROXY /json`, or the
stand-in server: `scripts/mcp-latency-probe.py UP PROXY /mcp --short`.

--busy-ms spends MS of CPU in this client before each call (outside the timed part), as a
real client does between calls (the official Python SDK spends about 2.5-3 ms per call);
--split writes the head and the body of each request apart, as httpx does; --short sends the
bench's own minimal request (no 2026-07-28 headers and no _meta) instead of what the SDK
client sends. Prints direct and through p50, their difference, and the median of the
per-pair differences. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time


def request(path: str, port: int, n: int, short: bool) -> tuple[bytes, bytes]:
    params: dict = {"name": "echo", "arguments": {"text": f"call {n}"}}
    if short:
        extra = ""
    else:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "probe", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        extra = "mcp-protocol-version: 2026-07-28\r\nmcp-method: tools/call\r\nmcp-name: echo\r\n"
    body = json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params},
                      separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"accept: application/json, text/event-stream\r\n{extra}content-length: {len(body)}\r\n\r\n")
    return head.encode(), body


def read_answer(s: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise RuntimeError("the connection closed before an answer")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lower = head.lower()
    if b"content-length:" in lower:
        n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < n:
            d = s.recv(65536)
            if not d:
                raise RuntimeError("the connection closed mid-body")
            rest += d
        return head + b"\r\n\r\n" + rest[:n]
    while not rest.endswith(b"0\r\n\r\n"):  # chunked (server-sent events)
        d = s.recv(65536)
        if not d:
            raise RuntimeError("the connection closed mid-stream")
        rest += d
    return head + b"\r\n\r\n" + rest


def busy(ms: float) -> None:
    t0 = time.perf_counter()
    while (time.perf_counter() - t0) * 1000 < ms:
        pass


def call(s: socket.socket, path: str, port: int, n: int, args) -> float:
    head, body = request(path, port, n, args.short)
    busy(args.busy_ms)
    t = time.perf_counter_ns()
    if args.split:
        s.sendall(head)
        s.sendall(body)
    else:
        s.sendall(head + body)
    answer = read_answer(s)
    ms = (time.perf_counter_ns() - t) / 1e6
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"answered {answer[:200]!r}")
    return ms


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("direct_port", type=int)
    p.add_argument("proxy_port", type=int)
    p.add_argument("proxy_path")
    p.add_argument("--calls", type=int, default=1500)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--busy-ms", type=float, default=0.0)
    p.add_argument("--split", action="store_true")
    p.add_argument("--short", action="store_true")
    args = p.parse_args()
    d_s, t_s = connect(args.direct_port), connect(args.proxy_port)
    direct = lambda n: call(d_s, "/mcp", args.direct_port, n, args)  # noqa: E731
    through = lambda n: call(t_s, args.proxy_path, args.proxy_port, n, args)  # noqa: E731
    for n in range(args.warmup):
        direct(n)
        through(n)
    d: list[float] = []
    t: list[float] = []
    for n in range(args.calls):
        if n % 2:
            d.append(direct(n))
            t.append(through(n))
        else:
            t.append(through(n))
            d.append(direct(n))
    pairs = statistics.median(b - a for a, b in zip(d, t))
    dm, tm = statistics.median(d), statistics.median(t)
    print(f"calls {args.calls}, busy {args.busy_ms} ms, split {args.split}, short {args.short}: "
          f"direct p50 {dm:.3f} ms, through p50 {tm:.3f} ms, added {tm - dm:.3f} ms, "
          f"median of pairs {pairs:.3f} ms")


if __name__ == "__main__":
    main()
