#!/usr/bin/env bash
# The release binaries every benchmark runs, built so that the gateway is
# exactly the one `cargo build --release` gives a user: the workspace's
# default members in one invocation (the gateway, agent, load tester), then
# the benchmark-only binaries (warden-mock, pingora-passthrough) in their
# own. Building the gateway in one invocation with other packages unifies
# other features into its dependencies, which changes their symbol names,
# and the committed PGO profile (proxy/pgo/warden.profdata, trained on the
# default build by benches/pgo.sh) then matches none of their code: that
# binary was about 19 % slower per call than the user's (session 40).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q
cargo build --release -q -p warden-benches --bins
