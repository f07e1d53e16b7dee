"""Calls the `whoami` tool through Warden with the Python SDK client (mcp==2.3.0)
and prints what the upstream says about the caller, as JSON.

usage: WARDEN_API_KEY=... py_whoami_client.py URL [legacy|auto]
"""
import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main():
    url = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "legacy"
    http = create_mcp_http_client(headers={"x-api-key": os.environ["WARDEN_API_KEY"]})
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
        r = await c.call_tool("whoami", {})
        text = " ".join(x.text for x in r.content if getattr(x, "text", None) is not None)
        print(json.dumps({"ok": not r.is_error, "whoami": json.loads(text) if not r.is_error else text}))


asyncio.run(main())
