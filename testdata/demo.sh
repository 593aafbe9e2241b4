#!/bin/bash
# The main job on the embedded defaults, end to end on loopback: start
# `qbox serve` into a fresh maildir, inject one message over QMQP with
# `qbox inject`, and show the file that arrived. Needs no root: it listens
# on an unprivileged port instead of 628.
set -euo pipefail
qbox=${1:-./qbox}
work=$(mktemp -d /tmp/qbox-demo.XXXXXX)
port=${QBOX_DEMO_PORT:-26280}
"$qbox" serve --maildir "$work/Maildir" --qmqp "127.0.0.1:$port" --qmtp '' 2>"$work/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null || true' EXIT
# Ready when it says so (a test connection would show up in its log).
for _ in $(seq 200); do grep -q 'msg=listening' "$work/serve.log" && break; sleep 0.05; done
grep -q 'msg=listening' "$work/serve.log" || { cat "$work/serve.log"; exit 1; }

echo "== qbox inject -s 127.0.0.1:$port -f alice@example.org bob@example.org"
printf 'From: Alice <alice@example.org>\nTo: Bob <bob@example.org>\nSubject: hello from qbox\n\nIt works: this message crossed QMQP.\n' |
  "$qbox" inject -s "127.0.0.1:$port" -f alice@example.org bob@example.org
echo "   exit status $? (0 = the server said K: stored and fsync'd)"

file=$(ls "$work/Maildir/new/" | head -1)
echo "== arrived: $work/Maildir/new/$file"
cat "$work/Maildir/new/$file"
echo "== serve's log"
cat "$work/serve.log"
