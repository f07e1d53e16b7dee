"""Memory of one stdio MCP server process per session: starts each server
the way the gateway does (setpriv + prlimit, an empty environment), brings
it to a served session (initialize, initialized, tools/list), and reads its
resident memory (VmRSS, with its children). Prints one line per server with
the median of N processes.

usage: tests/peers/.venv/bin/python benches/stdio-memory.py [N]
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "tests", "peers")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 4
SERVERS = {
    "python SDK (py_stdio_server.py)": [os.path.join(PEERS, ".venv", "bin", "python"), os.path.join(PEERS, "py_stdio_server.py")],
    "TypeScript everything": ["/usr/bin/node", os.path.join(PEERS, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js"), "stdio"],
}


def rss_kib(pid):
    """VmRSS of pid and every descendant, in KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


def session(cmd):
    wrapped = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "/usr/bin/prlimit", "--nofile=256", "--", *cmd]
    p = subprocess.Popen(wrapped, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={})
    send = lambda m: (p.stdin.write((json.dumps(m) + "\n").encode()), p.stdin.flush())
    send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "m", "version": "1"}}})
    p.stdout.readline()
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    p.stdout.readline()
    time.sleep(0.5)
    return p


for name, cmd in SERVERS.items():
    procs = [session(cmd) for _ in range(N)]
    sizes = [rss_kib(p.pid) for p in procs]
    for p in procs:
        p.kill()
        p.wait()
    print(f"{name}: median {statistics.median(sizes) / 1024:.1f} MiB resident per session process "
          f"(min {min(sizes) / 1024:.1f}, max {max(sizes) / 1024:.1f}, n={N})")
