"""Drives the Python SDK client (mcp==2.3.0, legacy mode: sessions) into Warden's
runaway guards and prints a JSON report of what each call got back.

usage: [WARDEN_API_KEY=...] py_runaway_client.py URL
"""
import asyncio
import json
import sys
import traceback

from mcp import Client
sys.dont_write_bytecode = True  # importing the shared helper leaves no __pycache__ behind
from warden_peer import server  # noqa: E402


def outcome(result):
    text = " ".join(c.text for c in result.content if getattr(c, "text", None) is not None)
    return {"error": bool(result.is_error), "text": text}


async def call(c, tool, args):
    try:
        return outcome(await c.call_tool(tool, args))
    except Exception as e:  # a JSON-RPC error
        return {"error": True, "text": str(e)}


async def main():
    url = sys.argv[1]
    report = {"first": [], "second": []}
    try:
        async with Client(server(url), mode="legacy") as c:
            for _ in range(4):
                report["first"].append(await call(c, "echo", {"text": "same"}))
            for b in range(1, 5):
                report["first"].append(await call(c, "add", {"a": 1, "b": b}))
        async with Client(server(url), mode="legacy") as c:
            report["second"].append(await call(c, "add", {"a": 2, "b": 2}))
            report["second"].append(await call(c, "echo", {"text": "same"}))
        report["ok"] = True
    except BaseException as e:
        report["ok"] = False
        report["error"] = "".join(traceback.format_exception(e))[-2000:]
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


asyncio.run(main())
