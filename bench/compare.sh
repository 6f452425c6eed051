#!/usr/bin/env bash
# Compare Entente with livekit-server v1.11.0 under the same load, on loopback.
#
# Builds entente and entente-load into .deps/bench/bin (git-ignored), uses
# .deps/bin/server (built with `go install` from the Go module proxy when
# missing), then runs each scenario against a fresh server process, in turn
# Entente, livekit-server at its defaults ("livekit") and livekit-server with
# GOMAXPROCS=1 ("livekit-1p"), RUNS times each, and prints two Markdown tables
# of medians with ratios: Entente/livekit and Entente/livekit-1p. Entente sets
# its own processor count from its load (internal/procs); livekit-server uses
# every core, which on a small machine can cost it more per packet than one
# processor would, so it is measured both ways and the better of the two is
# the reference. A run during which other work used more than BUSY_CORES of
# CPU is refused in the tables.
#
# Usage: bench/compare.sh            (about 11 minutes on 2 cores)
# Environment: RUNS (3), WARMUP (4s), WINDOW (8s), BUSY_CORES (0.3),
#   INCLUDE_BUSY=1 to keep disturbed runs (marked), SCENARIOS (a subset of
#   the names below, space separated), HTTP_PORT (17880), UDP_PORT (17882),
#   OUT (result directory, default .deps/bench/<timestamp>).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start_all=$(date +%s)

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-4s}
WINDOW=${WINDOW:-8s}
BUSY_CORES=${BUSY_CORES:-0.3}
HTTP_PORT=${HTTP_PORT:-17880}
UDP_PORT=${UDP_PORT:-17882}
OUT=${OUT:-$root/.deps/bench/$(date +%Y%m%d-%H%M%S)}
bin=$root/.deps/bench/bin
lk=$root/.deps/bin/server
key=bench-key
secret=bench-secret-0123456789-abcdefghijklmnopqrstuv

# name | generator flags
declare -A flags=(
	[audio-10x40]="--publishers 10 --subscribers 40 --audio"
	[video-2x40]="--publishers 2 --subscribers 40 --video"
	[simulcast-2x80]="--publishers 2 --subscribers 80 --video --simulcast"
	[av-1x150]="--publishers 1 --subscribers 150 --audio --video"
)
SCENARIOS=${SCENARIOS:-audio-10x40 video-2x40 simulcast-2x80 av-1x150}
SERVERS=${SERVERS:-entente livekit livekit-1p}

mkdir -p "$bin" "$OUT"
echo "== building entente and entente-load into $bin"
go build -o "$bin/entente" ./cmd/entente
go build -o "$bin/entente-load" ./cmd/entente-load
if [[ ! -x $lk ]]; then
	echo "== building livekit-server v1.11.0 into .deps/bin (a few minutes)"
	GOBIN=$root/.deps/bin go install github.com/livekit/livekit-server/cmd/server@v1.11.0
fi

