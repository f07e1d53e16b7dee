"""The Python SDK client (mcp==2.3.0) of a principal whose server acts
with their own account: opens a session through Warden (WARDEN_API_KEY),
calls TOOL, and prints one JSON line: the tool's text, or the consent
Warden asked for (a URL-mode elicitation, -32042: its URL and id) or any
other error. With ELICIT=0 the client declares no elicitation (it then
gets an error naming the URL).

usage: WARDEN_API_KEY=... py_connect_client.py URL TOOL
"""
import asyncio
import json
import os
import sys
import traceback

from mcp import Client, MCPError, UrlElicitationRequiredError
sys.dont_write_bytecode = True  # importing the shared helper leaves no __pycache__ behind
from warden_peer import server  # noqa: E402


def told(e):
    if e.error.code == -32042:
        el = UrlElicitationRequiredError.from_error(e.error).elicitations[0]
        return {"consent": {"url": el.url, "id": el.elicitation_id, "message": el.message}}
    return {"error": {"code": e.error.code, "message": e.error.message, "data": e.error.data}}


async def main():
    url, tool = sys.argv[1], sys.argv[2]

    async def on_elicit(ctx, params):
        return {"action": "decline"}

    kw = {} if os.environ.get("ELICIT") == "0" else {"elicitation_callback": on_elicit}
    r = {}
    try:
        async with Client(server(url), mode="legacy", **kw) as c:
            res = await c.call_tool(tool, {})
            r["text"] = " ".join(x.text for x in res.content if getattr(x, "text", None) is not None)
            r["is_error"] = bool(res.is_error)
    except MCPError as e:
        r.update(told(e))
    except BaseException as e:  # noqa: BLE001 - reported, not hidden
        inner = e
        while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
            inner = inner.exceptions[0]
        if isinstance(inner, MCPError):
            r.update(told(inner))
        else:
            r["failed"] = "".join(traceback.format_exception(e))[-1500:]
    print(json.dumps(r))


asyncio.run(main())
