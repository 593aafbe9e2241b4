package inject

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto"
	"qbox/proto/queue/spool"
)

func queued(t *testing.T, dir string) int {
	t.Helper()
	q, _, err := (&spool.Spool{Dir: dir}).Queued()
	if err != nil {
		t.Fatal(err)
	}
	return len(q)
}

func enqueue(t *testing.T, dir string, msg []byte, sender string, rcpts ...string) {
	t.Helper()
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Enqueue(proto.Envelope{Sender: sender, Recipients: rcpts}, bytes.NewReader(msg), int64(len(msg)), "relay down"); err != nil {
		t.Fatal(err)
	}
}

// What sendmail queued while the relay was down leaves with
// `inject --flush` once it is back: kept while unreachable, then one QMQP
// message for both recipients, removed after K.
func TestFlushDeliversTheSpool(t *testing.T) {
	env, _ := baseEnv(t)
	dir := filepath.Join(t.TempDir(), "spool")
	env = append(env, "QBOX_SPOOL="+dir)
	msg := []byte("Subject: queued\n\nwhile the relay was down\n")
	enqueue(t, dir, msg, "me@example.test", "a@example.test", "b@example.test")

	code, stderr := inject(t, env, "ignored stdin", "--flush", "-s", refusedAddr(t))
	if code != 111 || !strings.Contains(stderr, "2 still queued") {
		t.Fatalf("unreachable: exit %d, stderr %q; want 111 and 2 still queued", code, stderr)
	}
	if n := queued(t, dir); n != 2 {
		t.Fatalf("%d files queued after a failed flush, want 2", n)
	}

	k := startScripted(t, ns("Kqueued"))
	code, stderr = inject(t, env, nil, "--flush", "-s", k.addr)
	if code != 0 || !strings.Contains(stderr, "2 delivered, 0 bounced, 0 still queued") {
		t.Fatalf("flush: exit %d, stderr %q", code, stderr)
	}
	if n := k.conns.Load(); n != 1 {
		t.Fatalf("server saw %d connections, want one message for both recipients", n)
	}
	got, sender, rcpts := k.received(t, 0)
	if !bytes.Equal(got, msg) || sender != "me@example.test" || strings.Join(rcpts, " ") != "a@example.test b@example.test" {
		t.Fatalf("server got %q from %q to %q", got, sender, rcpts)
	}
	if n := queued(t, dir); n != 0 {
		t.Fatalf("%d files left after K", n)
	}

	code, stderr = inject(t, env, nil, "--flush", "-s", k.addr)
	if code != 0 || k.conns.Load() != 1 {
		t.Fatalf("second flush: exit %d, stderr %q, %d connections", code, stderr, k.conns.Load())
	}
}

func TestFlushRefusesRecipients(t *testing.T) {
	env, _ := baseEnv(t)
	env = append(env, "QBOX_SPOOL="+t.TempDir())
	code, stderr := inject(t, env, nil, "--flush", "-s", "127.0.0.1", "someone@example.test")
	if code != 100 || !strings.Contains(stderr, "no recipients") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// spoolRecipients counts the recipients queued in the spool dir.
func spoolRecipients(t *testing.T, dir string) map[string]int {
	t.Helper()
	q, bad, err := (&spool.Spool{Dir: dir}).Queued()
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("malformed files in %s: %v", dir, bad)
	}
	out := map[string]int{}
	for _, r := range q {
		out[r.Recipient]++
	}
	return out
}
