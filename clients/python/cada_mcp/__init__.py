"""CADA for Python MCP agents and servers.

* :class:`CadaAuth` - an ``httpx2.Auth`` for MCP clients: every request gets a proof minted
  inside the enclave (through the ``cada-parent`` daemon's unix socket), bound to the URL,
  the body (``Content-Digest``) and its JSON-RPC calls; ``use_attestation``, DPoP nonces and
  access tokens are handled.
* :class:`CadaGateMiddleware` - an ASGI middleware for MCP servers behind ``cada-gate``:
  it turns the gate's ``CADA-Agent-Claims`` header into the SDK's authenticated user, so
  ``mcp.server.auth.middleware.auth_context.get_access_token()`` names the agent.
"""

from .auth import CadaAuth, body_calls
from .asgi import CadaGateMiddleware, agent_claims

__all__ = ["CadaAuth", "CadaGateMiddleware", "agent_claims", "body_calls"]
