#!/usr/bin/env bash
# The main job on the embedded default: Warden on the example bundle with the
# bundled warden-mock MCP server behind it. Nothing else to start.
#   gateway:  http://127.0.0.1:8080/mock/mcp   (MCP Streamable HTTP)
#   admin:    http://127.0.0.1:9090/{metrics,healthz,readyz,status}
#   console:  http://127.0.0.1:7070/console   (the control agent: the gateway
#             takes its signed bundle from it and ships its audit records there)
# Ctrl-C stops all three.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WARDEN_SETUP_PEERS=0 bash scripts/setup.sh
# One build for every script and README command: plain `cargo build
# --release` (the workspace's default members: the gateway, the mock, the
# load tester, the agent). Any of them after another is a no-op.
if [ ! -x target/release/warden ]; then
  echo "[run] building Warden in release mode (the fast build, fat LTO): 8 to 15 minutes on 2 cores the first time, seconds afterwards" >&2
fi
cargo build --release
BUNDLE="${WARDEN_BUNDLE:-$ROOT/config/examples/sidecar}"
./target/release/warden validate "$BUNDLE"
./target/release/warden-mock --listen 127.0.0.1:8931 &
MOCK=$!
AGENT=""
trap 'kill "$MOCK" $AGENT 2>/dev/null || true; wait "$MOCK" $AGENT 2>/dev/null || true' EXIT
# The mock must be listening before the gateway starts in front of it.
for _ in $(seq 1 50); do
  if ! kill -0 "$MOCK" 2>/dev/null; then
    echo "[run] warden-mock could not start on 127.0.0.1:8931 (is the port in use? \`ss -ltnp 'sport = :8931'\` names the holder)" >&2
    exit 1
  fi
  (exec 3<>/dev/tcp/127.0.0.1/8931) 2>/dev/null && break
  sleep 0.1
done
# Something else may hold the port: then the mock has exited by now.
sleep 0.2
if ! kill -0 "$MOCK" 2>/dev/null; then
  echo "[run] warden-mock could not start on 127.0.0.1:8931 (is the port in use? \`ss -ltnp 'sport = :8931'\` names the holder)" >&2
  exit 1
fi
echo "[run] warden-mock pid $MOCK on 127.0.0.1:8931; gateway on http://127.0.0.1:8080/mock/mcp, admin on 127.0.0.1:9090" >&2
echo "[run] demo API keys (x-api-key): wk_demo_dev_7Qm2 (developer, eu), wk_demo_ops_Z8r5 (operator, us, on call), wk_demo_auditor_P4x9 (auditor)" >&2
# The audit trail goes to a file, not into the terminal between the logs
# (pass --audit PATH to choose another; --audit - for stdout).
AUDIT=()
case " $* " in
  *" --audit "*) ;;
  *)
    mkdir -p "$ROOT/target/demo"
    AUDIT=(--audit "$ROOT/target/demo/audit.jsonl")
    echo "[run] audit trail: $ROOT/target/demo/audit.jsonl (check it: target/release/warden audit verify target/demo/audit.jsonl)" >&2
    ;;
esac
# The install's state (its sealing key: sessions survive a restart) lives
# under target/ too, never in the working tree.
STATE=()
case " $* " in
  *" --state-dir "*) ;;
  *) STATE=(--state-dir "$ROOT/target/demo/state") ;;
esac
# The control agent serves the bundle (signed), the console, approvals and
# the fleet's audit search. Demo tokens only: a deployment sets its own
# (WARDEN_AGENT_ADMIN_TOKEN, WARDEN_AGENT_FLEET_TOKEN, --approvers, --viewers).
DEMO="$ROOT/target/demo"
mkdir -p "$DEMO/agent"
[ -s "$DEMO/bundle.key" ] || ./target/release/warden-agent keygen --private "$DEMO/bundle.key" --public "$DEMO/bundle.pub" >/dev/null
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
ADMIN_TOKEN="${WARDEN_AGENT_ADMIN_TOKEN:-demo-admin-token-0001}"
FLEET_TOKEN="${WARDEN_AGENT_FLEET_TOKEN:-demo-fleet-token-0001}"
printf 'ann: %s\n' "$(sha demo-approver-token-01)" >"$DEMO/approvers.yaml"
printf 'vic: %s\n' "$(sha demo-viewer-token-0001)" >"$DEMO/viewers.yaml"
WARDEN_AGENT_ADMIN_TOKEN="$ADMIN_TOKEN" WARDEN_AGENT_FLEET_TOKEN="$FLEET_TOKEN" \
  ./target/release/warden-agent serve --source "$BUNDLE" --state "$DEMO/agent" \
  --signing-key "$DEMO/bundle.key" --listen "${WARDEN_AGENT_LISTEN:-127.0.0.1:7070}" \
  --approvers "$DEMO/approvers.yaml" --viewers "$DEMO/viewers.yaml" >/dev/null &
AGENT=$!
AGENT_URL="http://${WARDEN_AGENT_LISTEN:-127.0.0.1:7070}"
for _ in $(seq 1 100); do
  if ! kill -0 "$AGENT" 2>/dev/null; then
    echo "[run] warden-agent could not start on ${AGENT_URL#http://} (is the port in use? WARDEN_AGENT_LISTEN=127.0.0.1:PORT picks another)" >&2
    exit 1
  fi
  curl -fsS "$AGENT_URL/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "[run] console: $AGENT_URL/console — log in with $ADMIN_TOKEN (admin), demo-approver-token-01 (approver ann) or demo-viewer-token-0001 (viewer vic)" >&2
unset WARDEN_BUNDLE
./target/release/warden run --agent "$AGENT_URL" --agent-token "$FLEET_TOKEN" \
  --bundle-public-key "$DEMO/bundle.pub" --gateway-id demo-1 \
  "${AUDIT[@]}" "${STATE[@]}" "$@"
