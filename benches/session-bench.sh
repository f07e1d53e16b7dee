# Sourced by benches/soak.sh and benches/upgrades.sh: builds the release
# binaries, makes a scratch directory that goes (with every process in
# PIDS, stopped by STOP_SIGNAL, then SIGKILL) when the script exits, and
# starts warden-mock on core 1 requiring MCP sessions; MOCK is its address.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash benches/build-release.sh
TMP="$(mktemp -d)"
PIDS=""
STOP_SIGNAL="${STOP_SIGNAL:-INT}"
stop() { kill -"$STOP_SIGNAL" "$1" 2>/dev/null || return 0; for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cleanup() { for p in ${PIDS:-}; do stop "$p"; done; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

taskset -c 1 ./target/release/warden-mock --listen 127.0.0.1:0 --threads 1 --require-session > "$TMP/mock.out" & PIDS="$!"
for _ in $(seq 100); do grep -q listening "$TMP/mock.out" && break; sleep 0.05; done
MOCK="$(sed -n 's/listening on //p' "$TMP/mock.out")"
