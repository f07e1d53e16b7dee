"""Drives the Python SDK client (mcp==2.3.0, legacy mode: sessions) through a
scenario of Warden's information-flow tests and prints one JSON line per
step, then one summary line `{"ok": ...}`.

usage: WARDEN_API_KEY=... py_flow_client.py GATEWAYS STEPS

GATEWAYS: a JSON list of base URLs (`http://127.0.0.1:PORT`), one per replica.
STEPS: a JSON list; each step is one of
  {"session": "s1", "path": "/desk/mcp", "gw": 0, "tool": "post", "args": {...}}
  {"session": "s1", "path": "/hr/mcp", "resource": "hr://employees/7"}
  {"session": "s1", "path": "/one/mcp", "subscribe": "https://…"}
                                  resources/subscribe to that URI
  {"session": "s1", "path": "/one/mcp", "cancel": "a reason"}
                                  notifications/cancelled with that reason
                                  (a notification: its line says "sent")
  {"approve": 2, "as": "ALICE"}   approves the approval id step 2 was told,
                                  with `warden-agent approvals approve`
                                  (env WARDEN_AGENT_BIN, WARDEN_AGENT_URL,
                                  APPROVER_<as>: that approver's token)
  {"pause": "/path/flag"}         writes /path/flag.ready, then waits (60 s at
                                  most) until /path/flag exists: the test acts
                                  between two steps of the same sessions
  {"key": "wk_..."}               optional in a call step: the API key of the
                                  session (when it is opened), else WARDEN_API_KEY

A session (its label) is opened at its first step on that step's path and
kept until the end. `gw` (default 0) picks the replica each request of that
step goes to: the SDK's HTTP client is pointed at another gateway while the
session id stays the same. Each step's line: {"step": i, "error": bool,
"text": ..., "code": JSON-RPC code or null, "reason": data.reason or null,
"id": approval id or null}.
"""
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import traceback

import warnings

import httpx2
from mcp import Client, MCPError, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

ID = re.compile(r"(ap_[a-z2-7]+)")


class Replicas(httpx2.AsyncBaseTransport):
    """Sends each request to the gateway `current` names (same path)."""

    def __init__(self, gateways):
        self.gateways = [httpx2.URL(g) for g in gateways]
        self.current = 0
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        to = self.gateways[self.current]
        request.url = request.url.copy_with(scheme=to.scheme, host=to.host, port=to.port)
        request.headers["host"] = f"{to.host}:{to.port}"
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


def texts(content):
    out = []
    for c in content:
        t = getattr(c, "text", None)
        if t is not None:
            out.append(t)
    return " ".join(out)


def outcome(error, text, code=None, reason=None):
    m = ID.search(text or "")
    return {"error": error, "text": text, "code": code, "reason": reason, "id": m.group(1) if m else None}


async def run_call(c, step):
    try:
        if "resource" in step:
            r = await c.read_resource(step["resource"], cache_mode="bypass")
            return outcome(False, texts(r.contents))
        if "subscribe" in step:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await c.subscribe_resource(step["subscribe"])
            return outcome(False, "subscribed")
        if "cancel" in step:
            params = types.CancelledNotificationParams(request_id=999, reason=step["cancel"])
            await c.session.send_notification(types.CancelledNotification(params=params))
            return outcome(False, "sent")
        r = await c.call_tool(step["tool"], step.get("args", {}))
        return outcome(bool(r.is_error), texts(r.content))
    except MCPError as e:
        data = e.error.data if isinstance(e.error.data, dict) else {}
        return outcome(True, e.error.message, e.error.code, data.get("reason"))
    except Exception as e:  # a transport failure: reported, not raised
        return outcome(True, f"{type(e).__name__}: {e}")


def approve(step, results):
    told = results[step["approve"]]["id"]
    who = step.get("as", "ALICE")
    env = dict(os.environ, WARDEN_APPROVER_TOKEN=os.environ[f"APPROVER_{who}"])
    p = subprocess.run(
        [os.environ["WARDEN_AGENT_BIN"], "approvals", "--agent", os.environ["WARDEN_AGENT_URL"],
         "approve", told or "none"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    return {"error": p.returncode != 0, "text": (p.stdout + p.stderr)[-600:], "id": told}


async def pause(flag):
    open(flag + ".ready", "w").close()
    for _ in range(1200):
        if os.path.exists(flag):
            return {"error": False, "text": "resumed"}
        await asyncio.sleep(0.05)
    return {"error": True, "text": "never resumed"}


async def main():
    gateways = json.loads(sys.argv[1])
    steps = json.loads(sys.argv[2])
    replicas = Replicas(gateways)
    results = []
    ok = True
    try:
        async with contextlib.AsyncExitStack() as stack:
            sessions = {}
            for i, step in enumerate(steps):
                if "approve" in step:
                    res = approve(step, results)
                elif "pause" in step:
                    res = await pause(step["pause"])
                else:
                    replicas.current = step.get("gw", 0)
                    label = step.get("session", "s")
                    if label not in sessions:
                        key = step.get("key") or os.environ.get("WARDEN_API_KEY")
                        http = httpx2.AsyncClient(
                            headers={"x-api-key": key} if key else None,
                            timeout=httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT),
                            transport=replicas,
                        )
                        url = gateways[0].rstrip("/") + step["path"]
                        transport = streamable_http_client(url, http_client=http)
                        sessions[label] = await stack.enter_async_context(Client(transport, mode="legacy"))
                    res = await run_call(sessions[label], step)
                res["step"] = i
                results.append(res)
                print(json.dumps(res), flush=True)
            replicas.current = 0
    except BaseException as e:
        ok = False
        print(json.dumps({"ok": False, "error": "".join(traceback.format_exception(e))[-2000:]}))
        sys.exit(1)
    print(json.dumps({"ok": ok}))


asyncio.run(main())
