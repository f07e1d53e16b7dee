#!/usr/bin/env python3
"""Large replies: what a JSON tool result of 256 KiB, 1 MiB and 10 MiB costs
through the gateway, beside going direct. Warden judges a JSON reply whole
(docs/limits.md says why), so this reads the time per call and the gateway's
resident memory (VmRSS after each size, VmHWM: its peak) with one call in
flight; and the same with 8 calls in flight, for the memory per in-flight
call. warden-mock's `large {bytes}` tool answers with a text of that size.

usage: benches/large-replies.py [calls per size]   (after benches/build-release.sh)
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
API_KEY = "wk_demo_dev_7Qm2"
tmp = tempfile.mkdtemp(prefix="warden-large-")
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def rss(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return 0.0


def post(url, body, sid=None):
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
         "x-api-key": API_KEY}
    if sid:
        h["mcp-session-id"] = sid
        h["mcp-protocol-version"] = "2025-06-18"
    req = urllib.request.Request(url, json.dumps(body).encode(), h, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.headers.get("mcp-session-id"), r.read()


def session(url):
    sid, _ = post(url, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                   "clientInfo": {"name": "large", "version": "1"}}})
    if sid:
        post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    return sid


try:
    mock = subprocess.Popen([os.path.join(REL, "warden-mock"), "--listen", "127.0.0.1:0",
                             "--threads", "1"], stdout=subprocess.PIPE, text=True)
    procs.append(mock)
    MOCK = mock.stdout.readline().strip().removeprefix("listening on ")
    dst = os.path.join(tmp, "bundle")
    shutil.copytree(os.path.join(ROOT, "config", "examples", "sidecar"), dst)
    y = open(os.path.join(dst, "warden.yaml")).read().replace("127.0.0.1:8931", MOCK)
    y = y.replace("      echo: {risk: LOW}", "      echo: {risk: LOW}\n      large: {risk: LOW}")
    open(os.path.join(dst, "warden.yaml"), "w").write(y)
    port, admin = free_port(), free_port()
    gw = subprocess.Popen([os.path.join(REL, "warden"), "run", "--bundle", dst, "--listen",
                           f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--threads", "1",
                           "--audit", os.path.join(tmp, "audit.jsonl"),
                           "--state-dir", os.path.join(tmp, "state")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(gw)
    wait_port(port)
    targets = {"direct": f"http://{MOCK}/mcp", "warden": f"http://127.0.0.1:{port}/mock/mcp"}
    sids = {k: session(u) for k, u in targets.items()}
    print(f"| reply | direct ms/call | Warden ms/call | Warden RSS after (MiB) | "
          f"Warden peak RSS (MiB) | peak with 8 in flight (MiB) |")
    print("|---|---|---|---|---|---|")
    base = rss(gw.pid, "VmRSS")
    for size, label in ((256 << 10, "256 KiB"), (1 << 20, "1 MiB"), (10 << 20, "10 MiB")):
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "large", "arguments": {"bytes": size}}}
        ms = {}
        for name, url in targets.items():
            times = []
            for _ in range(CALLS):
                t0 = time.perf_counter()
                _, body = post(url, call, sids[name])
                times.append((time.perf_counter() - t0) * 1000)
                assert len(body) >= size, f"{name}: {len(body)} bytes"
            ms[name] = statistics.median(times)
        after = rss(gw.pid, "VmRSS")
        peak1 = rss(gw.pid, "VmHWM")
        threads = [threading.Thread(target=post, args=(targets["warden"], call, sids["warden"]))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak8 = rss(gw.pid, "VmHWM")
        print(f"| {label} | {ms['direct']:.1f} | {ms['warden']:.1f} | {after:.0f} | "
              f"{peak1:.0f} | {peak8:.0f} |")
    print(f"\nWarden's RSS before the first large reply: {base:.0f} MiB")
finally:
    for p in procs:
        p.kill()
    shutil.rmtree(tmp, ignore_errors=True)
