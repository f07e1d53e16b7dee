"""Drives the Python SDK (mcp==2.3.0) client in its modern mode through
Warden against py_modern_server.py and prints a JSON report: discovery, a
tool call with one multi-round-trip elicitation round, and a resource
subscription over `subscriptions/listen`.

usage: py_modern_client.py URL

Exit status 0 only when every step succeeded.
"""
import asyncio
import json
import sys
import traceback

import anyio
from mcp import Client
from mcp_types import ElicitResult

asked = []


async def on_elicit(context, params):
    asked.append(params.message)
    return ElicitResult(action="accept", content={"name": "octocat"})


async def main():
    url = sys.argv[1]
    report = {"url": url}
    try:
        async with Client(url, mode="auto", elicitation_callback=on_elicit) as c:
            report["protocol"] = c.protocol_version
            if c.protocol_version != "2026-07-28":
                raise AssertionError(f"negotiated {c.protocol_version}")
            tools = await c.list_tools()
            report["tools"] = sorted(t.name for t in tools.tools)
            r = await c.call_tool("greet", {})
            report["greet"] = [x.text for x in r.content if getattr(x, "text", None)]
            report["elicited"] = asked
            if asked != ["What is your name?"] or report["greet"] != ["hello octocat"]:
                raise AssertionError("the elicitation round did not complete")
            async with c.listen(resource_subscriptions=["res://greeting"]) as sub:
                report["honored"] = list(sub.honored.resource_subscriptions or [])
                await c.call_tool("touch", {})
                with anyio.fail_after(15):
                    async for ev in sub:
                        report["event"] = type(ev).__name__ + ":" + str(getattr(ev, "uri", ""))
                        break
            if report.get("event") != "ResourceUpdated:res://greeting":
                raise AssertionError(f"no resource update: {report.get('event')}")
        report["ok"] = True
    except BaseException as e:
        report["ok"] = False
        report["error"] = "".join(traceback.format_exception(e))[-3000:]
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


asyncio.run(main())
