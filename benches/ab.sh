#!/usr/bin/env bash
# Side-by-side cost of Warden variants on one 1 KB tools/call, rounds
# alternating, so that two builds (before/after a change) or two bundles (a
# guard on/off) are compared on the same noisy machine at the same moment.
#
# usage: benches/ab.sh SECS ROUNDS NAME=SPEC [NAME=SPEC ...]
#   SPEC is `pingora` (the Pingora pass-through of target/release, from warden-benches),
#   `pingora:BINARY` (another build of it), `pingora-nosteal[:BINARY]` (the
#   same with one event loop per worker thread, as Warden runs one worker), or
#   `WARDEN_BINARY[:SECTION,SECTION...]`: that binary with the full-pipeline
#   bundle of benches/e2e.py (API-key auth, cached policy, catalog schema, DLP
#   both ways, a quota, hash-chained audit) minus the named top-level
#   sections (`dlp`, `quotas`; `schema` drops the argument schema), plus
#   those named with a `+` (`+flows`: information flow, docs/data-flow.md;
#   `+price`: echo priced, so every reply is charged, docs/guards.md;
#   `+budget`: priced and under a tenant's, a principal's and a session's
#   budget in this replica; `+gbudget`: the same budgets held in the Redis
#   at AB_REDIS;
#   `+anomaly`: behaviour baselines, the example's `anomaly:` section with a
#   one-second learning period, so every call is judged against a learnt
#   baseline and learnt from, docs/guards.md; without it the section is
#   dropped). The
#   bundle's `policies/` stay: a bundle without a policy refuses every call,
#   and a variant that does not forward the call is refused here.
# e.g. bash benches/ab.sh 6 3 before=/tmp/old/warden after=target/release/warden
#
# One worker per proxy on core 0; wrk (-t1, -c32 or AB_CONNECTIONS) and warden-mock on core 1.
# Prints each round, then the median calls/s and proxy CPU µs per call
# (from /proc/PID/stat) of every variant.
#
# AB_CONNECTIONS=N: wrk's connections (default 32; e2e.sh uses 64).
# AB_THREADS=N: N workers per proxy, unpinned, against wrk -tN with N times
# the connections, all sharing every core (default 1, pinned as above).
# AB_TEXT_BYTES=N: the echoed text's length (default 924: a 1 KB call and
# reply; 16284 gives a 16 KB call, as e2e.sh sends).
# AB_SSE=1: the mock answers with an SSE stream instead of a JSON reply.
# AB_EVENTS=N (with AB_SSE=1): that stream is N events, the text first in
# N - 1 progress notifications, then the result (e2e.py's SSE10 is 10); the
# call asks for progress with a progressToken, as an SDK client does.
# AB_SESSION=1: each variant gets an MCP session first (initialize, then
# initialized) and every call carries its id, as e2e.py's calls do; without
# it the calls are sessionless, which skips the session table and the reply
# ledger (about 6 µs less per 1 KB call, s34).
# Every call carries a new JSON-RPC id (a counter in wrk's Lua), as real
# clients send. AB_IDS=0 reuses id 1 on every call, as runs before session
# 36 did (in a session the reply ledger then finds the id it already holds);
# a variant whose SECTION list names `+ids` still gets new ids, so the two
# are compared on one binary in one run. AB_ID_FIRST=N: the ids count from
# N (e2e.py's wrk counts from 1,000,000,000: ten-digit ids, which DLP's
# digit detectors read as it reads any number of the message); a variant
# whose SECTION list names `+id10` counts from 1,000,000,000 whatever
# AB_ID_FIRST says, so the two are compared on one binary in one run.
# AB_PROBE="...": what the reply must hold for the call to count as
# forwarded (default: the filler's first line; a filler with quotes or
# backslashes comes back escaped, so give a part without them).
# AB_FILLER="...": the prose the text repeats (e2e.py's is "deploy the
# billing service to eu-west-1 with three replicas and a canary; ").
#
# AB_PROFILE=NAME (one of the variants): after the rounds, `perf record
# --call-graph dwarf` of that proxy over one more SECS run, kept in
# AB_PROFILE_OUT (default /tmp/warden-ab.perf.data), and the CPU of a call
# by phase (benches/phases.py). Needs `perf` (Debian's linux-perf).
# AB_SYSCALLS=1: after the rounds, each variant's syscalls per call by
# name (`perf stat` over one more SECS run).
# AB_ALLOCS=1: after the rounds, each Warden variant's heap allocations per
# call, and the code that makes them (uprobes on mimalloc; the recording
# is kept in AB_ALLOCS_OUT, default /tmp, as warden-allocs.NAME.data).
# AB_INSTRUCTIONS=1: instead of timed rounds, each variant runs under
# valgrind's callgrind (Debian's `valgrind`, installed if missing) and the
# user-space instructions it executes per call are counted over
# AB_INSTRUCTIONS_CALLS calls (default 2000, 4 connections), after a
# warm-up, in AB_INSTRUCTIONS_PASSES passes over the variants (default 2;
# the least is reported): a deterministic figure for comparing builds on a noisy machine
# (kernel time and memory stalls are not in it). Slow: about 50 times
# slower per call. The counts, by function, are kept in
# AB_INSTRUCTIONS_OUT (default /tmp) as warden-cg.NAME (callgrind_annotate
# reads them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="$1"; ROUNDS="$2"; shift 2
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# AB_SKIP_BUILD=1: use the binaries already in target/release as they are.
[ -n "${AB_SKIP_BUILD:-}" ] || bash benches/build-release.sh
TMP="$(mktemp -d)"
# Under AB_INSTRUCTIONS every proxy starts under callgrind.
VG=()
if [ -n "${AB_INSTRUCTIONS:-}" ]; then
  command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
  VG=(valgrind -q --tool=callgrind --callgrind-out-file="$TMP/cg.%p")
