#!/usr/bin/env bash
# Measure what a federation trunk costs, on loopback: two Dendrites and two
# Entente nodes federated as in TestFederationTwoNodesSDK, one call with a
# member of each server, and entente-load in two-node mode (publishers on
# node A, subscribers on node B, through the trunk) against the same load
# with everyone on node A (the local reference), alternating, RUNS times.
#
# The setup is test/e2e's TestFederationBenchHarness (real dendrite and
# entente processes on free loopback ports, started and stopped by it); it
# writes $OUT/fed.env once the trunk is up, waits for $OUT/done, then times
# the set-up of SETUPS more trunks (one new room each).
#
# Prints the trunk set-up times and a Markdown table (entente-load fedtable):
# medians over runs with their range, and per run pair remote - local
# (delays, join times) or remote / local (CPU per packet). A run during
# which other work used more than BUSY_CORES of CPU is refused in the table.
#
# Usage: bench/federation.sh          (about 5.5 minutes on 2 cores)
# Environment: RUNS (3), WARMUP (3s), WINDOW (10s), BUSY_CORES (0.3),
#   SETUPS (4), SCENARIOS (a subset of the names below), FORCE=1 to start
#   on a busy machine, OUT (default .deps/bench/fed-<timestamp>).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start_all=$(date +%s)

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-3s}
WINDOW=${WINDOW:-10s}
BUSY_CORES=${BUSY_CORES:-0.3}
SETUPS=${SETUPS:-4}
OUT=${OUT:-$root/.deps/bench/fed-$(date +%Y%m%d-%H%M%S)}
bin=$root/.deps/bench/bin

# name | generator flags (audio and video unless told). av-10x1 forwards
# each packet once on each node (like for like: node A's trunk send against
# a local send); av-1x10 and simulcast-1x10 fan one publisher out to ten.
declare -A flags=(
	[av-10x1]="--publishers 10 --subscribers 1"
	[av-1x10]="--publishers 1 --subscribers 10"
	[simulcast-1x10]="--publishers 1 --subscribers 10 --video --simulcast"
)
SCENARIOS=${SCENARIOS:-av-10x1 av-1x10 simulcast-1x10}

# busy_cores SECONDS: the machine's busy CPU (in cores) over SECONDS.
busy_cores() {
	local a b
	a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
	sleep "$1"
	b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
	awk -v a="$a" -v b="$b" -v s="$1" 'BEGIN{split(a,x," "); split(b,y," "); print (y[1]-x[1])/100/s}'
}

busy=$(busy_cores 3)
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), busy $busy cores over 3 s"
if awk -v b="$busy" -v m="$BUSY_CORES" 'BEGIN{exit !(b > m)}' && [[ ${FORCE:-0} != 1 ]]; then
	echo "the machine is busy ($busy cores > BUSY_CORES=$BUSY_CORES): refusing (FORCE=1 to run anyway)" >&2
	exit 1
fi

mkdir -p "$bin" "$OUT"
echo "== building entente-load into $bin and the e2e harness"
go build -o "$bin/entente-load" ./cmd/entente-load
go test -c -o "$bin/e2e.test" ./test/e2e/

harness_pid=
stop_harness() {
	[[ -n $harness_pid ]] || return 0
	touch "$OUT/done"
	for _ in $(seq 300); do
		kill -0 "$harness_pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -TERM "$harness_pid" 2>/dev/null || true
	wait "$harness_pid" 2>/dev/null || true
	harness_pid=
}
trap stop_harness EXIT

echo "== starting two Dendrites and two federated nodes (log: $OUT/harness.log)"
# The test binary runs in its package directory, as go test would.
(cd test/e2e && ENTENTE_FEDBENCH_DIR=$OUT ENTENTE_FEDBENCH_SETUPS=$SETUPS \
	exec "$bin/e2e.test" -test.run '^TestFederationBenchHarness$' -test.count 1 -test.v -test.timeout 40m) \
	>"$OUT/harness.log" 2>&1 &
harness_pid=$!
for _ in $(seq 600); do
	[[ -f $OUT/fed.env ]] && break
	if ! kill -0 "$harness_pid" 2>/dev/null; then
		echo "the harness ended before the trunk was up:" >&2
		tail -30 "$OUT/harness.log" >&2
		exit 1
	fi
	sleep 0.2
