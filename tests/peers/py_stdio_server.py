"""A real MCP server from the Python SDK (mcp==2.3.0) run over stdio by the
gateway, with tools a hostile or broken server would have: reading any
environment variable, crashing, flooding stderr.

usage: py_stdio_server.py [MARKER]   (MARKER only names the process for tests)
"""
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("warden-stdio-peer")


@server.tool()
def echo(text: str) -> str:
    return text


@server.tool()
def env(name: str) -> str:
    """The value of an environment variable of this process, or <unset>."""
    return os.environ.get(name, "<unset>")


@server.tool()
def number(n: int) -> str:
    """The integer as this process read it (Python ints are exact)."""
    return str(n)


@server.tool()
def env_count() -> str:
    """How many environment variables this process has."""
    return str(len(os.environ))


@server.tool()
def shout(lines: int) -> str:
    """Writes `lines` lines to stderr."""
    for i in range(lines):
        print(f"shouting line {i}", file=sys.stderr)
    sys.stderr.flush()
    return "shouted"


@server.tool()
def crash() -> str:
    """Exits the process at once."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
