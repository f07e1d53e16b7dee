"""A real MCP SDK client (Python, mcp==2.3.0) calling tools through Warden's
DLP: prints a JSON report of what it received.

usage: py_dlp_client.py URL
"""
import asyncio
import json
import sys

from mcp import Client


def texts(r):
    return [c.text for c in r.content if getattr(c, "text", None) is not None]


async def main():
    url = sys.argv[1]
    report = {}
    async with Client(url) as c:
        report["json"] = texts(await c.call_tool("fixture", {"name": "card"}))
        report["sse"] = texts(await c.call_tool("fixture", {"name": "email", "sse": True}))
        try:
            r = await c.call_tool("echo", {"text": "key AKIAIOSFODNN7EXAMPLE"})
            report["secret"] = {"raised": None, "is_error": bool(r.is_error), "text": texts(r)}
        except Exception as e:  # a JSON-RPC error surfaces as an exception
            report["secret"] = {"raised": str(e)}
    print(json.dumps(report))


asyncio.run(main())
