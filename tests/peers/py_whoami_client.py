"""Calls the `whoami` tool through Warden with the Python SDK client (mcp==2.3.0)
and prints what the upstream says about the caller, as JSON.

usage: WARDEN_API_KEY=... (or WARDEN_BEARER=...) py_whoami_client.py URL [legacy|auto]
"""
import asyncio
import json
import sys

from mcp import Client
sys.dont_write_bytecode = True  # importing the shared helper leaves no __pycache__ behind
from warden_peer import server  # noqa: E402


async def main():
    url = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "legacy"
    async with Client(server(url), mode=mode) as c:
        r = await c.call_tool("whoami", {})
        text = " ".join(x.text for x in r.content if getattr(x, "text", None) is not None)
        print(json.dumps({"ok": not r.is_error, "whoami": json.loads(text) if not r.is_error else text}))


asyncio.run(main())
