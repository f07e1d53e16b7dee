#!/usr/bin/env bash
# First end-to-end throughput comparison: wrk driving 1 KB tools/call POSTs at
# warden-mock directly, through a bare Pingora pass-through (the framework's
# ceiling) and through Warden, side by side in one run.
# usage: benches/e2e-quick.sh [seconds] [connections] [rounds]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-10}"; CONNS="${2:-32}"; ROUNDS="${3:-3}"
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
service_groups: [{name: bench, servers: [{name: mock, upstreams: ["$MOCK"]}]}]
routes: [{prefix: /mock, server: mock}]
YAML
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
APORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
taskset -c 0 ./target/release/warden run --bundle "$TMP/bundle" --state-dir "$TMP/state" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$APORT" --threads 1 2>"$TMP/warden.err" & PIDS="$PIDS $!"
for _ in $(seq 200); do curl -sf "127.0.0.1:$APORT/readyz" >/dev/null && break; sleep 0.05; done
PPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
taskset -c 0 ./target/release/pingora-passthrough "127.0.0.1:$PPORT" "$MOCK" 1 2>/dev/null & PIDS="$PIDS $!"
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PPORT") 2>/dev/null && break; sleep 0.05; done
python3 - "$TMP/body.json" <<'PY'
import json, sys
text = ("deploy the service to eu-west-1 with 3 replicas " * 40)[:820]
json.dump({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":text}}}, open(sys.argv[1], "w"))
PY
cat > "$TMP/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local f = io.open("$TMP/body.json"); wrk.body = f:read("*a"); f:close()
LUA
echo "body: $(wc -c < "$TMP/body.json") bytes; wrk -t1 -c$CONNS -d${SECS}s and warden-mock on core 1; each proxy (1 worker thread) on core 0"
for r in $(seq "$ROUNDS"); do
  for target in direct pingora warden; do
    case "$target" in
      direct) URL="http://$MOCK/mcp" ;;
      pingora) URL="http://127.0.0.1:$PPORT/mcp" ;;
      warden) URL="http://127.0.0.1:$PORT/mock/mcp" ;;
    esac
    OUT="$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$TMP/post.lua" "$URL")"
    RPS="$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')"
    P50="$(echo "$OUT" | awk '$1=="50%" {print $2}')"; P99="$(echo "$OUT" | awk '$1=="99%" {print $2}')"
    NON2XX="$(echo "$OUT" | awk '/Non-2xx/ {print $4}')"
    echo "round $r  $target  rps=$RPS  p50=$P50  p99=$P99  non2xx=${NON2XX:-0}"
  done
done
echo "audit records written: $(wc -l < "$TMP/audit.jsonl")"
