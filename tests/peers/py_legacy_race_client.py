"""Raw legacy HTTP+SSE client (httpx2, installed with mcp==2.3.0): opens the
GET stream, then initializes, lists and calls, each reply awaited on the
stream (5 s each). Prints a JSON report.

usage: py_legacy_race_client.py SSE_URL
"""
import json
import queue
import sys
import threading
import traceback
from urllib.parse import urljoin

import httpx2 as httpx


def main():
    url = sys.argv[1]
    r = {}
    events = queue.Queue()
    c = httpx.Client(timeout=30)

    def listen():
        with c.stream("GET", url, headers={"accept": "text/event-stream"}) as s:
            name, data = "message", []
            for line in s.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line == "" and data:
                    events.put((name, "\n".join(data)))
                    name, data = "message", []

    threading.Thread(target=listen, daemon=True).start()
    kind, endpoint = events.get(timeout=10)
    assert kind == "endpoint", kind
    post_url = urljoin(url, endpoint)
    h = {"content-type": "application/json"}

    def call(mid, method, params):
        resp = c.post(post_url, json={"jsonrpc": "2.0", "id": mid, "method": method, "params": params}, headers=h)
        r[f"{method}_status"] = resp.status_code
        while True:
            kind, data = events.get(timeout=5)
            msg = json.loads(data)
            if msg.get("id") == mid:
                return msg

    r["initialize"] = call(0, "initialize", {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "race", "version": "1"}})
    c.post(post_url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    r["tools"] = call(1, "tools/list", {})
    r["call"] = call(2, "tools/call", {"name": "echo", "arguments": {"text": "before the 202"}})
    r["ok"] = True
    return r


if __name__ == "__main__":
    try:
        report = main()
    except BaseException as e:  # noqa: BLE001
        report = {"ok": False, "error": "".join(traceback.format_exception(e))[-1500:]}
    print(json.dumps(report))
    sys.exit(0 if report.get("ok") else 1)
