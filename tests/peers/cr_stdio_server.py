"""A hostile stdio MCP server written by hand (no SDK), for faults an SDK
server cannot produce: it ends every message with CR alone (no LF), and it
never answers a call of the tool `hang` (as a process stopped by SIGSTOP, or
stuck, would not); it prints an AWS key to stderr when it starts.

usage: cr_stdio_server.py
"""
import json
import sys

# A secret on stderr, which the gateway logs: it must arrive redacted.
sys.stderr.write("booting with key AKIAIOSFODNN7EXAMPLE\n")
sys.stderr.flush()

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "cr", "version": "1"}}
    elif method == "tools/call" and msg["params"]["name"] == "hang":
        continue
    else:
        result = {"content": [{"type": "text", "text": "cr answer"}]}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\r")
    sys.stdout.flush()
