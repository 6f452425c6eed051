#!/usr/bin/env bash
# Federation in sealed agencies (docs/testing-networks.md), measured:
#  1. recovery: TestSealedFailures RUNS times over (a link between two
#     agencies cut for 20 s, then a node SIGKILLed and restarted), each
#     recovery time and their p50;
#  2. TestSealedTrunkBench: four agencies, agency A's simulcast publisher
#     watched at different layers in B, C and D (A's node carries three
#     trunks), WINDOWS windows of WINDOW: per trunk the packets and bytes
#     that crossed the router against what the far agency's subscribers
#     watch (each distinct layer once), and A's node's CPU and memory.
#
# Needs root and what scripts/install-test-deps.sh installs. Prints the
# tests' measurement lines; the whole output is kept in $OUT.
#
# Usage: bench/sealed.sh          (about 6 minutes on 2 cores)
# Environment: RUNS (5), WINDOWS (3), WINDOW (10s), OUT (default
#   .deps/bench/sealed-<timestamp>).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
WINDOWS=${WINDOWS:-3}
WINDOW=${WINDOW:-10s}
OUT=${OUT:-$PWD/.deps/bench/sealed-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%FT%TZ); output in $OUT"

CI=true ENTENTE_SEALED_RUNS=$RUNS go test -count=1 -timeout 30m -run '^TestSealedFailures$' -v ./test/e2e/ >"$OUT/failures.log" 2>&1 ||
	{ tail -50 "$OUT/failures.log"; exit 1; }
grep -E 'sealed_failure_test.go:[0-9]+: (run|recovery|A.s homeserver)' "$OUT/failures.log" | sed 's/^ *sealed_failure_test.go:[0-9]*: //'

CI=true ENTENTE_SEALED_BENCH=$WINDOWS ENTENTE_SEALED_WINDOW=$WINDOW go test -count=1 -timeout 30m -run '^TestSealedTrunkBench$' -v ./test/e2e/ >"$OUT/trunks.log" 2>&1 ||
	{ tail -50 "$OUT/trunks.log"; exit 1; }
grep -A3 -E 'sealed_bench_test.go:[0-9]+: window' "$OUT/trunks.log" | sed 's/^ *sealed_bench_test.go:[0-9]*: //'
