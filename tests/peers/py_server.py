"""A real MCP server from the Python SDK (mcp==2.3.0) for Warden's conformance tests.

usage: py_server.py PORT streamable-http|sse
"""
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("warden-conformance-py")


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Report progress `steps` times, then finish."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}")
    return f"counted {steps}"


@server.tool()
def checksum(data: str) -> str:
    """Length and sha256 of data."""
    import hashlib

    return f"{len(data)} {hashlib.sha256(data.encode()).hexdigest()}"


@server.tool()
def deploy(service: str, regions: list[str]) -> str:
    """Deploy a service to regions (the SDK decodes a string holding JSON
    into the list, as it does for any parameter that is not a string)."""
    return f"deployed {service} to {','.join(regions)} ({type(regions).__name__})"


@server.resource("res://greeting")
def greeting() -> str:
    """A fixed greeting."""
    return "hello from the python server"


if __name__ == "__main__":
    port = int(sys.argv[1])
    transport = sys.argv[2]
    if transport == "sse":
        server.run("sse", host="127.0.0.1", port=port)
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)
