#!/bin/bash
# make bench: the headline benchmarks, each measuring qbox beside a peer
# (or a floor) in the same run, in about five minutes; make bench-full
# (BENCH_SET=full): every benchmark, about sixteen. The machine is shared
# and noisy, so read ratios, not absolute times. Prints one table, writes
# it as Markdown (testdata/bench-results.md for the headline set,
# testdata/bench-results-full.md for the full one) and prints the figures
# against their targets.
set -euo pipefail
cd "$(dirname "$0")/.."
raw=$(mktemp /tmp/qbox-bench.XXXXXX)
started=$(date +%s)
# The headline: QMQP's 1000-recipient claim, qmail-remote on qmail's own
# path (one recipient per call) and with 100 recipients, one message per
# process beside the floor and qmqp-source, serve durable beside the
# disk's per-file ceiling and Postfix. Add a benchmark here to make it a
# headline figure.
headline='^Benchmark(Modem1000Recipients|InjectOneMessage|QmailRemote100Recipients|QmailRemoteRspawn|ServeBesideDiskAndPostfix|PickupOneDrop2000Recipients|ServeGroupCommit|StoreGroupCommit)$'
if [ "${BENCH_SET:-headline}" = full ]; then
  pkgs=$(go list ./... | grep -v '^qbox/netstring$')
  pattern=${BENCH:-.}
  out=testdata/bench-results-full.md
else
  pkgs="./commands/benchmarks ./commands/serve ./proto/queue/spool ./proto/store/maildir"
  pattern=${BENCH:-$headline}
  out=testdata/bench-results.md
fi
# The end-to-end benchmarks run once each (seconds apiece, peers inside);
# the netstring micro-benchmarks need the usual repetitions to mean anything.
{
  go test -run '^$' -bench "$pattern" -benchtime "${BENCHTIME:-1x}" -timeout 20m $pkgs 2>&1
  go test -run '^$' -bench "${BENCH:-.}" -benchmem -timeout 5m ./netstring 2>&1
} | tee "$raw" | grep --line-buffered -E '^(Benchmark|ok|FAIL|---|panic)' >&2 || true
if grep -qE '^(FAIL|--- FAIL|panic)' "$raw"; then
  echo "bench: a benchmark failed; raw output in $raw" >&2
  exit 1
