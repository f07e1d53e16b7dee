"""Raw Streamable HTTP (httpx) against a Warden virtual server whose first
member is tests/peers/hostile_member.py: server→client requests answered
through the virtual session, injected responses, the merged GET stream,
cancellation routing, forged answers, and another principal's session.
Prints a JSON report.

usage: py_virtual_hostile.py URL KEY OTHER_KEY
"""
import json
import sys
import threading
import time
import traceback

import httpx2 as httpx  # what mcp==2.3.0 installs

URL, KEY, OTHER = sys.argv[1], sys.argv[2], sys.argv[3]
BASE = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def messages(resp):
    """The JSON-RPC messages of a response, JSON or SSE, as they arrive."""
    if resp.headers.get("content-type", "").startswith("application/json"):
        yield json.loads(resp.read())
        return
    data = []
    for line in resp.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


def main():
    r = {}
    c = httpx.Client(timeout=30)
    h = dict(BASE, **{"x-api-key": KEY})
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {"roots": {}}, "clientInfo": {"name": "hostile-test", "version": "1"}}}
    resp = c.post(URL, json=init, headers=h)
    sid = resp.headers["mcp-session-id"]
    h["mcp-session-id"] = sid
    h["mcp-protocol-version"] = "2025-06-18"
    c.post(URL, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    tools = c.post(URL, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=h).json()
    r["tools"] = sorted(t["name"] for t in tools["result"]["tools"])

    # A cursor the aggregator did not seal for this session and list.
    forged = c.post(URL, json={"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {"cursor": "wvc1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}, headers=h).json()
    r["forged_cursor"] = forged.get("error", {}).get("code")

    # A server→client request: the client sees the aggregator's id, and
    # its answer reaches the member with the member's own id.
    with c.stream("POST", URL, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ask", "arguments": {}}}, headers=h) as s:
        seen = []
        for m in messages(s):
            seen.append(m)
            if m.get("method") == "roots/list":
                r["asked_id"] = m["id"]
                a = c.post(URL, json={"jsonrpc": "2.0", "id": m["id"], "result": {"roots": [{"uri": "file:///workspace"}]}}, headers=h)
                r["answer_status"] = a.status_code
            if m.get("id") == 2:
                break
    r["ask"] = seen[-1]

    # A forged answer to a question nobody asked on this session.
    f = c.post(URL, json={"jsonrpc": "2.0", "id": 987654, "result": {"roots": []}}, headers=h)
    r["forged_status"] = f.status_code

    # A response injected on a call's stream never reaches the client.
    with c.stream("POST", URL, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "spoof", "arguments": {}}}, headers=h) as s:
        r["spoof"] = [m for m in messages(s)]

    # The merged GET stream: the member's list change, never its injected response.
    got = []

    def listen():
        try:
            with c.stream("GET", URL, headers=dict(h, accept="text/event-stream"), timeout=5) as s:
                for m in messages(s):
                    got.append(m)
                    if m.get("method", "").endswith("list_changed"):
                        return
        except Exception as e:  # noqa: BLE001
            got.append({"error": str(e)})

    t = threading.Thread(target=listen)
    t.start()
    t.join(10)
    r["get"] = got

    # A cancellation goes to the member that has the request.
    def wait_call():
        try:
            with c.stream("POST", URL, json={"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "wait", "arguments": {}, "_meta": {"progressToken": "w77"}}}, headers=h) as s:
                for m in messages(s):
                    r.setdefault("wait", []).append(m)
                    if m.get("method") == "notifications/progress":
                        c.post(URL, json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77, "reason": "test"}}, headers=h)
                    if m.get("id") == 77:
                        break
        except Exception as e:  # noqa: BLE001
            r["wait_error"] = str(e)

    t = threading.Thread(target=wait_call)
    t.start()
    t.join(25)
    time.sleep(0.2)
    cancelled = c.post(URL, json={"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "cancelled", "arguments": {}}}, headers=h)
    r["cancelled"] = [m for m in messages(cancelled)][-1]

    # Another principal with this session id.
    other = dict(h, **{"x-api-key": OTHER})
    o = c.post(URL, json={"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}, headers=other)
    r["other_status"] = o.status_code
    r["other_body"] = o.text[:300]
    # Batches are refused, whole.
    b = c.post(URL, json=[{"jsonrpc": "2.0", "id": 6, "method": "tools/list"}], headers=h)
    r["batch_status"] = b.status_code
    r["batch_body"] = b.text[:300]
    d = c.delete(URL, headers=h)
    r["delete"] = d.status_code
    r["ok"] = True
    return r


if __name__ == "__main__":
    try:
        report = main()
    except BaseException as e:  # noqa: BLE001
        report = {"ok": False, "error": "".join(traceback.format_exception(e))[-2000:]}
    print(json.dumps(report))
    sys.exit(0 if report.get("ok") else 1)
