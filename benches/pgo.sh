#!/usr/bin/env bash
# Trains the profile that makes `cargo build --release` profile-guided
# (proxy/pgo/warden.profdata; proxy/pgo/rustc-wrapper.sh gives it to rustc):
# an instrumented gateway is driven through the full pipeline with the
# benchmark's calls (1 KB and 16 KB `tools/call`, JSON and SSE replies,
# three kinds of prose; benches/ab.sh), and the raw counts are merged by the llvm-profdata of
# rustc's own LLVM version (Debian's `llvm-N`, installed if missing).
# Run it after changes to the request path, then commit the profile: a
# function whose code changed since the profile was made is built without
# it (silently: the wrapper turns LLVM's mismatch warning off), so a stale
# profile slowly gives back the gain. Two release builds: about twice a
# first build's time.
#
# usage: bash benches/pgo.sh [SECONDS_PER_LOAD]
# output: proxy/pgo/warden.profdata, and target/release/warden built with it
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

# A fixed directory: the path is part of RUSTFLAGS, and a new one each run
# would rebuild every dependency.
data="$ROOT/target/pgo-gen/profraw"
rm -rf "$data"; mkdir -p "$data"

# 1. Instrumented gateway (WARDEN_PGO=0: no profile read while one is
#    made); the mock, wrk's peer and the other binaries ab.sh runs come
#    from the ordinary release build.
bash benches/build-release.sh
# The gateway of the default build (no `-p`: the workspace's default
# members decide its dependencies' features, hence their symbol names,
# which the profile is keyed by; see benches/build-release.sh).
WARDEN_PGO=0 CARGO_TARGET_DIR=target/pgo-gen RUSTFLAGS="$flags -Cprofile-generate=$data" \
  cargo build --release -q --bin warden
# The build's own instrumented build scripts and proc macros wrote counts
# there too: only the gateway's are wanted.
rm -f "$data"/*

# 2. Training: the benchmark's calls through the full pipeline. The
#    profile is written when the gateway exits (ab.sh stops it with SIGINT).
#    More than one prose, and the corpus's other classes of content: code
#    the training never runs is built as cold,
#    so a text that wakes other readers (a number spelled out, a ticket
#    id, a version, a time) would find them slower than the plain build has
#    them.
#    Calls in an MCP session (as clients make them: the session table
#    and the reply ledger run), and one load without.
gen=gen=target/pgo-gen/release/warden
export AB_CONNECTIONS=64 AB_SKIP_BUILD=1
bash benches/ab.sh "$SECS" 1 "$gen"
export AB_SESSION=1
bash benches/ab.sh "$SECS" 2 "$gen"
AB_FILLER="deploy the billing service to eu-west-1 with three replicas and a canary; " \
  bash benches/ab.sh "$SECS" 1 "$gen"
AB_FILLER="ticket OPS-4821: roll back at 14:05 UTC on 3 pods (v2.7.1), owner @sre-oncall; " \
  bash benches/ab.sh "$SECS" 1 "$gen"
# Content that is not prose (base64, hashes, tokens, letter runs, logs):
# without it the decoders and the readers of decoded bytes are built
# cold, and the profile buys calls carrying such content nothing (s61,
# ab.sh, a profile trained on prose alone: base64 93.6 µs per call with
# it, 92.4 without).
cargo build --release -q -p warden-benches --bin warden-corpus
# (Not the tokens class: its JWTs are secrets the example bundle blocks,
# and ab.sh measures calls that are forwarded; it stopped this script.)
for class in base64_random hex_hashes letter_run logs minified_json; do
  AB_FILLER="$(target/release/warden-corpus text "$class" 300 | tr -d '\n"\\')" \
    bash benches/ab.sh "$SECS" 1 "$gen"
done
AB_SSE=1 bash benches/ab.sh "$SECS" 1 "$gen"
AB_TEXT_BYTES=16284 bash benches/ab.sh "$SECS" 1 "$gen"
AB_SSE=1 AB_TEXT_BYTES=16284 bash benches/ab.sh "$SECS" 1 "$gen"
# Not --sparse: a sparse profile (a seventh of the size) leaves out the
# functions the training never ran, so they are not known to be cold and
# stay in the hot code's way; it bought about 7 % less (s34).
"$profdata" merge -o proxy/pgo/warden.profdata "$data"/*.profraw
echo "$(rustc -V), LLVM $llvm; trained at $(git rev-parse --short HEAD) on $(date -u +%F)" > proxy/pgo/PROVENANCE

# 3. The default build, now with the new profile.
bash benches/build-release.sh
echo "wrote proxy/pgo/warden.profdata ($(du -h proxy/pgo/warden.profdata | cut -f1)); target/release/warden is built with it"
echo "compare: WARDEN_PGO=0 CARGO_TARGET_DIR=target/plain cargo build --release --bin warden"
echo "         AB_CONNECTIONS=64 AB_SKIP_BUILD=1 bash benches/ab.sh 6 6 plain=target/plain/release/warden pgo=target/release/warden pt=pingora"