for port in "$HTTP_PORT/tcp" "$UDP_PORT/udp"; do
	p=${port%/*}
	if [[ ${port#*/} == tcp ]] && ss -Hltn "sport = :$p" | grep -q .; then
		echo "port $p/tcp is in use (set HTTP_PORT)" >&2; exit 1
	fi
	if [[ ${port#*/} == udp ]] && ss -Hlun "sport = :$p" | grep -q .; then
		echo "port $p/udp is in use (set UDP_PORT)" >&2; exit 1
	fi
done

# Equivalent settings: loopback only, one UDP port, warn-level logs, no
# limits; everything else at each server's defaults.
cat > "$OUT/entente.toml" <<TOML
data_dir = "$OUT/entente-data"
[server]
listen = "127.0.0.1:$HTTP_PORT"
[log]
level = "warn"
[rtc]
udp_port = $UDP_PORT
tcp_port = 0            # as livekit-server's tcp_port: 0 below
bind_address = "127.0.0.1"
[room]
max_participants = 0    # livekit-server has no room limit by default; av-1x150 needs 151
[livekit]
keys = { $key = "$secret" }
[web]
enabled = true
TOML
cat > "$OUT/livekit.yaml" <<YAML
port: $HTTP_PORT
bind_addresses: ["127.0.0.1"]
rtc:
  udp_port: $UDP_PORT
  tcp_port: 0
  use_external_ip: false
  node_ip: 127.0.0.1
  enable_loopback_candidate: true
  interfaces:
    includes: ["lo"]
  ips:
    includes: ["127.0.0.1/32"]
keys:
  $key: $secret
logging:
  level: warn
limit:
  num_tracks: -1
YAML

server_pid=
stop_server() {
	[[ -n $server_pid ]] || return 0
	kill -TERM "$server_pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}
trap stop_server EXIT

start_server() { # $1 = entente|livekit, $2 = log file
	rm -rf "$OUT/entente-data"
	case $1 in
	entente) "$bin/entente" --config "$OUT/entente.toml" >"$2" 2>&1 & ;;
	livekit) "$lk" --config "$OUT/livekit.yaml" >"$2" 2>&1 & ;;
	livekit-1p) GOMAXPROCS=1 "$lk" --config "$OUT/livekit.yaml" >"$2" 2>&1 & ;;
	esac
	server_pid=$!
	for _ in $(seq 100); do
		if curl -fs -o /dev/null "http://127.0.0.1:$HTTP_PORT/"; then
			return 0
		fi
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "$1 did not start; its log:" >&2
	tail -20 "$2" >&2
	return 1
}

progress() { # $1 = what, $2 = report
	if command -v jq >/dev/null; then
		jq -r --arg what "$1" '"\($what): \(.packets_per_second|floor) pkts/s, \(.cpu_us_per_packet) us/pkt, \((.rss_per_participant_bytes // 0)/1048576*100|floor/100) MiB/participant, join p50 \(.join_p50_ms) ms, loss \(.loss_percent)%, generator \(.generator_cpu_cores) cores, others \(.other_cpu_cores) cores"' "$2"
	else
		echo "$1: done"
	fi
}

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"
for run in $(seq "$RUNS"); do
	for sc in $SCENARIOS; do
		for server in $SERVERS; do
			f=$OUT/$sc.$server.$run
			start_server "$server" "$f.log"
			# shellcheck disable=SC2086 # flags are words
			if "$bin/entente-load" --url "ws://127.0.0.1:$HTTP_PORT" --api-key "$key" --api-secret "$secret" \
				--room "bench-$sc" ${flags[$sc]} --connect-timeout 10s --warmup "$WARMUP" --duration "$WINDOW" \
				--server-pid "$server_pid" --label "$server" --scenario "$sc" --run "$run" --json >"$f.json" 2>"$f.err"; then
				progress "$server $sc run $run" "$f.json"
			else
				echo "$server $sc run $run: generator failed: $(tail -1 "$f.err")"
				rm -f "$f.json"
			fi
			stop_server
		done
	done
done

echo
table_flags=(--busy-cores "$BUSY_CORES")
[[ ${INCLUDE_BUSY:-0} == 1 ]] && table_flags+=(--include-busy)
shopt -s nullglob
reports=()
for sc in $SCENARIOS; do
	reports+=("$OUT/$sc".*.json)
done
if ((${#reports[@]} == 0)); then
	echo "no run produced a report" >&2
	exit 1
fi
for ref in $SERVERS; do
	[[ $ref == entente ]] && continue
	echo
	echo "== Entente vs $ref (livekit-server v1.11.0$([[ $ref == livekit-1p ]] && echo ", GOMAXPROCS=1")): medians of $RUNS runs, warmup $WARMUP, window $WINDOW, $(nproc) cores"
	"$bin/entente-load" table --a entente --b "$ref" "${table_flags[@]}" "${reports[@]}" | tee "$OUT/table-$ref.md"
	if [[ ${INCLUDE_BUSY:-0} != 1 ]] && grep -q "refused" "$OUT/table-$ref.md"; then
		echo
		echo "== For information only, not a result: the same medians with the disturbed runs kept (marked !)"
		"$bin/entente-load" table --a entente --b "$ref" "${table_flags[@]}" --include-busy "${reports[@]}" | tee "$OUT/table-$ref-with-busy.md"
	fi
done
echo
echo "== finished in $(($(date +%s) - start_all)) s; reports and server logs in $OUT"
