#!/bin/sh
# Cargo's rustc wrapper for this workspace (.cargo/config.toml): it adds the
# committed profile (proxy/pgo/warden.profdata) to the crates of an
# optimised build with one codegen unit, i.e. `cargo build --release` and
# profiles that keep its settings, so that the binary a user builds first is
# the profile-guided one. Every other build (tests, clippy, `--profile
# quick`, criterion's `bench`) runs rustc unchanged. Cargo's flags and
# fingerprints do not see the flag; rustc lists the profile in each crate's
# dep-info, so a new profile rebuilds what it touches.
#
# WARDEN_PGO=0 turns it off (benches/pgo.sh's instrumented build, A/B runs
# of the plain build), in a target directory of its own: cargo's
# fingerprints do not see the choice, so a target directory keeps the crates
# it built either way. The profile was merged by the LLVM of the pinned
# toolchain (rust-toolchain.toml); an older LLVM cannot read it.
# usage (by cargo): rustc-wrapper.sh RUSTC [WORKSPACE_WRAPPER] ARGS...
opt=""; units=""; prev=""
for a in "$@"; do
  case "$prev$a" in
    -Copt-level=3) opt=1 ;;
    -Ccodegen-units=1) units=1 ;;
    -Cprofile-*|-Zprofile*) exec "$@" ;;
  esac
  [ "$a" = -C ] && prev=-C || prev=""
done
profile="$(dirname "$0")/warden.profdata"
if [ "${WARDEN_PGO:-1}" != 0 ] && [ -n "$opt" ] && [ -n "$units" ] && [ -f "$profile" ]; then
  profile="$(cd "$(dirname "$profile")" && pwd)/warden.profdata"
  exec "$@" "-Cprofile-use=$profile" -Cllvm-args=-no-pgo-warn-mismatch
fi
exec "$@"
