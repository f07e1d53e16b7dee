"""Drives the Python SDK client (mcp==2.3.0, legacy mode: sessions) through
one Warden virtual server composed of the Python SDK server (HTTP), the
TypeScript "everything" server (stdio), an rmcp server (HTTP, paged lists)
and a hostile Python server (stdio); prints a JSON report of each step.

usage: py_virtual_client.py URL
"""
import asyncio
import json
import sys
import traceback

from mcp import Client, types
sys.dont_write_bytecode = True  # importing the shared helper leaves no __pycache__ behind
from warden_peer import server  # noqa: E402


def texts(r):
    return " ".join(x.text for x in r.content if getattr(x, "text", None) is not None)


async def call(c, tool, args, progress=None):
    try:
        r = await c.call_tool(tool, args, progress_callback=progress)
        return {"error": bool(r.is_error), "text": texts(r)}
    except Exception as e:  # a JSON-RPC error
        return {"error": True, "text": str(e)[:500]}


async def on_sample(context, params):
    asked = params.messages[0].content.text if params.messages else ""
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sampled by the client ({len(asked)} chars asked)"),
        model="warden-test-model",
        stop_reason="endTurn",
    )


async def main():
    url = sys.argv[1]
    r = {}
    try:
        async with Client(server(url), mode="legacy", sampling_callback=on_sample) as c:
            r["server"] = c.server_info.name if c.server_info else None
            r["instructions"] = c.instructions
            # Every page of the merged list, through the sealed cursor.
            names, pages, cursor = [], 0, None
            while True:
                page = await c.list_tools(cursor=cursor, cache_mode="refresh")
                pages += 1
                names += [t.name for t in page.tools]
                if page.next_cursor is None or pages > 20:
                    break
                r["cursor"] = page.next_cursor
                cursor = page.next_cursor
            r["tools"] = names
            r["pages"] = pages
            tools = {t.name: t for t in (await c.list_tools(cache_mode="refresh")).tools}
            plus = tools.get("plus")
            r["plus_view"] = {
                "description": plus.description if plus else None,
                "properties": sorted((plus.input_schema or {}).get("properties", {}).keys()) if plus else None,
            }
            r["echo"] = await call(c, "echo", {"text": "to python"})
            r["ev_echo"] = await call(c, "ev_echo", {"message": "to everything"})
            r["rs_echo"] = await call(c, "rs_echo", {"text": "to rmcp"})
            r["plus"] = await call(c, "plus", {"a": 5})
            r["plus_hidden"] = await call(c, "plus", {"a": 5, "b": 1})
            # The hidden argument by another case: the member leg reads the
            # two as one name, and refuses the call.
            r["plus_case"] = await call(c, "plus", {"a": 5, "B": 1})
            seen = []

            async def on_progress(progress, total, message):
                seen.append(progress)

            r["count"] = await call(c, "count", {}, on_progress)
            r["count_progress"] = len(seen)
            seen.clear()
            r["rs_count"] = await call(c, "rs_count", {"steps": 3}, on_progress)
            r["rs_count_progress"] = len(seen)
            r["sampling"] = await call(c, "trigger-sampling-request", {"prompt": "say hi", "maxTokens": 10})
            r["checksum"] = await call(c, "checksum", {"data": "abc"})
            r["unknown"] = await call(c, "no_such_tool", {})
            r["env_path"] = await call(c, "hostile_env", {"name": "PATH"})
            r["env_given"] = await call(c, "hostile_env", {"name": "GIVEN"})
            r["shout"] = await call(c, "hostile_shout", {"lines": 3000})
            r["crash"] = await call(c, "hostile_crash", {})
            r["after_crash"] = await call(c, "hostile_echo", {"text": "back again"})
            resources, cursor, rpages = [], None, 0
            while True:
                page = await c.list_resources(cursor=cursor, cache_mode="refresh")
                rpages += 1
                resources += [str(x.uri) for x in page.resources]
                if page.next_cursor is None or rpages > 50:
                    break
                cursor = page.next_cursor
            r["resources"] = len(resources)
            r["resource_pages"] = rpages
            greeting = await c.read_resource("res://greeting")
            r["greeting"] = greeting.contents[0].text
            other = next((u for u in resources if u != "res://greeting"), None)
            if other:
                rr = await c.read_resource(other)
                r["ev_resource"] = len(rr.contents)
            prompts = (await c.list_prompts()).prompts
            r["prompts"] = [p.name for p in prompts]
            got = await c.get_prompt("simple-prompt")
            r["prompt"] = got.messages[0].content.text if got.messages else None
            # A completion routed by its prompt, a resource by its template,
            # a subscription, the log level (to every member with logging).
            done = await c.complete(types.PromptReference(type="ref/prompt", name="completable-prompt"), {"name": "department", "value": "En"})
            r["completion"] = done.completion.values
            dyn = await c.read_resource("demo://resource/dynamic/text/7")
            r["template_read"] = len(dyn.contents)
            await c.subscribe_resource("demo://resource/dynamic/text/1")
            r["subscribed"] = True
            await c.set_logging_level("debug")
            r["log_level"] = True
            r["echo_title"] = tools["echo"].title if "echo" in tools else None
        r["ok"] = True
    except BaseException as e:
        r["ok"] = False
        r["error"] = "".join(traceback.format_exception(e))[-2000:]
    print(json.dumps(r))
    sys.exit(0 if r["ok"] else 1)


asyncio.run(main())
