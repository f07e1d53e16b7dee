#!/usr/bin/env bash
# A profile-guided build of the gateway (opt-in; BENCHMARKS.md has what it
# buys): an instrumented build is driven through the full pipeline with the
# benchmark's calls (1 KB and 16 KB `tools/call`, benches/ab.sh), the
# profile is merged with the llvm-profdata of rustc's own LLVM version
# (Debian's `llvm-N`, installed if missing), and the gateway is built again
# with it. Two release builds: about twice a first build's time.
#
# usage: bash benches/pgo.sh [SECONDS_PER_LOAD]
# output: target/pgo/release/warden (and the profile, target/pgo/warden.profdata)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-8}"

llvm="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
profdata="llvm-profdata-$llvm"
command -v "$profdata" >/dev/null || { apt-get update -qq && apt-get install -y -qq "llvm-$llvm" >/dev/null; }

# RUSTFLAGS replaces .cargo/config.toml's flags: the target CPU is repeated.
flags=""
[ "$(uname -m)" = x86_64 ] && flags="-C target-cpu=x86-64-v3"

data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
mkdir -p target/pgo

# 1. Instrumented gateway; the mock, wrk's peer and the other binaries
#    ab.sh runs come from the ordinary release build.
cargo build --release -q -p warden-loadtest -p warden-proxy -p warden-benches --bins
CARGO_TARGET_DIR=target/pgo-gen RUSTFLAGS="$flags -Cprofile-generate=$data" \
  cargo build --release -q -p warden-proxy --bin warden

# 2. Training: the benchmark's calls through the full pipeline. The
#    profile is written when the gateway exits (ab.sh stops it with SIGINT).
AB_CONNECTIONS=64 AB_SKIP_BUILD=1 bash benches/ab.sh "$SECS" 2 gen=target/pgo-gen/release/warden
AB_TEXT_BYTES=16284 AB_CONNECTIONS=64 AB_SKIP_BUILD=1 bash benches/ab.sh "$SECS" 1 gen=target/pgo-gen/release/warden
"$profdata" merge -o target/pgo/warden.profdata "$data"/*.profraw

# 3. The optimised build.
CARGO_TARGET_DIR=target/pgo RUSTFLAGS="$flags -Cprofile-use=$ROOT/target/pgo/warden.profdata" \
  cargo build --release -q -p warden-proxy --bin warden
echo "built target/pgo/release/warden (profile: target/pgo/warden.profdata)"
echo "compare: AB_CONNECTIONS=64 AB_SKIP_BUILD=1 bash benches/ab.sh 6 6 plain=target/release/warden pgo=target/pgo/release/warden pt=pingora"
