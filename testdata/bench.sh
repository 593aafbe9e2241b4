#!/bin/bash
# make bench: runs every benchmark once (each one measures qbox beside a
# peer in the same run: the machine is shared and noisy, so read ratios, not
# absolute times), prints one table and writes it as Markdown to
# testdata/bench-results.md for the README.
set -euo pipefail
cd "$(dirname "$0")/.."
raw=$(mktemp /tmp/qbox-bench.XXXXXX)
# The end-to-end benchmarks run once each (seconds apiece, peers inside);
# the netstring micro-benchmarks need the usual repetitions to mean anything.
{
  go test -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-1x}" -timeout 20m $(go list ./... | grep -v '^qbox/netstring$') 2>&1
  go test -run '^$' -bench "${BENCH:-.}" -benchmem -timeout 5m ./netstring 2>&1
} | tee "$raw" | grep --line-buffered -E '^(Benchmark|ok|FAIL|---|panic)' >&2 || true
if grep -qE '^(FAIL|--- FAIL|panic)' "$raw"; then
  echo "bench: a benchmark failed; raw output in $raw" >&2
  exit 1
fi
out=testdata/bench-results.md
{
  echo "| package | benchmark | figures |"
  echo "|---|---|---|"
  awk '
    /^pkg: / { pkg = $2; sub(/^qbox\/?/, "", pkg); if (pkg == "") pkg = "qbox" }
    /^Benchmark/ {
      name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
      figs = ""
      for (i = 3; i + 1 <= NF; i += 2) {
        v = $i; u = $(i+1)
        if (u == "ns/op" && v + 0 > 1e6) { v = sprintf("%.3g", v / 1e9); u = "s/op" }
        figs = figs (figs == "" ? "" : ", ") v " " u
      }
      printf "| %s | %s | %s |\n", pkg, name, figs
    }' "$raw"
} > "$out"
echo
cat "$out"
echo
# Point 6 of issue 10: serve's peak RSS with --max-conns sessions each
# sending the largest legal envelope, beside its target.
awk '/^BenchmarkLargestEnvelopesRSS/ {
  name = $1; sub(/-[0-9]+$/, "", name); sub(/^BenchmarkLargestEnvelopesRSS\//, "", name)
  for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "serve memory, %s: peak RSS %s MiB with 200 sessions of the largest legal envelope (target %s MiB)\n", name, f["peak-RSS-MiB"], f["target-MiB"]
}' "$raw"
echo "bench: table written to $out (raw output: $raw)"
