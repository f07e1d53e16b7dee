#!/usr/bin/env bash
# Binary upgrades in a row under open-loop load: Warden (release build, one
# worker) in front of warden-mock (which requires its sessions), driven by
# warden-load at RATE calls/s over 8 MCP sessions, while UPGRADES successive
# generations take over the listening sockets (`warden run --upgrade`, then
# SIGQUIT to the old process). Every call must be answered and no session
# lost (`reinitialised` 0): each generation opens the session ids the first
# issued, with the install key in the shared state directory.
#
# usage: benches/upgrades.sh [UPGRADES] [RATE]   (defaults 10 1000)
# Prints one line per upgrade (seconds the old process took to drain), then
# the load report's totals.
set -euo pipefail
UPGRADES="${1:-10}"; RATE="${2:-1000}"
STOP_SIGNAL=TERM
source "$(dirname "${BASH_SOURCE[0]}")/session-bench.sh"
mkdir "$TMP/bundle"
cat > "$TMP/bundle/warden.yaml" <<YAML
version: 1
timeouts: {drain: 1s}
service_groups: [{name: bench, servers: [{name: mock, upstreams: ["$MOCK"]}]}]
routes: [{prefix: /mock, server: mock}]
YAML
PORT="$(free_port)"; APORT="$(free_port)"
gen() {
  taskset -c 0 ./target/release/warden run --bundle "$TMP/bundle" --state-dir "$TMP/state" \
    --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$APORT" --threads 1 \
    --upgrade-sock "$TMP/upgrade.sock" --audit "$TMP/audit.jsonl" "$@" >/dev/null 2>>"$TMP/warden.err" &
  echo $!
}
OLD="$(gen)"; PIDS="$PIDS $OLD"
for _ in $(seq 200); do curl -sf "127.0.0.1:$APORT/readyz" >/dev/null && break; sleep 0.05; done
taskset -c 1 ./target/release/warden-load run --target "http://127.0.0.1:$PORT/mock/mcp" --rate "$RATE" \
  --duration 3600s --sessions 8 --report "$TMP/report.json" --quiet & LPID=$!; PIDS="$PIDS $LPID"
sleep 2
echo "# ${UPGRADES} upgrades at ${RATE}/s, 8 sessions"
for n in $(seq "$UPGRADES"); do
  NEW="$(gen --upgrade)"; PIDS="$PIDS $NEW"
  sleep 0.5
  t0=$(date +%s.%N)
  kill -QUIT "$OLD"
  while kill -0 "$OLD" 2>/dev/null; do sleep 0.05; done
  wait "$OLD" 2>/dev/null || true
  awk -v n="$n" -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "upgrade %d: old process drained in %.2f s\n", n, t1 - t0 }'
  OLD="$NEW"
  sleep 1
done
kill -TERM "$LPID"; wait "$LPID" || true
python3 - "$TMP/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
errs = sum(r['errors'].values())
print(f"# scheduled {r['scheduled']} completed {r['completed']} ok {r['ok']} denied {r['denied']} errors {errs} {r['errors']} reinitialised {r['reinitialised']}")
print(f"# {r['throughput']:.0f} calls/s over {r['duration_s']:.1f} s; p50 {r['latency_us']['p50']} us p99 {r['latency_us']['p99']} us max {r['latency_us']['max']} us")
PY