fi
# Readiness waits: longer under callgrind.
WAITS=200; [ -n "${AB_INSTRUCTIONS:-}" ] && WAITS=2400
PIDS=""
# SIGINT first (Pingora's fast shutdown; SIGTERM would wait out its grace
# period), SIGKILL after 3 s: a background job of a non-interactive shell
# starts with SIGINT ignored, so a process without its own handler never
# exits on it.
stop() { kill -INT "$1" 2>/dev/null || return 0; for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cleanup() { for p in ${PIDS:-}; do stop "$p"; done; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# AB_THREADS=N (N > 1): each proxy runs N workers unpinned, and wrk
# (-tN, N × the connections) and warden-mock share every core with them.
W="${AB_THREADS:-1}"
if [ "$W" -gt 1 ]; then PROXY_CORES="0-$(($(nproc) - 1))"; GEN_CORES="$PROXY_CORES"; else PROXY_CORES=0; GEN_CORES=1; fi
taskset -c "$GEN_CORES" ./target/release/warden-mock --listen 127.0.0.1:0 --threads "$W" > "$TMP/mock.out" & PIDS="$!"
for _ in $(seq 100); do grep -q listening "$TMP/mock.out" && break; sleep 0.05; done
MOCK="$(sed -n 's/listening on //p' "$TMP/mock.out")"

python3 - "$TMP/body.json" "${AB_TEXT_BYTES:-924}" "${AB_SSE:-}" "${AB_FILLER:-deploy the service to eu-west-1 with 3 replicas }" "${AB_EVENTS:-1}" <<'PY'
import json, sys
n = int(sys.argv[2])
filler = sys.argv[4]
# n bytes of UTF-8 (cut on a character), written as the SDKs write it:
# UTF-8, not \u escapes (which made a "1 KB" CJK text 5.5 KB of JSON).
text = (filler * (n // len(filler.encode()) + 1)).encode()[:n].decode(errors="ignore")
args = {"text": text}
params = {"name": "echo", "arguments": args}
if sys.argv[3] == "1":
    args["sse"] = True
    if int(sys.argv[5]) > 1:
        args["events"] = int(sys.argv[5])
        params["_meta"] = {"progressToken": "ab"}
json.dump({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
          open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False)
PY
cat > "$TMP/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["x-api-key"] = "wk_demo_dev_7Qm2"
local f = io.open("$TMP/body.json"); wrk.body = f:read("*a"); f:close()
LUA
# New ids per call: the body split around its id, a counter between.
cat > "$TMP/ids.lua" <<'LUA'
local head, tail = wrk.body:match('^(.-"id": ?)1(,.*)$')
assert(head, "the body's id")
local n = tonumber(os.getenv("AB_ID_FIRST") or "0")
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. n .. tail)
end
LUA

declare -A URL PID LUA
NAMES=()
for arg in "$@"; do
  name="${arg%%=*}"; spec="${arg#*=}"; NAMES+=("$name")
  port="$(free_port)"
  if [ "${spec%%:*}" = pingora ] || [ "${spec%%:*}" = pingora-nosteal ]; then
    pt=./target/release/pingora-passthrough; [ "${spec#*:}" != "$spec" ] && pt="${spec#*:}"
    steal=steal; [ "${spec%%:*}" = pingora-nosteal ] && steal=nosteal
    taskset -c "$PROXY_CORES" "${VG[@]}" "$pt" "127.0.0.1:$port" "$MOCK" "$W" "$steal" 2>/dev/null &
    PID[$name]=$!; PIDS="$PIDS $!"; URL[$name]="http://127.0.0.1:$port/mcp"
  else
    bin="${spec%%:*}"; drop=""; [ "$bin" != "$spec" ] && drop="${spec#*:}"
    mkdir "$TMP/$name"; cp -r config/examples/sidecar/. "$TMP/$name/"
    python3 - "$TMP/$name/warden.yaml" "$MOCK" "$drop" <<'PY'
import re, sys
path, mock, drop = sys.argv[1], sys.argv[2], [d for d in sys.argv[3].split(",") if d]
y = open(path).read().replace("127.0.0.1:8931", mock)
if "schema" not in drop:
    y = y.replace("      echo: {risk: LOW}",
                  "      echo:\n        risk: LOW\n        input_schema:\n"
                  "          type: object\n          required: [text]\n"
                  "          additionalProperties: false\n"
                  "          properties: {text: {type: string, maxLength: 1000000}, sse: {type: boolean},"
                  " events: {type: integer, minimum: 1, maximum: 1000}}")
if "quotas" not in drop:
    y += "\nquotas:\n  - {name: per-agent, per: [principal], limit: 1000000000, window: 1h}\n"
if ("+budget" in drop or "+gbudget" in drop) and "+price" not in drop:
    drop.append("+price")
if "+price" in drop:
    # echo priced per call and per unit of a number its result would
    # carry (the prose is none: the pointer is read, no unit counted), so
    # every reply is charged, recorded and counted (docs/guards.md).
    price = '{currency: EUR, per_call: "0.002", per_unit: {pointer: /content/0/text, price: "0.0001"}}'
    if "      echo: {risk: LOW}" in y:
        y = y.replace("      echo: {risk: LOW}", "      echo: {risk: LOW, price: " + price + "}", 1)
    else:
        y = y.replace("        risk: LOW\n", "        risk: LOW\n        price: " + price + "\n", 1)
if "+budget" in drop or "+gbudget" in drop:
    # Every call is under a tenant's, a principal's and a session's budget
    # (large enough never to refuse): reserved before the chain, settled
    # after it, the reply's units charged. `+gbudget` holds them in Redis
    # (AB_REDIS, e.g. redis://127.0.0.1:6379) across replicas.
    import os
    g = "+gbudget" in drop
    if g:
        y += "\nredis: {url: \"" + os.environ.get("AB_REDIS", "redis://127.0.0.1:6379") + "\"}\n"
    glob = ", global: true" if g else ""
    y += ("\nbudgets:\n  limits:\n"
          "    - {name: tenant-month, per: tenant, period: month, amount: \"1000000000\"" + glob + "}\n"
          "    - {name: agent-day, per: principal, period: day, amount: \"1000000000\"" + glob + "}\n"
          "    - {name: session-day, per: session, period: day, amount: \"1000000000\"" + glob + "}\n")
if "+anomaly" in drop:
    # Every call observed against its principal's baseline (past its
    # learning period after a second: rate, hour and denial rate judged
    # too) and learnt from once forwarded (docs/guards.md).
    y = re.sub(r"(?m)^anomaly:\n(  .*\n)*", "anomaly:\n  learning: 1s\n", y)
else:
    # The example keeps baselines; the other variants measure without.
    drop.append("anomaly")
if "+flows" in drop:
    # Every call is tracked: echo is unlabelled (its output untrusted),
    # so each reply raises its flow, and each call is checked as a read.
    y += "\nflows: {default_clearance: restricted}\n"
sections = re.split(r"(?m)^(?=[a-z_]+:)", y)
y = "".join(s for s in sections if not any(s.startswith(d + ":") for d in drop if d != "schema" and not d.startswith("+")))
open(path, "w").write(y)
PY
    admin="$(free_port)"
    taskset -c "$PROXY_CORES" "${VG[@]}" "$bin" run --bundle "$TMP/$name" --state-dir "$TMP/state-$name" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
      --threads "$W" --audit "$TMP/$name.audit.jsonl" 2>"$TMP/$name.err" &
    PID[$name]=$!; PIDS="$PIDS $!"; URL[$name]="http://127.0.0.1:$port/mock/mcp"
    for _ in $(seq "$WAITS"); do curl -sf "127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.05; done
  fi
  for _ in $(seq "$WAITS"); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  LUA[$name]="$TMP/post.lua"; sess=()
  ids="${AB_IDS:-1}"; [ "$ids" = 0 ] && ids=""; case ",${spec#*:}," in *,+ids,*) [ "$spec" != "${spec#*:}" ] && ids=1 ;; esac
  if [ -n "${AB_SESSION:-}" ]; then
    # An MCP session first, as e2e.py opens one: its id goes with each call.
    sid="$(curl -s -D - -o /dev/null -X POST -H 'content-type: application/json' \
      -H 'accept: application/json, text/event-stream' -H 'x-api-key: wk_demo_dev_7Qm2' \
      --data '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"ab","version":"1"}}}' \
      "${URL[$name]}" | tr -d '\r' | sed -n 's/^[Mm]cp-[Ss]ession-[Ii]d: //p')"
    if [ -n "$sid" ]; then
      sess=(-H "mcp-session-id: $sid" -H 'mcp-protocol-version: 2025-06-18')
      curl -s -o /dev/null -X POST -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
        -H 'x-api-key: wk_demo_dev_7Qm2' "${sess[@]}" --data '{"jsonrpc":"2.0","method":"notifications/initialized"}' "${URL[$name]}"
      LUA[$name]="$TMP/post-$name.lua"
      { cat "$TMP/post.lua"; echo "wrk.headers[\"Mcp-Session-Id\"] = \"$sid\""; echo 'wrk.headers["MCP-Protocol-Version"] = "2025-06-18"'; } > "${LUA[$name]}"
    fi
  fi
  if [ -n "$ids" ]; then
    first="${AB_ID_FIRST:-0}"; case ",${spec#*:}," in *,+id10,*) [ "$spec" != "${spec#*:}" ] && first=1000000000 ;; esac
    { cat "${LUA[$name]}"; sed "s/tonumber(os.getenv(\"AB_ID_FIRST\") or \"0\")/$first/" "$TMP/ids.lua"; } > "$TMP/post-$name-ids.lua"; LUA[$name]="$TMP/post-$name-ids.lua"
  fi
  # Every variant must forward the call: a refusal would be measured as a cheap call.
  reply="$(curl -s -X POST -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'x-api-key: wk_demo_dev_7Qm2' "${sess[@]}" --data @"$TMP/body.json" "${URL[$name]}")"
  # (the filler's first line: a line break comes back escaped)
  probe="${AB_PROBE:-${AB_FILLER:-deploy the service}}"; probe="${probe%%$'\n'*}"
  case "$reply" in *'"result"'*"${probe:0:40}"*) ;; *) echo "$name does not forward the call: ${reply:0:200}" >&2; exit 1 ;; esac
  taskset -c 1 wrk -t1 -c8 -d1s -s "${LUA[$name]}" "${URL[$name]}" >/dev/null
