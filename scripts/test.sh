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
cargo test --workspace -- --test-threads=2