done
[[ -f $OUT/fed.env ]] || { echo "no trunk after 120 s" >&2; tail -30 "$OUT/harness.log" >&2; exit 1; }
# shellcheck disable=SC1091 # written by the harness
source "$OUT/fed.env"
echo "== trunk up: $SERVER_A (node pid $PID_A) <-> $SERVER_B (node pid $PID_B), media room $ROOM"

progress() { # $1 = what, $2 = report
	if command -v jq >/dev/null; then
		jq -r --arg what "$1" '"\($what): delay p50 \(.delay_p50_ms) p99 \(.delay_p99_ms) ms, first frame p50 \(.frame_p50_ms) ms, A \(.cpu_us_per_packet) us/pkt, A per source pkt \(.cpu_us_per_source_packet), B \(.cpu_us_per_packet_b) us/pkt, loss \(.loss_percent)%, others \(.other_cpu_cores) cores"' "$2"
	else
		echo "$1: done"
	fi
}

for run in $(seq "$RUNS"); do
	for sc in $SCENARIOS; do
		for mode in remote local; do
			f=$OUT/$sc.$mode.$run
			common=(--api-key "$KEY_A" --api-secret "$SECRET_A" --server-pid "$PID_A" --url "$URL_A"
				--identity-prefix "r$run-$mode-" --connect-timeout 10s --warmup "$WARMUP" --duration "$WINDOW"
				--label "$mode" --scenario "$sc" --run "$run" --json)
			if [[ $mode == remote ]]; then
				where=(--room "$ROOM" --url-b "$URL_B" --api-key-b "$KEY_B" --api-secret-b "$SECRET_B" --server-pid-b "$PID_B")
			else
				where=(--room "fedbench-local-$sc-$run")
			fi
			# shellcheck disable=SC2086 # flags are words
			if "$bin/entente-load" "${common[@]}" "${where[@]}" ${flags[$sc]} >"$f.json" 2>"$f.err"; then
				progress "$mode $sc run $run" "$f.json"
			else
				echo "$mode $sc run $run: generator failed: $(tail -1 "$f.err")"
				rm -f "$f.json"
			fi
			sleep 3 # the departures settle before the next run
		done
	done
done

echo "== timing $SETUPS more trunk set-ups"
stop_harness
if [[ -f $OUT/trunk-setup.tsv ]]; then
	echo
	echo "== trunk set-up (ms): member_to_up = the second server's call membership sent -> both nodes list the trunk up; offer_to_up = the offering node's set_up"
	column -t "$OUT/trunk-setup.tsv"
	awk -F'\t' 'NR>1{m[NR-1]=$2; o[NR-1]=$3; n=NR-1}
		function med(a, n,   i, j, t, s) { for (i = 1; i <= n; i++) s[i] = a[i]
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
			return n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2 }
		function lo(a, n,   i, v) { v = a[1]; for (i = 2; i <= n; i++) if (a[i] < v) v = a[i]; return v }
		function hi(a, n,   i, v) { v = a[1]; for (i = 2; i <= n; i++) if (a[i] > v) v = a[i]; return v }
		END { if (n > 0) printf "all %d: member_to_up median %.0f (%.0f to %.0f), offer_to_up median %.0f (%.0f to %.0f)\n", n, med(m, n), lo(m, n), hi(m, n), med(o, n), lo(o, n), hi(o, n) }' "$OUT/trunk-setup.tsv"
else
	echo "no trunk-setup.tsv: see $OUT/harness.log" >&2
fi

echo
echo "== remote (publishers on A, subscribers on B through the trunk) vs local (everyone on A): $RUNS runs, warmup $WARMUP, window $WINDOW, $(nproc) cores"
shopt -s nullglob
reports=("$OUT"/*.json)
if ((${#reports[@]} == 0)); then
	echo "no run produced a report" >&2
	exit 1
fi
"$bin/entente-load" fedtable --busy-cores "$BUSY_CORES" "${reports[@]}" | tee "$OUT/table.md"
if grep -q "refused" "$OUT/table.md"; then
	echo
	echo "== For information only, not a result: the same with the disturbed runs kept"
	"$bin/entente-load" fedtable --busy-cores "$BUSY_CORES" --include-busy "${reports[@]}" | tee "$OUT/table-with-busy.md"
fi
echo
echo "== finished in $(($(date +%s) - start_all)) s; reports and logs in $OUT"
