"""A stdio MCP server written by hand (no SDK), for faults an SDK server
cannot produce: before each answer it writes a line that is not JSON-RPC.

usage: raw_stdio_server.py
"""
import json
import sys

for line in sys.stdin:
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
