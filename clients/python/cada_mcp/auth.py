"""``CadaAuth``: an httpx2 ``Auth`` that asks the CADA daemon for a proof per request."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from typing import Any, AsyncGenerator, Generator
from urllib.parse import urlsplit, urlunsplit

import httpx2

# The methods whose params name a target, and which member names it (as cada-gate reads it).
_TARGETS = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}


def body_calls(body: bytes) -> list[dict[str, str]]:
    """The JSON-RPC calls of an MCP request body: ``[{"method", "target"?}]`` in order,
    responses left out; ``[]`` for an empty or non-JSON-RPC body (the gate then refuses it
    or finds no calls, as it reads the same bytes)."""
    if not body.strip():
        return []
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    out: list[dict[str, str]] = []
    for m in doc if isinstance(doc, list) else [doc]:
        if not isinstance(m, dict) or not isinstance(m.get("method"), str):
            continue
        call = {"method": m["method"]}
        member = _TARGETS.get(m["method"])
        params = m.get("params")
        if member and isinstance(params, dict) and isinstance(params.get(member), str):
            call["target"] = params[member]
        out.append(call)
    return out


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _challenge(response: httpx2.Response) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate: DPoP ...`` challenge."""
    out: dict[str, str] = {}
    for value in response.headers.get_list("www-authenticate"):
        value = value.strip()
        if not value.startswith("DPoP"):
            continue
        rest = value[4:]
        while "=" in rest:
            name, _, rest = rest.partition("=")
            name = name.strip().lstrip(",").strip()
            if rest.startswith('"'):
                val, _, rest = rest[1:].partition('"')
            else:
                val, _, rest = rest.partition(",")
            out[name] = val.strip()
    return out


class CadaAuth(httpx2.Auth):
    """Signs every request inside the enclave, through the ``cada-parent serve`` daemon.

    ``socket``: the daemon's unix socket. ``resource``: ask the daemon's STS for an access
    token for this RFC 8707 resource (the daemon was started with ``--sts``); without it,
    proofs carry the evidence to each origin once (and again when asked).
    """

    requires_request_body = True

    def __init__(self, socket: str, resource: str | None = None, scope: str | None = None):
        self.socket = socket
        self.resource = resource
        self.scope = scope
        self._lock = threading.Lock()
        self._introduced: set[str] = set()
        self._nonces: dict[str, str] = {}

    # The daemon's POST /v1/pop body for this request.
    def _ask(self, request: httpx2.Request, force_evidence: bool) -> dict[str, Any]:
        u = urlsplit(str(request.url))
        origin = f"{u.scheme}://{u.netloc}"
        body = request.content
        with self._lock:
            nonce = self._nonces.get(origin)
            introduced = origin in self._introduced
        ask: dict[str, Any] = {
            "method": request.method,
            "url": urlunsplit((u.scheme, u.netloc, u.path or "/", "", "")),
            "nonce": nonce,
            "with_evidence": self.resource is None and (force_evidence or not introduced),
            "bd": _b64url(self._sha256(request)),
            "mcp": body_calls(body),
        }
        if self.resource is not None:
            ask["resource"] = self.resource
            if self.scope:
                ask["scope"] = self.scope
        return ask

    def _apply(self, request: httpx2.Request, pop: dict[str, Any]) -> None:
        digest = base64.b64encode(self._sha256(request)).decode()
        request.headers["DPoP"] = pop["dpop"]
        request.headers["Content-Digest"] = f"sha-256=:{digest}:"
        for key, header in (("evidence", "CADA-Evidence"), ("contract", "CADA-Contract"),
                            ("authorization", "Authorization")):
            if pop.get(key):
                request.headers[header] = pop[key]
            elif header in request.headers and header != "Authorization":
                del request.headers[header]

    def _learn(self, request: httpx2.Request, response: httpx2.Response, ask: dict) -> str | None:
        """Remembers nonces and introductions; returns why to retry, if the answer asks."""
        u = urlsplit(str(request.url))
        origin = f"{u.scheme}://{u.netloc}"
        with self._lock:
            if "dpop-nonce" in response.headers:
                self._nonces[origin] = response.headers["dpop-nonce"]
            if response.is_success and ask["with_evidence"]:
                self._introduced.add(origin)
        if response.status_code != 401:
            return None
        c = _challenge(response)
        if c.get("error") == "use_dpop_nonce" and "dpop-nonce" in response.headers:
            return "nonce"
        if c.get("error") == "use_attestation" or "contract.required" in c.get("error_description", ""):
            return "evidence"
        return None

    @staticmethod
    def _sha256(request: httpx2.Request) -> bytes:
        """The body's SHA-256, hashed once per request (retries reuse it)."""
        cached = request.extensions.get("cada_sha256")
        if cached is None:
            cached = hashlib.sha256(request.content).digest()
            request.extensions["cada_sha256"] = cached
        return cached

    @staticmethod
    def _pop(answer: httpx2.Response) -> dict[str, Any]:
        if not answer.is_success:
            raise httpx2.HTTPStatusError(
                f"the CADA daemon refused to sign: {answer.text}", request=answer.request, response=answer
            )
        return answer.json()

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.read()
        force = False
        with httpx2.Client(transport=httpx2.HTTPTransport(uds=self.socket), base_url="http://cada") as daemon:
            for _ in range(3):
                ask = self._ask(request, force)
                self._apply(request, self._pop(daemon.post("/v1/pop", json=ask)))
                response = yield request
                why = self._learn(request, response, ask)
                if why is None:
                    return
                force = force or why == "evidence"
                response.read()

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        await request.aread()
        force = False
        async with httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=self.socket),
                                      base_url="http://cada") as daemon:
            for _ in range(3):
                ask = self._ask(request, force)
                self._apply(request, self._pop(await daemon.post("/v1/pop", json=ask)))
                response = yield request
                why = self._learn(request, response, ask)
                if why is None:
                    return
                force = force or why == "evidence"
                await response.aread()
