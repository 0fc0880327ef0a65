#!/usr/bin/env bash
# Idempotent set-up for a dev machine, CI, and the demo: Debian packages, node
# modules, and a criu that really dumps and restores a TCP connection here.
# Quick when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages. python3-notebook and python3-ipykernel give the Jupyter
# server and kernel that sessions run (under /usr/bin/python3); iptables and
# nftables carry CRIU's network lock; zstd is the optional image compressor.
# jupyterhub gives the hub sessions' single-user server (and the hub the tests
# run); chromium is the browser the hub tests drive through playwright-core;
# gcc and libc6-dev build the lazy-stack probe's process (infra/native/aligned-stack.c)
# and, with libssl-dev, the piece hasher (infra/native/piece-hasher.c).
APT_PACKAGES=(
  python3-notebook python3-ipykernel python3-numpy jupyterhub chromium
  redis-server redis-tools
  iptables nftables iproute2 procps util-linux
  zstd tar ca-certificates
  criu gcc libc6-dev libssl-dev
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]}; run 'sudo npm run setup'"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node modules: install when absent or when the lock file changed since.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing node modules (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The piece hasher a restore verifies its images with; without it (not root, or
# no compiler) the agent hashes in Python, at about half the speed.
if [[ $(id -u) -eq 0 ]]; then
  bash infra/setup/build-piece-hasher.sh /opt/hubshift/bin/piece-hasher
elif [[ ! -x /opt/hubshift/bin/piece-hasher ]]; then
  log "the piece hasher is not built (run 'sudo npm run setup'): restores verify in Python"
fi

# A criu that works: the system's if it passes the TCP dump/restore probe, else
# Debian unstable's in a private prefix. The choice is cached per kernel.
node bin/hubshift.js criu select --install