done

if [ -n "${AB_INSTRUCTIONS:-}" ]; then
  # Calls through each proxy with callgrind counting, then a dump: the
  # instructions of that stretch (the dump's totals) over the calls
  # answered 200.
  n="${AB_INSTRUCTIONS_CALLS:-2000}"
  # N calls on four keep-alive connections, fresh ids, the headers of the
  # variant's wrk script; prints how many were answered 200.
  cat > "$TMP/calls.py" <<'PY'
import http.client, json, re, sys, threading, urllib.parse
url, n, body, lua = urllib.parse.urlparse(sys.argv[1]), int(sys.argv[2]), json.load(open(sys.argv[3])), open(sys.argv[4]).read()
first = int(sys.argv[5]) if len(sys.argv) > 5 else 10
headers = dict(re.findall(r'wrk\.headers\["([^"]+)"\] = "([^"]*)"', lua))
done = [0] * 4
def run(k):
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    for i in range(k, n, 4):
        b = dict(body, id=first + i)
        c.request("POST", url.path, json.dumps(b), headers)
        r = c.getresponse(); r.read()
        done[k] += r.status == 200
ts = [threading.Thread(target=run, args=(k,)) for k in range(min(n, 4))]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(done))
PY
  passes="${AB_INSTRUCTIONS_PASSES:-2}"
  for pass in $(seq "$passes"); do
  for name in "${NAMES[@]}"; do
    pid="${PID[$name]}"
    # The process valgrind runs is the proxy itself (valgrind execs it).
    # Callgrind takes a command when the proxy next runs code: one call
    # after each (counted in the stretch it starts or ends, under 0.1 %).
    callgrind_control -z "$pid" >/dev/null & c=$!
    sleep 0.5; taskset -c "$GEN_CORES" python3 "$TMP/calls.py" "${URL[$name]}" 1 "$TMP/body.json" "${LUA[$name]}" 1000000 >/dev/null; wait "$c" || true
    calls="$(taskset -c "$GEN_CORES" python3 "$TMP/calls.py" "${URL[$name]}" "$n" "$TMP/body.json" "${LUA[$name]}" "$((${AB_ID_FIRST:-0} + 10))")"
    callgrind_control -d "$pid" >/dev/null & c=$!
    sleep 0.5; taskset -c "$GEN_CORES" python3 "$TMP/calls.py" "${URL[$name]}" 1 "$TMP/body.json" "${LUA[$name]}" 2000000 >/dev/null; wait "$c" || true
    for _ in $(seq 100); do ls "$TMP"/cg."$pid".* >/dev/null 2>&1 && break; sleep 0.1; done
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$TMP"/cg."$pid".*)"
    python3 -c "print(f'pass $pass  $name  instructions_per_call={$ir / max($calls, 1):.0f}')" | tee -a "$TMP/irs"
    cat "$TMP"/cg."$pid".* > "${AB_INSTRUCTIONS_OUT:-/tmp}/warden-cg.$name"; rm -f "$TMP"/cg."$pid".*
  done
  done
  # The least of the passes: background work (timers, the audit writer's
  # idle polls) runs by the clock, and a slow pass pays more of it.
  echo
  echo "| variant | user-space instructions per call (callgrind, least of $passes passes of ${n} calls of ${AB_TEXT_BYTES:-924} bytes of text, 4 connections) |"
  echo "|---|---|"
  for name in "${NAMES[@]}"; do
    awk -v n="$name" '$3 == n {split($4, a, "="); if (m == "" || a[2] + 0 < m) m = a[2] + 0} END {printf "| %s | %d |\n", n, m}' "$TMP/irs"
  done
  exit 0
