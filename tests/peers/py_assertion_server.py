"""A real MCP server from the Python SDK (mcp==2.3.0) that trusts only JWTs
from one issuer: every request must carry a JWT signed by a key in that
issuer's JWKS (Warden's admin listener for identity assertions, or an OAuth
authorization server's, PyJWT), for this server's audience, unexpired. The `whoami` tool answers with the user the assertion names,
so a test sees the server act for the user behind the agent.

usage: py_assertion_server.py PORT JWKS_URL AUDIENCE ISSUER
"""
import json
import sys

import jwt
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

PORT, JWKS_URL, AUDIENCE, ISSUER = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jwks = jwt.PyJWKClient(JWKS_URL, cache_keys=False)


class AssertionVerifier:
    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except Exception as e:  # refused: the SDK answers 401
            print(f"refused assertion: {e}", file=sys.stderr, flush=True)
            return None
        return AccessToken(
            token=token,
            client_id="warden",
            scopes=[],
            expires_at=claims["exp"],
            resource=AUDIENCE,
            subject=claims["sub"],
            claims=claims,
        )


server = MCPServer(
    "warden-assertion-upstream",
    token_verifier=AssertionVerifier(),
    auth=AuthSettings(
        issuer_url=ISSUER,
        resource_server_url=AUDIENCE,
        validate_token_resource=True,
    ),
)


@server.tool()
def whoami() -> str:
    """The user (and what the gateway says about them) behind this call."""
    t = get_access_token()
    c = dict(t.claims or {})
    keys = ["sub", "tenant", "roles", "auth", "orig_iss", "trace_id", "aud", "iss", "act", "client_id"]
    return json.dumps({k: c.get(k) for k in keys})


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=PORT)
