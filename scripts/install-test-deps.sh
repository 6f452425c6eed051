#!/usr/bin/env bash
# Installs everything Entente's test suite needs on a fresh Debian machine
# with Go: Debian's Chromium for the browser tests, the join page's locked
# npm packages (and its build), and the Dendrite homeserver for the Matrix
# tests. Idempotent. Needs root for apt-get (run it with sudo otherwise).
#
# usage: scripts/install-test-deps.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

apt_packages=(chromium nodejs npm)
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

"$ROOT/scripts/install-dendrite.sh"