fi
CLK="$(getconf CLK_TCK)"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Kernel time alone (stime).
kticks() { awk '{print $15}' "/proc/$1/stat"; }
if [ "$W" -gt 1 ]; then where="$W workers per proxy, wrk -t$W -c$((W * ${AB_CONNECTIONS:-32})), all unpinned"; else where="wrk -t1 -c${AB_CONNECTIONS:-32}; proxy on core 0, wrk + mock on core 1"; fi
echo "tools/call with ${AB_TEXT_BYTES:-924} bytes of text, ${SECS}s, $ROUNDS rounds alternating; $where"
for r in $(seq "$ROUNDS"); do
  for name in "${NAMES[@]}"; do
    t0="$(ticks "${PID[$name]}")"; k0="$(kticks "${PID[$name]}")"
    out="$(taskset -c "$GEN_CORES" wrk -t"$W" -c"$((W * ${AB_CONNECTIONS:-32}))" -d"${SECS}s" -s "${LUA[$name]}" "${URL[$name]}")"
    t1="$(ticks "${PID[$name]}")"; k1="$(kticks "${PID[$name]}")"
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
    total="$(echo "$out" | awk '/requests in/ {print $1}')"
    non2xx="$(echo "$out" | awk '/Non-2xx/ {print $4}')"
    cpu="$(python3 -c "print(f'{($t1 - $t0) * 1e6 / $CLK / max($total, 1):.1f}')")"
    sys="$(python3 -c "print(f'{($k1 - $k0) * 1e6 / $CLK / max($total, 1):.1f}')")"
    echo "round $r  $name  rps=$rps  cpu_us=$cpu  non2xx=${non2xx:-0}  sys_us=$sys" | tee -a "$TMP/rounds"
  done
