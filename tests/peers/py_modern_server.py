"""A real MCP server from the Python SDK (mcp==2.3.0) speaking 2026-07-28 for
Warden's conformance tests: a multi-round-trip elicitation (SEP-2322) and a
resource subscription (`subscriptions/listen`, SEP-2575).

usage: py_modern_server.py PORT
"""
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult

server = MCPServer("warden-conformance-py-modern")


@server.tool()
async def greet(ctx: Context) -> str | InputRequiredResult:
    """Ask the user's name (one input round), then greet them."""
    answers = ctx.input_responses
    if not answers:
        return InputRequiredResult(
            input_requests={
                "who": ElicitRequest(
                    params=ElicitRequestFormParams(
                        message="What is your name?",
                        requested_schema={
                            "type": "object",
                            "properties": {"name": {"type": "string"}},
                            "required": ["name"],
                        },
                    )
                )
            },
            request_state="round-1",
        )
    # The server must get its own state back, whatever the gateway did with it.
    if ctx.request_state != "round-1":
        raise ValueError(f"unexpected request state {ctx.request_state!r}")
    who = answers["who"]
    content = getattr(who, "content", None) or {}
    return f"hello {content.get('name')}"


@server.tool()
async def touch(ctx: Context) -> str:
    """Mark res://greeting as updated (subscribers hear of it)."""
    await ctx.notify_resource_updated("res://greeting")
    return "touched"


@server.resource("res://greeting")
def greeting() -> str:
    """A fixed greeting."""
    return "hello from the modern python server"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
