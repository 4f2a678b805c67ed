"""``CadaGateMiddleware``: the agent cada-gate verified, as the MCP SDK's authenticated user."""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable


def agent_claims(scope: dict) -> dict[str, Any] | None:
    """The gate's ``CADA-Agent-Claims`` of an ASGI request: ``{did, jkt, platform,
    measurement_digest, owner, contract, tools, token_issuer, calls, bd, actors, chain}``
    (``actors``: the owner first, each delegating agent, the agent ``did`` last; ``chain``:
    the governing contracts' digests, root first), or None."""
    for name, value in scope.get("headers", []):
        if name == b"cada-agent-claims":
            raw = value.decode("ascii", "replace")
            try:
                return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            except ValueError:
                return None
    return None


class CadaGateMiddleware:
    """Wraps an MCP server's ASGI app (e.g. ``mcp.streamable_http_app()``) that sits behind
    ``cada-gate``. Requests from ``trusted_peers`` (the gate's addresses; default loopback)
    carrying the gate's identity headers run with the SDK's authenticated user set:
    ``get_access_token().client_id`` is the agent's did:key, ``.scopes`` the tools its
    contract grants, ``.subject`` the owner (the principal, as ``sub`` of the STS's
    tokens), ``.claims`` everything the gate verified (``claims["actors"]``: who acted for
    whom under a delegation chain).
    Any other HTTP request is answered 401, since it did not pass the gate.
    """

    def __init__(self, app, trusted_peers: Iterable[str] = ("127.0.0.1", "::1")):
        self.app = app
        self.trusted = set(trusted_peers)

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        from mcp.server.auth.middleware.auth_context import auth_context_var
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken
        from starlette.authentication import AuthCredentials

        peer = (scope.get("client") or ("", 0))[0]
        claims = agent_claims(scope) if peer in self.trusted else None
        if not claims or not isinstance(claims.get("did"), str):
            body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                "code": -32001, "message": "[gate.required] this server admits agents through cada-gate only"}})
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        token = AccessToken(
            token="cada-gate",
            client_id=claims["did"],
            scopes=list(claims.get("tools") or []),
            subject=claims.get("owner"),
            claims=claims,
        )
        user = AuthenticatedUser(token)
        scope = dict(scope, user=user, auth=AuthCredentials(token.scopes))
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)
