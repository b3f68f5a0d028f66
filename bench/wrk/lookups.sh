#!/usr/bin/env bash
# Lookup throughput of promo standalone against a bare fasthttp server that
# answers a constant body of the same size, under the same wrk load
# (wrk -t1 -c64, random existing ids). Usage: bench/wrk/lookups.sh [ROWS] [SECONDS]
set -euo pipefail
ROWS=${1:-2000000}
SECS=${2:-15}
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
make -s build
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

bin/promo bench gen --rows "$ROWS" --out "$work/p.csv"
cut -d, -f1 "$work/p.csv" | shuf -n 200000 --random-source=<(yes) > "$work/ids.txt"
bin/promo standalone --addr 127.0.0.1:18080 --data-dir "$work/data" --import-dir "$work" --log-level warn &
pids+=($!)
bin/promo bench bare-server --addr 127.0.0.1:18099 &
pids+=($!)
for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && curl -sf http://127.0.0.1:18099/ >/dev/null && break; sleep 0.1; done
curl -sf -X POST -d "filename=p.csv" "http://127.0.0.1:18080/process-csv?wait=true" >/dev/null

run() { IDS="$work/ids.txt" wrk -t1 -c64 -d"${SECS}s" -s bench/wrk/random_ids.lua "$1" | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "non-2xx: " $0 > "/dev/stderr"}'; }
# Warm Pebble's block cache, as a server that has been serving would be.
IDS="$work/ids.txt" wrk -t1 -c64 -d5s -s bench/wrk/random_ids.lua http://127.0.0.1:18080 >/dev/null
for round in 1 2 3; do
	bare=$(run http://127.0.0.1:18099)
	promo=$(run http://127.0.0.1:18080)
	awk -v r="$round" -v b="$bare" -v p="$promo" 'BEGIN { printf "round %d: bare %.0f req/s, promo %.0f req/s, ratio %.2f\n", r, b, p, p / b }'
done
