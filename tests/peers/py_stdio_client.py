"""Drives the Python SDK client (mcp==2.3.0, legacy mode) against a stdio
server behind Warden and prints a JSON report of what each step got.

usage: py_stdio_client.py URL
"""
import asyncio
import json
import sys
import traceback

from mcp import Client
sys.dont_write_bytecode = True  # importing the shared helper leaves no __pycache__ behind
from warden_peer import server  # noqa: E402


async def call(c, tool, args):
    try:
        r = await c.call_tool(tool, args)
        text = " ".join(x.text for x in r.content if getattr(x, "text", None) is not None)
        return {"error": bool(r.is_error), "text": text}
    except Exception as e:  # a JSON-RPC error
        return {"error": True, "text": str(e)}


async def main():
    url = sys.argv[1]
    r = {}
    try:
        async with Client(server(url), mode="legacy") as c:
            r["echo"] = await call(c, "echo", {"text": "over stdio"})
            r["given"] = await call(c, "env", {"name": "GIVEN"})
            r["path"] = await call(c, "env", {"name": "PATH"})
            r["canary"] = await call(c, "env", {"name": "WARDEN_TEST_CANARY"})
            r["count"] = await call(c, "env_count", {})
            r["number"] = await call(c, "number", {"n": 10000000000000000001})
            r["shout"] = await call(c, "shout", {"lines": 3000})
        try:
            async with Client(server(url), mode="legacy") as c:
                r["crash"] = await call(c, "crash", {})
                r["after_crash"] = await call(c, "echo", {"text": "still there?"})
        except BaseException as e:  # the session died with its process
            r["crash_session"] = str(e)[-300:]
        async with Client(server(url), mode="legacy") as c:
            r["new_session"] = await call(c, "echo", {"text": "again"})
        r["ok"] = True
    except BaseException as e:
        r["ok"] = False
        r["error"] = "".join(traceback.format_exception(e))[-2000:]
    print(json.dumps(r))
    sys.exit(0 if r["ok"] else 1)


asyncio.run(main())
