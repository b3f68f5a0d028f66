#!/usr/bin/env bash
# make loadtest: start promo standalone on a loopback port, import a
# generated file, run the vegeta load tests against it (each with the bare
# baseline), print the summaries and write reports and plots under OUT.
# Everything it starts is stopped, by PID, when it exits.
# Usage: [PORT=18080] bench/loadtest.sh [ROWS] [RATE] [DURATION] [OUT]
set -euo pipefail
ROWS=${1:-2000000}
RATE=${2:-30000}
DURATION=${3:-20s}
cd "$(dirname "$0")/.."
OUT=${4:-bench/out}
make -s build
mkdir -p "$OUT"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

bin/promo bench gen --rows "$ROWS" --out "$work/promotions.csv"
port=${PORT:-18080}
bin/promo standalone --addr "127.0.0.1:$port" --data-dir "$work/data" --import-dir "$work" --log-level warn &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -sf -X POST -d "filename=promotions.csv" "http://127.0.0.1:$port/process-csv?wait=true" >/dev/null
echo "imported $ROWS rows into promo standalone on 127.0.0.1:$port"

attack() { # name, extra flags
	local name=$1; shift
	local cmd="bin/promo bench load --target http://127.0.0.1:PORT --ids promotions.csv --rate $RATE --duration $DURATION $*"
	echo "== $name: $cmd"
	bin/promo bench load --target "http://127.0.0.1:$port" --ids "$work/promotions.csv" --rate "$RATE" --duration "$DURATION" \
		--name "$name" --out "$OUT/$name" "$@"
	grep -v "^$name:" "$OUT/commands.txt" 2>/dev/null > "$OUT/commands.tmp" || true
	echo "$name: $cmd (server: bin/promo standalone, $ROWS generated rows)" >> "$OUT/commands.tmp"
	mv "$OUT/commands.tmp" "$OUT/commands.txt"
}
attack load-uniform
attack load-zipf --zipf 1.1
attack load-misses --miss-ratio 0.1
echo "reports and plots in $OUT/load-*/"