done
if [ -n "${AB_PROFILE:-}" ]; then
  out="${AB_PROFILE_OUT:-/tmp/warden-ab.perf.data}"
  pid="${PID[$AB_PROFILE]}"
  t0="$(ticks "$pid")"
  taskset -c 1 wrk -t1 -c"${AB_CONNECTIONS:-32}" -d"$((SECS + 2))s" -s "${LUA[$AB_PROFILE]}" "${URL[$AB_PROFILE]}" > "$TMP/prof.wrk" &
  W=$!
  sleep 1
  perf record -q -F 999 --call-graph dwarf,16384 -o "$out" -p "$pid" -- sleep "$SECS" >/dev/null 2>&1
  wait "$W"
  t1="$(ticks "$pid")"
  total="$(awk '/requests in/ {print $1}' "$TMP/prof.wrk")"
  us="$(python3 -c "print(f'{($t1 - $t0) * 1e6 / $CLK / max($total, 1):.1f}')")"
  echo "profile of $AB_PROFILE under perf: $(awk '/Requests\/sec/ {print $2}' "$TMP/prof.wrk") calls/s, $us µs CPU per call; samples in $out"
  perf script -i "$out" -F comm,ip,sym 2>/dev/null | python3 benches/phases.py "$us"
fi
if [ -n "${AB_SYSCALLS:-}" ]; then
  # Syscalls per call of each variant: `perf stat` counts every syscall
  # entry of the proxy over one more wrk run (nothing else calls it then),
  # ÷ the calls wrk made.
  for name in "${NAMES[@]}"; do
    perf stat -x, -e 'syscalls:sys_enter_*' -p "${PID[$name]}" -o "$TMP/sys.$name" 2>/dev/null &
    P=$!
    sleep 0.5
    out="$(taskset -c 1 wrk -t1 -c"${AB_CONNECTIONS:-32}" -d"${SECS}s" -s "${LUA[$name]}" "${URL[$name]}")"
    sleep 0.2
    kill -INT "$P"; wait "$P" 2>/dev/null || true
    calls="$(echo "$out" | awk '/requests in/ {print $1}')"
    echo "syscalls per call, $name ($calls calls):"
    awk -F, -v n="$calls" '$1 ~ /^[0-9]+$/ && $1 > 0 {sub("syscalls:sys_enter_", "", $3); printf "  %-16s %.3f\n", $3, $1 / n}' "$TMP/sys.$name" | sort -k2 -rn | head -12
  done
