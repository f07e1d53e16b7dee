"""A stdio MCP server written by hand (no SDK), for faults an SDK server
cannot produce: before each answer it writes a line that is not JSON-RPC.

usage: raw_stdio_server.py [LOG]  (LOG: every line read is appended to it,
as read, before it is parsed, so a test can see how messages were framed)
"""
import json
import sys

LOG = sys.argv[1] if len(sys.argv) > 1 else None

for line in sys.stdin:
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    msg = json.loads(line)
    if "id" not in msg:
        continue
    sys.stdout.write("this is not json {\n")
    if msg.get("method") == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "raw", "version": "1"}}
    else:
        result = {"content": [{"type": "text", "text": "raw answer"}]}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
