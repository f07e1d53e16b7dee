#!/usr/bin/env bash
# Failover of control agents in HA: two agents on one PostgreSQL
# (`serve --database`), one gateway that knows both (`--agent A,B`). Each
# round SIGKILLs the agent the gateway is using and measures
#   job:  from the kill to the other agent holding the jobs lease (when the
#         killed agent held it; warden_leases.holder),
#   poll: from the kill to the gateway using the other agent
#         (warden_control_agent_in_use on its admin endpoint),
#   edit: from the kill to a source edit (published by the source watcher,
#         a job) being what the gateway runs,
# then starts the killed agent again for the next round. Prints each round
# and the medians.
#
# usage: benches/agents-failover.sh [ROUNDS]   (default 7; run as root:
# PostgreSQL runs as warden-pg, which scripts/setup.sh creates)
set -euo pipefail
ROUNDS="${1:-7}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN=target/release; [ -x "$BIN/warden-agent" ] && [ -x "$BIN/warden" ] || BIN=target/debug
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
TMP="$(mktemp -d)"; chmod 755 "$TMP"
PIDS=""
cleanup() {
  for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
  # The server itself (runuser does not pass the signal on).
  if [ -f "$TMP/pg/data/postmaster.pid" ]; then
    pg="$(head -1 "$TMP/pg/data/postmaster.pid")"
    kill -INT "$pg" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pg" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u warden-pg -- "$@"; else "$@"; fi; }

mkdir -p "$TMP/pg"; [ "$(id -u)" = 0 ] && chown warden-pg "$TMP/pg"
as_pg "$PGBIN/initdb" -D "$TMP/pg/data" -U warden --auth=trust --no-sync >/dev/null
PGPORT="$(free_port)"
as_pg "$PGBIN/postgres" -D "$TMP/pg/data" -p "$PGPORT" -k "$TMP/pg" -c listen_addresses=127.0.0.1 \
  -c fsync=off >/dev/null 2>&1 & disown
for _ in $(seq 100); do "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U warden -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U warden -d postgres -qc 'CREATE DATABASE warden'
DB="postgres://warden@127.0.0.1:$PGPORT/warden"
sql() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U warden -d warden -XAtc "$1"; }

"$BIN/warden-agent" keygen --private "$TMP/sign.pem" --public "$TMP/sign.pub" >/dev/null
mkdir -p "$TMP/src/policies"
cat > "$TMP/src/warden.yaml" <<YAML
version: 1
service_groups: [{name: g, servers: [{name: mock, upstreams: ["127.0.0.1:9"]}]}]
routes: [{prefix: /mock, server: mock}]
YAML
printf 'package warden.authz\nimport rego.v1\ndecision := {"allow": true, "reason": "round 0"}\n' > "$TMP/src/policies/authz.rego"
export WARDEN_AGENT_ADMIN_TOKEN=bench-admin-token-0123456789 WARDEN_AGENT_FLEET_TOKEN=bench-fleet-token-0123456789

PORTS=("$(free_port)" "$(free_port)")
AGENT_PID=("" "")
start_agent() {  # $1: 0 or 1
  "$BIN/warden-agent" serve --source "$TMP/src" --database "$DB" --signing-key "$TMP/sign.pem" \
    --listen "127.0.0.1:${PORTS[$1]}" --watch-interval 100ms >/dev/null 2>>"$TMP/agent$1.err" &
  AGENT_PID[$1]=$!; PIDS="$PIDS $!"; disown
  for _ in $(seq 100); do curl -sf "127.0.0.1:${PORTS[$1]}/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}
start_agent 0; start_agent 1
GW_PORT="$(free_port)"; GW_ADMIN="$(free_port)"
"$BIN/warden" run --agent "http://127.0.0.1:${PORTS[0]},http://127.0.0.1:${PORTS[1]}" \
  --agent-token "$WARDEN_AGENT_FLEET_TOKEN" --bundle-public-key "$TMP/sign.pub" --state-dir "$TMP/gw" \
  --gateway-id bench-gw --listen "127.0.0.1:$GW_PORT" --admin "127.0.0.1:$GW_ADMIN" --audit "$TMP/audit.jsonl" \
  >/dev/null 2>>"$TMP/gw.err" & PIDS="$PIDS $!"; disown
for _ in $(seq 200); do curl -sf "127.0.0.1:$GW_ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.05; done

in_use() {  # the index of the agent the gateway uses, or nothing
  curl -sf "127.0.0.1:$GW_ADMIN/metrics" | awk -v a="${PORTS[0]}" -v b="${PORTS[1]}" '
    /^warden_control_agent_in_use/ && / 1$/ && /role="agent"/ { if (index($0, ":" a "\"")) print 0; else if (index($0, ":" b "\"")) print 1 }' | head -1
}
running() { curl -sf "127.0.0.1:$GW_ADMIN/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bundle"]["revision"])'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); else print "-"}'; }

echo "# $ROUNDS rounds; binaries: $BIN; $(nproc) cores"
printf '%-6s %-10s %-10s %-10s\n' round job_s poll_s edit_s
: > "$TMP/job"; : > "$TMP/poll"; : > "$TMP/edit"
for r in $(seq "$ROUNDS"); do
  sleep 1
  u="$(in_use)"; [ -n "$u" ] || u=0
  other=$((1 - u))
  holder="$(sql "SELECT holder FROM warden_leases WHERE name = 'jobs'")"
  held=0; [[ "$holder" == *":${AGENT_PID[$u]}" ]] && held=1
  before="$(running)"
  t0="$(now)"
  kill -9 "${AGENT_PID[$u]}"
  printf 'package warden.authz\nimport rego.v1\ndecision := {"allow": true, "reason": "round %s"}\n' "$r" > "$TMP/src/policies/authz.rego.tmp"
  mv "$TMP/src/policies/authz.rego.tmp" "$TMP/src/policies/authz.rego"
  job=-; poll=-; edit=-
  for _ in $(seq 600); do
    t="$(now)"
    if [ "$job" = - ] && [ "$held" = 1 ] && [[ "$(sql "SELECT holder FROM warden_leases WHERE name = 'jobs'")" == *":${AGENT_PID[$other]}" ]]; then
      job="$(echo "$t - $t0" | bc)"; echo "$job" >> "$TMP/job"; fi
    if [ "$poll" = - ] && [ "$(in_use)" = "$other" ]; then poll="$(echo "$t - $t0" | bc)"; echo "$poll" >> "$TMP/poll"; fi
    if [ "$edit" = - ] && [ "$(running)" != "$before" ]; then edit="$(echo "$t - $t0" | bc)"; echo "$edit" >> "$TMP/edit"; fi
    [ "$poll" != - ] && [ "$edit" != - ] && { [ "$held" = 0 ] || [ "$job" != - ]; } && break
    sleep 0.05
  done
  printf '%-6s %-10s %-10s %-10s\n' "$r" "$job" "$poll" "$edit"
  start_agent "$u"
done
printf 'median %-10s %-10s %-10s\n' "$(median < "$TMP/job")" "$(median < "$TMP/poll")" "$(median < "$TMP/edit")"
