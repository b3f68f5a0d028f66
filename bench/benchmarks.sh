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
bin/promo bench report "$OUT" > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
