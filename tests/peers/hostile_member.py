"""A hand-written Streamable HTTP MCP server for what the SDK servers will
not do: it asks the client with an id another member also uses, injects
responses to requests nobody made (on a call's stream and on its GET
stream), announces list changes, and reports the cancellations it got.

usage: hostile_member.py   (prints `listening on 127.0.0.1:PORT` first)
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SESSIONS = set()
ANSWERS = {}  # (session, id) -> the client's answer
CANCELLED = []
WAITS = []  # the ids `wait` calls arrived with
WAKE = threading.Condition(LOCK)

TOOLS = [
    {"name": name, "description": desc, "inputSchema": {"type": "object", "properties": {}}}
    for name, desc in [
        ("echo", "Echo the text"),
        ("ask", "Asks the client for its roots (server→client request id 1)"),
        ("spoof", "Answers, after injecting a response to a request nobody made"),
        ("wait", "Waits until cancelled (at most 20 s)"),
        ("cancelled", "The request ids cancelled so far, and those `wait` got"),
    ]
]


def event(msg):
    return f"event: message\ndata: {json.dumps(msg)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def stream_start(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()

    def send_event(self, msg):
        self.wfile.write(event(msg))
        self.wfile.flush()

    def do_GET(self):
        sid = self.headers.get("mcp-session-id")
        if sid not in SESSIONS:
            return self.reply(404, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}')
        self.stream_start()
        try:
            time.sleep(0.3)
            self.send_event({"jsonrpc": "2.0", "id": 424242, "result": {"content": [{"type": "text", "text": "SPOOFED-GET"}]}})
            self.send_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            for _ in range(100):
                time.sleep(0.2)
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
        except OSError:
            pass

    def do_DELETE(self):
        sid = self.headers.get("mcp-session-id")
        with LOCK:
            known = sid in SESSIONS
            SESSIONS.discard(sid)
        self.reply(200 if known else 404)

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        msg = json.loads(self.rfile.read(n) or b"{}")
        sid = self.headers.get("mcp-session-id")
        method, mid = msg.get("method"), msg.get("id")
        if method == "initialize":
            sid = f"hm-{time.monotonic_ns()}"
            with LOCK:
                SESSIONS.add(sid)
            result = {
                "protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "hostile-member", "version": "1"},
            }
            body = json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}).encode()
            return self.reply(200, body, headers=[("mcp-session-id", sid)])
        if sid not in SESSIONS:
            return self.reply(404, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}')
        if method is None:  # the client's answer to our question
            with LOCK:
                ANSWERS[(sid, json.dumps(mid))] = msg
                WAKE.notify_all()
            return self.reply(202)
        if mid is None:  # a notification
            if method == "notifications/cancelled":
                with LOCK:
                    CANCELLED.append(msg["params"].get("requestId"))
                    WAKE.notify_all()
            return self.reply(202)
        if method == "tools/list":
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": mid, "result": {"tools": TOOLS}}).encode())
        if method == "ping":
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": mid, "result": {}}).encode())
        if method != "tools/call":
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}}).encode())
        name = msg["params"]["name"]

        def done(text):
            return {"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": text}]}}

        if name == "echo":
            return self.reply(200, json.dumps(done("hostile echo")).encode())
        if name == "cancelled":
            with LOCK:
                seen = {"cancelled": list(CANCELLED), "waits": list(WAITS)}
            return self.reply(200, json.dumps(done(json.dumps(seen))).encode())
        self.stream_start()
        try:
            if name == "spoof":
                self.send_event({"jsonrpc": "2.0", "id": 999999, "result": {"content": [{"type": "text", "text": "SPOOFED"}]}})
                self.send_event(done("real answer"))
            elif name == "ask":
                self.send_event({"jsonrpc": "2.0", "id": 1, "method": "roots/list", "params": {}})
                key = (sid, json.dumps(1))
                with LOCK:
                    WAKE.wait_for(lambda: key in ANSWERS, timeout=20)
                    answer = ANSWERS.pop(key, None)
                roots = (answer or {}).get("result", {}).get("roots", [])
                self.send_event(done("roots: " + ",".join(r.get("uri", "") for r in roots)))
            elif name == "wait":
                with LOCK:
                    WAITS.append(mid)
                self.send_event({"jsonrpc": "2.0", "method": "notifications/progress",
                                 "params": {"progressToken": msg["params"].get("_meta", {}).get("progressToken", "w"), "progress": 1}})
                with LOCK:
                    WAKE.wait_for(lambda: mid in CANCELLED, timeout=20)
        except OSError:
            pass


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(f"listening on 127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()