fi
# Only a whole set rewrites its table; a BENCH subset writes its own
# beside the raw output.
[ -z "${BENCH:-}" ] || out=$raw.md
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
# Issue 15: serve beside the disk's own ceiling and beside Postfix (medians
# of three rounds), and one message per process beside qmqp-source -m 1
# (medians of 30, interleaved).
awk '/^BenchmarkServeBesideDiskAndPostfix/ {
  for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "serve, QMQP (qmqp-source -s 20): %s msg/s = %.2f x Postfix qmqpd (%s msg/s; target >= 3), beside qmqp-sink %s msg/s\n", f["qmqp-msgs/s"], f["qmqp/postfix"], f["postfix-qmqpd-msgs/s"], f["qmqp-sink-msgs/s"]
  printf "serve, QMTP (flush-maildir, one connection): %s msg/s = %.2f x QMQP (target >= 0.9)\n", f["qmtp-msgs/s"], f["qmtp/qmqp"]
  printf "disk ceiling, durable 2 KB files, 20 writers: %s files/s (%s without fsync); serve reaches %.2f x of it by QMQP, %.2f x by QMTP\n", f["disk-fsync-files/s"], f["disk-nofsync-files/s"], f["qmqp/disk"], f["qmtp/disk"]
}
/^BenchmarkInjectOneMessage/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "one message per process (median of 30): qmail-qmqpc %s ms = %.2f x the Go floor (testdata/qmqpfloor, %s ms; target <= 1.15) = %.2f x qmqp-source -m 1 (%s ms); inject %s ms = %.2f x qmqp-source; the floor with the design card'"'"'s libraries linked (-tags libfloor) %s ms = %.2f x the floor, qmail-qmqpc %.2f x of it\n", f["qmail-qmqpc-ms"], f["qmail-qmqpc/floor"], f["floor-ms"], f["qmail-qmqpc/qmqp-source"], f["qmqp-source-ms"], f["inject-ms"], f["inject/qmqp-source"], f["library-floor-ms"], f["library-floor/floor"], f["qmail-qmqpc/library-floor"]
}' "$raw"
# Issue 26, point 2: serve's group commit beside the disk's per-file
# durable ceiling, one message's time at 1 and 20 clients, and the store's
# group commit beside the same store committing each message alone.
awk '/^BenchmarkServeGroupCommit/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "group commit, serve durable into a maildir beside the per-file ceiling (%s files/s, 20 writers): QMQP (qmqp-source -s 20) %s msg/s = %.2f x, QMTP (flush-maildir) %s msg/s = %.2f x (target >= 1.5); qmqp-sink, storing nothing, under the same load %s msg/s = %.2f x the ceiling (serve QMQP at %.2f x of it); the same serve into a maildir in memory (all but the disk'"'"'s work: the most any durable store reaches here) QMQP %s msg/s = %.2f x, QMTP %s msg/s = %.2f x; one message connect to K: 1 client p50 %s ms, p99 %s ms; 20 clients p50 %s ms, p99 %s ms (%s msg/s = %.2f x)\n", f["disk-fsync-files/s"], f["qmqp-msgs/s"], f["qmqp/disk"], f["qmtp-msgs/s"], f["qmtp/disk"], f["qmqp-sink-msgs/s"], f["qmqp-sink/disk"], f["qmqp/qmqp-sink"], f["memory-qmqp-msgs/s"], f["memory-qmqp/disk"], f["memory-qmtp-msgs/s"], f["memory-qmtp/disk"], f["1-client-p50-ms"], f["1-client-p99-ms"], f["20-clients-p50-ms"], f["20-clients-p99-ms"], f["20-clients-msgs/s"], f["20-clients/disk"]
}
/^BenchmarkStoreGroupCommit/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "group commit, the maildir store in-process, 2 KB messages: 1 writer %s msg/s (p50 %s ms, p99 %s ms) = %.2f x committing alone (%s msg/s, p50 %s ms, p99 %s ms; target: no slower); 20 writers %s msg/s (p50 %s ms, p99 %s ms) = %.2f x alone (%s msg/s, p50 %s ms, p99 %s ms)\n", f["group-1-msgs/s"], f["group-1-p50-ms"], f["group-1-p99-ms"], f["group/alone-1"], f["alone-1-msgs/s"], f["alone-1-p50-ms"], f["alone-1-p99-ms"], f["group-20-msgs/s"], f["group-20-p50-ms"], f["group-20-p99-ms"], f["group/alone-20"], f["alone-20-msgs/s"], f["alone-20-p50-ms"], f["alone-20-p99-ms"]
}' "$raw"
# Issues 11 and 12: SMTP beside QMTP, each against its own wire limit
# over the 28.8 kbit/s, 100 ms line; SMTP's rate and memory on loopback.
awk '/^BenchmarkFlushSMTPBesideQMTPModem/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "flush-maildir, 200 x 2 KB over the 28.8k line: SMTP (--smtp, PIPELINING, into Postfix smtpd) %s s = %.3f x its wire limit %s s (target <= 1.10; it waited %.0f round trips, the limit counts %s); QMTP into serve %s s = %.3f x its limit %s s (target <= 1.05); SMTP takes %.2f x as long as QMTP\n", f["smtp-s"], f["smtp/limit"], f["smtp-limit-s"], f["smtp-waits"], f["smtp-limit-waits"], f["qmtp-s"], f["qmtp/limit"], f["qmtp-limit-s"], f["smtp/qmtp"]
}
/^BenchmarkFlushSMTPLoopback10k/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "flush-maildir --smtp, 10,000 x 2 KB on loopback into Postfix smtpd: %s msg/s, peak RSS %s MiB; Postfix smtp-source -d into the same smtpd %s msg/s, %s MiB; qbox at %.2f x its rate (issue 11 sets no target)\n", f["smtp-msgs/s"], f["smtp-peak-RSS-MiB"], f["smtp-source-msgs/s"], f["smtp-source-peak-RSS-MiB"], f["qbox/smtp-source"]
}
/^BenchmarkQmailRemote100Recipients/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "qmail-remote, one 2 KB message to 100 recipients over the 28.8k line: QMTP (qmtproutes, into serve) %s s = %.3f x its limit, %s bytes up, %s down; SMTP (smtproutes, into Postfix smtpd) %s s = %.3f x its limit, %s bytes up, %s down; QMTP takes %.2f x SMTP'"'"'s time (target <= 0.8)\n", f["qmtp-s"], f["qmtp/limit"], f["qmtp-bytes-up"], f["qmtp-bytes-down"], f["smtp-s"], f["smtp/limit"], f["smtp-bytes-up"], f["smtp-bytes-down"], 1 / f["smtp/qmtp"]
}
/^BenchmarkQmailRemoteRspawn/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "qmail-remote as qmail-rspawn runs it (one recipient a call, 20 at once, 200 x 2 KB, each call over its own 28.8k line): QMTP into serve %s s (median call %s ms, %s bytes up, %s down a call); SMTP into Postfix smtpd %s s (%s ms, %s up, %s down); SMTP into serve %s s (%s ms); QMTP takes %.2f x SMTP'"'"'s time into Postfix (target <= 0.6), %.2f x into serve\n", f["qmtp-s"], f["qmtp-call-ms"], f["qmtp-bytes-up/call"], f["qmtp-bytes-down/call"], f["smtp-s"], f["smtp-call-ms"], f["smtp-bytes-up/call"], f["smtp-bytes-down/call"], f["smtp-serve-s"], f["smtp-serve-call-ms"], f["qmtp/smtp"], f["qmtp/smtp-serve"]
}' "$raw"
# Issue 25: a burst of 500 and 1,000 QMQP clients at once into serve's
# defaults and into Postfix qmqpd; a good client beside idle clients
# holding every slot (and then the waiting room too).
awk '/^BenchmarkBurstBesidePostfix/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  for (c = 500; c <= 1000; c += 500) {
    pf = sprintf("Postfix qmqpd %s s (%s msg/s); serve %.2f x as fast", f["postfix-" c "-s"], f["postfix-" c "-msgs/s"], f["serve-" c "/postfix-speed"])
    if (f["postfix-" c "-failed"] + 0) pf = sprintf("Postfix qmqpd FAILED after %s s (qmqp-source gave up; see the raw output)", f["postfix-" c "-s"])
    printf "burst, qmqp-source -s %d -m %s: serve %s of %s K in %s s (%s msg/s, peak RSS %s MiB, target <= 128; %s refused), %s\n", c, f["msgs"], f["msgs"], f["msgs"], f["serve-" c "-s"], f["serve-" c "-msgs/s"], f["serve-" c "-peak-RSS-MiB"], f["serve-" c "-refused"], pf
  }
}
/^BenchmarkGoodClientBesideIdleSlots/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "good client, 200 idle clients holding every slot: QMQP refused after its wait, %s s; with the waiting room full as well: QMQP refused in %s ms, SMTP greeted 421 4.3.2 in %s ms (target: well under 15 s)\n", f["room-free-qmqp-fail-s"], f["room-full-qmqp-fail-ms"], f["room-full-smtp-421-ms"]
}' "$raw"
# Issue 22: root's pickup of one 200 KB drop to 2,000 recipients stores
# it once.
awk '/^BenchmarkPickupOneDrop2000Recipients/ {
  split("", f); for (i = 3; i + 1 <= NF; i += 2) f[$(i+1)] = $i
  printf "pickup, one 200 KB drop to 2,000 recipients: %s ms, %s bytes written for a %s-byte drop = %.2f x (target <= 2); the queue holds %s bytes\n", f["pickup-ms"], f["written-bytes"], f["drop-bytes"], f["written/drop"], f["queue-bytes"]
}' "$raw"
echo "bench: table written to $out (raw output: $raw); $(( $(date +%s) - started )) s, load average now $(cut -d' ' -f1-3 /proc/loadavg)"
