#!/usr/bin/env bash
# Installs the Dendrite homeserver binaries used by the Matrix integration tests
# (bridge/matrix) into .deps/bin, unless they are already there at the right version.
#
# usage: scripts/install-dendrite.sh [BIN_DIR]      (default: <repo>/.deps/bin)
#
# Dendrite is built from source with the Go toolchain; the first build takes a few
# minutes with an empty module cache. gcc is needed for its cgo SQLite driver.
set -euo pipefail

VERSION=v0.13.8
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/.deps/bin}
STAMP="$BIN/.dendrite-version"
mkdir -p "$BIN"

if [[ -x "$BIN/dendrite" && -x "$BIN/generate-keys" && -x "$BIN/create-account" ]] &&
	[[ "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
	echo "dendrite $VERSION already installed in $BIN"
	exit 0
fi

# Build outside the repository's module so its go.mod is neither read nor changed.
cd "${TMPDIR:-/tmp}"
GOBIN="$BIN" GOFLAGS=-mod=mod go install \
	"github.com/matrix-org/dendrite/cmd/dendrite@$VERSION" \
	"github.com/matrix-org/dendrite/cmd/generate-keys@$VERSION" \
	"github.com/matrix-org/dendrite/cmd/create-account@$VERSION"
echo "$VERSION" >"$STAMP"
echo "dendrite $VERSION installed in $BIN"
