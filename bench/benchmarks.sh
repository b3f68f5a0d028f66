#!/usr/bin/env bash
# make benchmarks: run the import benchmarks and the load tests, then
# regenerate BENCHMARKS.md from their reports. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
make -s build
mkdir -p "$OUT"
record() { # name, command
	grep -v "^$1:" "$OUT/commands.txt" 2>/dev/null > "$OUT/commands.tmp" || true
	echo "$1: $2" >> "$OUT/commands.tmp"
	mv "$OUT/commands.tmp" "$OUT/commands.txt"
}
for rows in 2000000 20000000; do
	cmd="bin/promo bench import --rows $rows --out $OUT/import-$rows.json"
	echo "== $cmd"
	$cmd
	record "import-$rows" "$cmd"
done
bench/loadtest.sh 2000000 30000 20s "$OUT"

# The load generator's own limit: attacks on the bare server alone.
bin/promo bench gen --rows 200000 --out "$OUT/ids.csv"
bin/promo bench bare-server --addr 127.0.0.1:18099 &
bare=$!
trap 'kill $bare 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18099/ && break; sleep 0.1; done
for rate in 50000 80000; do
	cmd="bin/promo bench load --target http://127.0.0.1:18099 --ids ids.csv --rate $rate --duration 10s --baseline=false"
	echo "== $cmd"
	bin/promo bench load --target http://127.0.0.1:18099 --ids "$OUT/ids.csv" --rate "$rate" --duration 10s --baseline=false \
		--name "load-generator-$rate" --out "$OUT/load-generator-$rate"
	record "load-generator-$rate" "$cmd (against bin/promo bench bare-server alone)"
done
kill $bare
# A read node joins and leaves a 3-node devcluster under load.
cmd="bin/promo bench cluster --rows 2000000 --change-rate 3000 --change-duration 20s --out $OUT/cluster-change"
echo "== $cmd"
$cmd
record "cluster-change" "$cmd"

# The ways to a read node: direct, the Go client, the proxy; batches; a
# slow node under the client's hedging.
cmd="bin/promo bench cluster --rows 1000000 --paths 3s --out $OUT/paths"
echo "== $cmd"
$cmd
record paths "$cmd"

# File to every read node serving: a first import and three more.
cmd="bin/promo bench cluster --rows 2000000 --freshness 3 --out $OUT/freshness"
echo "== $cmd"
$cmd
record freshness "$cmd"
bin/promo bench report "$OUT" > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
