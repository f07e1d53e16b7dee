#!/usr/bin/env bash
# Resident memory over a long run: Warden (release build, one worker) in front
# of warden-mock, driven open-loop by warden-load at RATE calls/s with new
# sessions arriving (5 % of operations initialise a session), sampling the
# gateway's RSS and its table gauges every STEP seconds. The curve must
# flatten at the budget (`limits.memory`, MEMORY).
#
# usage: benches/soak.sh [SECS] [RATE] [MEMORY] [STEP]   (defaults 600 1000 128MiB 30)
# Prints one line per sample: seconds, RSS MiB, then each table's entries.
set -euo pipefail
SECS="${1:-600}"; RATE="${2:-1000}"; MEMORY="${3:-128MiB}"; STEP="${4:-30}"
source "$(dirname "${BASH_SOURCE[0]}")/session-bench.sh"
mkdir "$TMP/bundle"
cat > "$TMP/bundle/warden.yaml" <<YAML
version: 1
limits: {memory: $MEMORY}
audit: {path: "$TMP/audit.jsonl"}
dlp:
  rules:
    - {name: secrets, detectors: ["category:secret"], action: block}
    - {name: pii, detectors: ["category:pii"], action: redact}
quotas:
  - {name: per-principal, per: [principal], limit: 100000000, window: 1m}
runaway:
  session: {calls: 100000000}
  loops: {max_repeats: 100000000, window: 10s}
# Information flow: every session's calls raise its flow state (echo is
# unlabelled: its replies are untrusted content), one table entry per session.
flows: {default_clearance: restricted}
service_groups: [{name: bench, servers: [{name: mock, upstreams: ["$MOCK"]}]}]
routes: [{prefix: /mock, server: mock}]
YAML
cat > "$TMP/soak.yaml" <<YAML
name: soak
rate: $RATE
duration: ${SECS}s
sessions: 8
mix:
  - {weight: 95, op: call, tool: echo, payload_bytes: 1024}
  - {weight: 5, op: initialize}
YAML
PORT="$(free_port)"; APORT="$(free_port)"
taskset -c 0 ./target/release/warden run --bundle "$TMP/bundle" --state-dir "$TMP/state" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$APORT" --threads 1 2>"$TMP/warden.err" & WPID=$!; PIDS="$PIDS $WPID"
for _ in $(seq 200); do curl -sf "127.0.0.1:$APORT/readyz" >/dev/null && break; sleep 0.05; done
taskset -c 1 ./target/release/warden-load run --scenario "$TMP/soak.yaml" --target "http://127.0.0.1:$PORT/mock/mcp" \
  --report "$TMP/report.json" --quiet & LPID=$!; PIDS="$PIDS $LPID"
echo "# soak: ${SECS}s at ${RATE}/s, limits.memory ${MEMORY}; seconds, RSS MiB, table entries"
start=$(date +%s)
while kill -0 "$LPID" 2>/dev/null; do
  now=$(( $(date +%s) - start ))
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$WPID/status")
  tables=$(curl -s "127.0.0.1:$APORT/metrics" | awk '/^warden_table_entries/ {gsub(/warden_table_entries\{table="/,""); gsub(/"\}/,""); printf "%s=%s ", $1, $2}')
  echo "$now $rss $tables"
  sleep "$STEP"
done
wait "$LPID" || true
python3 - "$TMP/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"# completed {r['completed']} ok {r['ok']} errors {sum(r['errors'].values())} p50 {r['latency_us']['p50']} us p99 {r['latency_us']['p99']} us")
PY
