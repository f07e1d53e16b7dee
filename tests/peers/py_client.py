"""Drives a real MCP SDK client (Python, mcp==2.3.0) through Warden and prints a JSON report.

usage: py_client.py URL streamable|sse [auto|legacy] [echo_tool] [progress_tool]

With WARDEN_API_KEY set, every request carries it as `x-api-key` (streamable HTTP).

Exit status 0 only when every step succeeded; the report says what each step saw.
"""
import asyncio
import json
import sys
import traceback

from mcp import Client, ClientSession
from mcp.client.sse import sse_client
sys.dont_write_bytecode = True  # importing the shared helper leaves no __pycache__ behind
from warden_peer import server  # noqa: E402


async def exercise(session_like, report, echo_tool, progress_tool, progress_args):
    tools = await session_like.list_tools()
    report["tools"] = sorted(t.name for t in tools.tools)
    schema = next(t.input_schema for t in tools.tools if t.name == echo_tool) or {}
    arg = (schema.get("required") or list(schema.get("properties", {}).keys()))[0]
    r = await session_like.call_tool(echo_tool, {arg: "through warden"})
    report["echo"] = [c.text for c in r.content if getattr(c, "text", None) is not None]
    if not any("through warden" in t for t in report["echo"]):
        raise AssertionError(f"echo did not come back: {report['echo']}")
    seen = []

    async def on_progress(progress, total, message):
        seen.append(progress)

    r = await session_like.call_tool(progress_tool, progress_args, progress_callback=on_progress)
    report["progress_result"] = [c.text for c in r.content if getattr(c, "text", None) is not None]
    report["progress_events"] = len(seen)
    if not seen:
        raise AssertionError("no progress notification arrived")
    try:
        resources = await session_like.list_resources()
        report["resources"] = [str(x.uri) for x in resources.resources][:5]
        if resources.resources:
            rr = await session_like.read_resource(resources.resources[0].uri)
            report["read"] = len(rr.contents)
    except Exception as e:  # a server without resources is fine
        report["resources_error"] = str(e)


async def main():
    url, transport = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "auto"
    echo_tool = sys.argv[4] if len(sys.argv) > 4 else "echo"
    progress_tool = sys.argv[5] if len(sys.argv) > 5 else "count"
    progress_args = {"steps": 3} if progress_tool == "count" else {"duration": 1, "steps": 3}
    report = {"url": url, "transport": transport, "mode": mode}
    async def run():
        if transport == "sse":
            async with sse_client(url) as (read, write):
                async with ClientSession(read, write) as s:
                    init = await s.initialize()
                    report["protocol"] = init.protocol_version
                    await exercise(s, report, echo_tool, progress_tool, progress_args)
        else:
            async with Client(server(url), mode=mode) as c:
                report["protocol"] = c.protocol_version
                await exercise(c, report, echo_tool, progress_tool, progress_args)

    try:
        # Before the test's own timeout, so a hang says how far it got.
        await asyncio.wait_for(run(), timeout=75)
        report["ok"] = True
    except TimeoutError:
        report["ok"] = False
        report["error"] = f"timed out after 75 s; done so far: {sorted(report)}"
    except BaseException as e:
        report["ok"] = False
        report["error"] = "".join(traceback.format_exception(e))[-2000:]
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


asyncio.run(main())
