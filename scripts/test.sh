#!/usr/bin/env bash
# Runs the whole test suite: unit, property and real-socket integration tests,
# including the conformance matrix with real Python, TypeScript and Rust MCP
# SDK peers. Installs what a fresh machine lacks first (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# Integration tests run the workspace's binaries (warden, warden-mock, rmcp peers).
cargo build --workspace --bins
# The benchmarks are not run here, but they must still compile.
cargo check -p warden-benches --benches
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
status=0
cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$LOG" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { printf "all: %d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