fi
if [ -n "${AB_ALLOCS:-}" ]; then
  # Heap allocations per call of each Warden variant: uprobes on the
  # allocator's entry points (mimalloc's, which the global allocator calls),
  # counted by `perf stat` over one more run at 4 connections (a uprobe
  # costs a trap per hit), then every one of a 1-second run recorded with
  # its call stack (perf takes no sampling period for uprobes), and the
  # callers that allocate most per call printed.
  for name in "${NAMES[@]}"; do
    case "${PID[$name]}" in "") continue ;; esac
    bin="$(readlink -f "/proc/${PID[$name]}/exe")"
    grep -q ' T mi_malloc_aligned$' < <(nm "$bin" 2>/dev/null) || continue
    # By file offset: the C allocator has no debug information to find
    # its symbols by, so each probe is placed at its symbol's address less
    # the executable segment's load bias.
    read -r seg_off seg_addr < <(readelf -lW "$bin" | awk '$1 == "LOAD" && $8 == "E" {print $2, $3; exit}')
    bias=$((seg_addr - seg_off))
    perf probe -q -d 'probe_*' 2>/dev/null || true
    # Both kinds of entry: the global allocator (proxy/alloc) asks for
    # plain blocks where they are aligned enough, aligned ones otherwise.
    for f in mi_malloc mi_zalloc mi_realloc mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned; do
      addr="$(nm "$bin" | awk -v f="$f" '$2 == "T" && $3 == f {print $1}')"
      [ -n "$addr" ] || continue
      perf probe -q -x "$bin" -a "$f=$(printf '0x%x' $((0x$addr - bias)))" 2>/dev/null
    done
    ev="$(perf probe -l 2>/dev/null | awk '{print $1}' | grep -E ':mi_(malloc|zalloc|realloc)(_aligned)?$' | paste -sd, -)"
    perf stat -x, -e "$ev" -p "${PID[$name]}" -o "$TMP/allocs.$name" 2>/dev/null &
    P=$!; sleep 0.5
    out="$(taskset -c 1 wrk -t1 -c4 -d"${SECS}s" -s "${LUA[$name]}" "${URL[$name]}")"
    sleep 0.2; kill -INT "$P"; wait "$P" 2>/dev/null || true
    calls="$(echo "$out" | awk '/requests in/ {print $1}')"
    echo "heap allocations per call, $name ($calls calls):"
    awk -F, -v n="$calls" '$1 ~ /^[0-9]+$/ {printf "  %-28s %.1f\n", $3, $1 / n}' "$TMP/allocs.$name"
    perf record -q -c 1 -e "$ev" --call-graph dwarf,8192 -o "$TMP/allocs.$name.data" -p "${PID[$name]}" 2>/dev/null &
    P=$!; sleep 0.5
    out="$(taskset -c 1 wrk -t1 -c4 -d1s -s "${LUA[$name]}" "${URL[$name]}")"
    sleep 0.2; kill -INT "$P"; wait "$P" 2>/dev/null || true
    calls="$(echo "$out" | awk '/requests in/ {print $1}')"
    cp "$TMP/allocs.$name.data" "${AB_ALLOCS_OUT:-/tmp}/warden-allocs.$name.data" 2>/dev/null || true
    perf script -i "$TMP/allocs.$name.data" -F ip,sym 2>/dev/null | python3 benches/allocs.py "$calls"
    perf probe -q -d 'probe_*' 2>/dev/null || true
  done
fi
echo
echo "| variant | calls/s (median) | proxy CPU µs per call (median) | of which kernel (median) |"
echo "|---|---|---|---|"
for name in "${NAMES[@]}"; do
  python3 - "$TMP/rounds" "$name" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.split()[2] == sys.argv[2]]
rps = statistics.median(float(r[3].split("=")[1]) for r in rows)
cpu = statistics.median(float(r[4].split("=")[1]) for r in rows)
ker = statistics.median(float(r[6].split("=")[1]) for r in rows)
print(f"| {sys.argv[2]} | {rps:,.0f} | {cpu:.1f} | {ker:.1f} |")
PY
done
