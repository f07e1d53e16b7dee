#!/usr/bin/env bash
# The cost of a virtual-server hop: the same 1 KB tools/call through a
# direct route and through a virtual server whose one member is that same
# server, side by side in one run (wrk, rounds alternating). Both sessions
# are opened first (a virtual server needs one). Installs wrk when missing.
# usage: benches/virtual-hop.sh [seconds] [rounds] [connections]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-8}"; ROUNDS="${2:-3}"; CONNS="${3:-32}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
bash benches/build-release.sh
TMP="$(mktemp -d)"
# SIGINT first (Pingora's fast shutdown; SIGTERM would wait out its grace
# period), SIGKILL after 3 s: a background job of a non-interactive shell
# starts with SIGINT ignored, so a process without its own handler never
# exits on it.
stop() { kill -INT "$1" 2>/dev/null || return 0; for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cleanup() { for p in ${PIDS:-}; do stop "$p"; done; rm -rf "$TMP"; }
trap cleanup EXIT
taskset -c 1 ./target/release/warden-mock --listen 127.0.0.1:0 --threads 1 > "$TMP/mock.out" & PIDS="$!"
for _ in $(seq 100); do grep -q listening "$TMP/mock.out" && break; sleep 0.05; done
MOCK="$(sed -n 's/listening on //p' "$TMP/mock.out")"
mkdir "$TMP/bundle"
cat > "$TMP/bundle/warden.yaml" <<YAML
version: 1
audit: {path: "$TMP/audit.jsonl"}
dlp:
  rules:
    - {name: pii, detectors: [email], direction: both, action: redact}
service_groups:
  - name: bench
    servers:
      - {name: mock, upstreams: ["$MOCK"]}
      - {name: virt, virtual: {members: [{server: mock}]}}
routes:
  - {prefix: /mock, server: mock}
  - {prefix: /virt, server: virt}
YAML
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free)"; APORT="$(free)"
taskset -c 0 ./target/release/warden run --bundle "$TMP/bundle" --state-dir "$TMP/state" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$APORT" --threads 1 2>"$TMP/warden.err" & PIDS="$PIDS $!"
for _ in $(seq 200); do curl -sf "127.0.0.1:$APORT/readyz" >/dev/null && break; sleep 0.05; done
session() {
  curl -s -D - -o /dev/null -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    --data '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' \
    "http://127.0.0.1:$PORT/$1/mcp" | awk -F': ' 'tolower($1)=="mcp-session-id" {print $2}' | tr -d '\r'
}
python3 - "$TMP/body.json" <<'PY'
import json, sys
text = ("deploy the service to eu-west-1 with 3 replicas " * 40)[:820]
json.dump({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":text}}}, open(sys.argv[1], "w"))
PY
for route in mock virt; do
  SID="$(session "$route")"
  [ -n "$SID" ] || { echo "no session on /$route"; cat "$TMP/warden.err"; exit 1; }
  cat > "$TMP/$route.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = "$SID"
wrk.headers["Mcp-Protocol-Version"] = "2025-06-18"
local f = io.open("$TMP/body.json"); wrk.body = f:read("*a"); f:close()
LUA
done
echo "body: $(wc -c < "$TMP/body.json") bytes; wrk -t1 -c$CONNS -d${SECS}s and warden-mock on core 1; warden (1 worker thread, plus the virtual server's aggregator thread) on core 0"
for r in $(seq "$ROUNDS"); do
  for route in mock virt; do
    OUT="$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$TMP/$route.lua" "http://127.0.0.1:$PORT/$route/mcp")"
    RPS="$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')"
    P50="$(echo "$OUT" | awk '$1=="50%" {print $2}')"; P99="$(echo "$OUT" | awk '$1=="99%" {print $2}')"
    NON2XX="$(echo "$OUT" | awk '/Non-2xx/ {print $4}')"
    echo "round $r  $route  rps=$RPS  p50=$P50  p99=$P99  non2xx=${NON2XX:-0}"
  done
done
echo "audit records: $(wc -l < "$TMP/audit.jsonl") (a virtual call writes one on its own leg and one on its member's)"
