"""Drives the Python SDK client (mcp==2.3.0, legacy mode: sessions) through
Warden's held calls, approving them out of band with the `warden-agent
approvals` CLI, and prints a JSON report of every step.

usage: WARDEN_API_KEY=... WARDEN_AGENT_BIN=... WARDEN_AGENT_URL=... \
       APPROVER_ALICE=... APPROVER_BOB=... APPROVER_SELF=... \
       py_approval_client.py URL EXPIRES_SECS
"""
import asyncio
import json
import os
import re
import subprocess
import sys
import traceback

from mcp import Client, MCPError, UrlElicitationRequiredError
sys.dont_write_bytecode = True  # importing the shared helper leaves no __pycache__ behind
from warden_peer import server  # noqa: E402

ID = re.compile(r"Approval id: (ap_[a-z2-7]+)")


def outcome(result):
    text = " ".join(c.text for c in result.content if getattr(c, "text", None) is not None)
    m = ID.search(text)
    return {"error": bool(result.is_error), "text": text, "id": m.group(1) if m else None}


async def call(c, tool, args):
    try:
        return outcome(await c.call_tool(tool, args))
    except MCPError as e:
        if e.error.code != -32042:
            return {"error": True, "text": str(e), "code": e.error.code, "id": None}
        el = UrlElicitationRequiredError.from_error(e.error).elicitations[0]
        return {"error": True, "elicitation": {"url": el.url, "id": el.elicitation_id, "message": el.message}}
    except Exception as e:  # anything else
        return {"error": True, "text": str(e), "id": None}


def cli(who, verb, approval_id, *extra):
    """`warden-agent approvals VERB ID` with approver `who`'s token."""
    env = dict(os.environ, WARDEN_APPROVER_TOKEN=os.environ[f"APPROVER_{who}"])
    p = subprocess.run(
        [os.environ["WARDEN_AGENT_BIN"], "approvals", "--agent", os.environ["WARDEN_AGENT_URL"],
         verb, approval_id, *extra],
        env=env, capture_output=True, text=True, timeout=30,
    )
    return {"ok": p.returncode == 0, "out": (p.stdout + p.stderr)[-600:]}


async def main():
    url = sys.argv[1]
    expires = float(sys.argv[2])
    r = {}
    try:
        async with Client(server(url), mode="legacy") as c:
            # HIGH (the policy asks one approver): held, self-approval
            # refused, approved by alice, then served once.
            r["held"] = await call(c, "add", {"a": 1, "b": 2})
            first = r["held"]["id"]
            r["self"] = cli("SELF", "approve", first)
            r["alice"] = cli("ALICE", "approve", first, "--comment", "looks fine")
            r["changed"] = await call(c, "add", {"a": 1, "b": 3})
            r["served"] = await call(c, "add", {"b": 2, "a": 1})
            r["reused"] = await call(c, "add", {"a": 1, "b": 2})
            # CRITICAL (the tier asks two distinct approvers).
            r["critical_held"] = await call(c, "checksum", {"data": "ledger"})
            crit = r["critical_held"]["id"]
            r["crit_alice"] = cli("ALICE", "approve", crit)
            r["critical_one"] = await call(c, "checksum", {"data": "ledger"})
            r["crit_alice_again"] = cli("ALICE", "approve", crit)
            r["crit_bob"] = cli("BOB", "approve", crit)
            r["critical_served"] = await call(c, "checksum", {"data": "ledger"})
            # A denial is told, with who denied.
            r["deny"] = cli("BOB", "deny", r["reused"]["id"], "--comment", "not today")
            r["denied"] = await call(c, "add", {"a": 1, "b": 2})
            # An approval not used in time lapses.
            r["approve_changed"] = cli("ALICE", "approve", r["changed"]["id"])
            await asyncio.sleep(expires + 1.5)
            r["expired"] = await call(c, "add", {"a": 1, "b": 3})
        # A client that declared URL-mode elicitation gets one.
        async def on_elicit(ctx, params):
            return {"action": "decline"}

        async with Client(server(url), mode="legacy", elicitation_callback=on_elicit) as c:
            r["elicited"] = await call(c, "add", {"a": 5, "b": 5})
        r["ok"] = True
    except BaseException as e:
        r["ok"] = False
        r["error"] = "".join(traceback.format_exception(e))[-2000:]
    print(json.dumps(r))
    sys.exit(0 if r["ok"] else 1)


asyncio.run(main())
