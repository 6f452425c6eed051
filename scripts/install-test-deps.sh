#!/usr/bin/env bash
# Installs everything Entente's test suite needs on a fresh Debian machine
# with Go: Debian's Chromium for the browser tests, the join page's locked
# npm packages (and its build), stock Element Call (0.26.1 and 0.19.1, from
# npm, into test/e2e/elementcall) and the Dendrite homeserver for the Matrix
# tests. Idempotent. Needs root for apt-get (run it with sudo otherwise).
#
# usage: scripts/install-test-deps.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# iproute2 (ip, ss), nftables, conntrack and tcpdump: the sealed-network tests (internal/netnstest).
apt_packages=(chromium nodejs npm iproute2 nftables conntrack tcpdump)
missing=()
for p in "${apt_packages[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# nodejs/npm may come from elsewhere than Debian: only ask apt for what no command provides.
if command -v node >/dev/null && command -v npm >/dev/null; then
	missing=("${missing[@]/nodejs/}")
	missing=("${missing[@]/npm/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
	echo "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "building the join page (npm ci from the lock file)"
make -C "$ROOT" web

echo "installing stock Element Call for the end-to-end tests (npm ci from the lock file)"
if [[ ! -f "$ROOT/test/e2e/elementcall/node_modules/.package-lock.json" ||
	"$ROOT/test/e2e/elementcall/package-lock.json" -nt "$ROOT/test/e2e/elementcall/node_modules/.package-lock.json" ]]; then
	(cd "$ROOT/test/e2e/elementcall" && npm ci --no-audit --no-fund)
fi

"$ROOT/scripts/install-dendrite.sh"
