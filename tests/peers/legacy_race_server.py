"""A hand-written legacy HTTP+SSE MCP server (2024-11-05) that writes each
reply on its SSE stream *before* it answers the POST with 202 — what a
busy real server does now and then. Its tool has an outputSchema, so a
gateway that judged such a reply as one to no request would drop it.

usage: legacy_race_server.py   (prints `listening on 127.0.0.1:PORT` first)
"""
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STREAMS = {}  # session id -> queue of messages for its GET stream
LOCK = threading.Lock()

TOOL = {
    "name": "echo",
    "description": "Echo the text",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    "outputSchema": {"type": "object", "properties": {"result": {"type": "string"}}, "required": ["result"]},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if not self.path.startswith("/sse"):
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        sid = f"s{time.monotonic_ns()}"
        q = queue.Queue()
        with LOCK:
            STREAMS[sid] = q
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        try:
            self.wfile.write(f"event: endpoint\ndata: /messages?session_id={sid}\n\n".encode())
            self.wfile.flush()
            while True:
                try:
                    msg = q.get(timeout=0.5)
                except queue.Empty:
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                    continue
                self.wfile.write(f"event: message\ndata: {json.dumps(msg)}\n\n".encode())
                self.wfile.flush()
        except OSError:
            pass

    def do_POST(self):
        sid = self.path.partition("session_id=")[2]
        with LOCK:
            q = STREAMS.get(sid)
        n = int(self.headers.get("content-length") or 0)
        msg = json.loads(self.rfile.read(n) or b"{}")
        if q is None:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        method, mid = msg.get("method"), msg.get("id")
        result = None
        if method == "initialize":
            result = {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "legacy-race", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [TOOL]}
        elif method == "tools/call":
            text = msg["params"]["arguments"]["text"]
            result = {"content": [{"type": "text", "text": text}], "structuredContent": {"result": text}}
        elif mid is not None:
            result = {}
        if mid is not None:
            # The reply goes out on the stream first; the 202 comes later.
            q.put({"jsonrpc": "2.0", "id": mid, "result": result})
            time.sleep(0.3)
        self.send_response(202)
        self.send_header("content-length", "8")
        self.end_headers()
        self.wfile.write(b"Accepted")


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(f"listening on 127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()
