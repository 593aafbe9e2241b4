package flush

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/testpeer"
)

// The bounce tests of flush_peers_test.go send their bounces to Postfix;
// these send them to a second qbox serve (QMQP into a maildir), so
// go test ./... covers bounces and lifetimes without peers.

// bounceServer runs qbox serve taking QMQP into a fresh maildir and
// returns its address and the maildir.
func bounceServer(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bounces")
	return testpeer.StartServe(t, "--qmqp", "127.0.0.1:0", "--qmtp", "", "--maildir", dir).QMQP, dir
}

// bounces returns the messages in the bounce maildir. serve answers K
// only once a message is stored, so after flush-maildir exits they are all
// there.
func bounces(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestFlushBounceToServe(t *testing.T) {
	bounceAddr, bounceDir := bounceServer(t)
	addr, _ := serve(t, "--max-size", "1K")
	src := newMaildir(t)
	big := []byte("Subject: big\n\n" + strings.Repeat("too big for the server\n", 100))
	enqueue(t, src, "1700000001.big.host", "sender@example.test", "ppp-victim@remote.test", big, time.Hour)
	enqueue(t, src, "1700000002.small.host", "sender@example.test", "ppp-fine@remote.test", []byte("Subject: small\n\nok\n"), time.Hour)

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--bounce-server", bounceAddr, src, "ppp-", addr)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "bounced new/1700000001.big.host <victim@remote.test>") {
		t.Errorf("no bounced line:\n%s", stdout)
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	msgs := bounces(t, bounceDir)
	if len(msgs) != 1 {
		t.Fatalf("%d bounces stored, want 1", len(msgs))
	}
	for _, want := range []string{"To: sender@example.test", "Final-Recipient: rfc822; victim@remote.test", "Status: 5.3.4", "multipart/report"} {
		if !strings.Contains(msgs[0], want) {
			t.Errorf("bounce lacks %q:\n%s", want, msgs[0])
		}
	}
}

func TestFlushDeferredAndLifetimeToServe(t *testing.T) {
	bounceAddr, bounceDir := bounceServer(t)
	script := filepath.Join(t.TempDir(), "qq-tempfail")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat >/dev/null\nexit 71\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	addr, _ := serve(t, "--queue-program", script)
	src := newMaildir(t)
	enqueue(t, src, "1700000001.young.host", "sender@example.test", "ppp-young@remote.test", []byte("Subject: young\n\nx\n"), time.Hour)
	enqueue(t, src, "1700000002.old.host", "sender@example.test", "ppp-old@remote.test", []byte("Subject: old\n\nold\n"), 15*24*time.Hour)

	// --no-bounce: both stay.
	stdout, _, code := runQbox(t, nil, "flush-maildir", "--no-bounce", "--bounce-server", bounceAddr, src, "ppp-", addr)
	if code != 111 || len(remaining(t, src)) != 2 {
		t.Fatalf("--no-bounce: exit %d, left %v\n%s", code, remaining(t, src), stdout)
	}
	if !strings.Contains(stdout, "deferred new/1700000001.young.host") || !strings.Contains(stdout, "failed new/1700000002.old.host") {
		t.Errorf("--no-bounce output:\n%s", stdout)
	}
	if n := len(bounces(t, bounceDir)); n != 0 {
		t.Fatalf("%d bounces with --no-bounce", n)
	}

	// Bounces find their server as qbox inject does: here $QMQPSERVERS.
	stdout, _, code = runQbox(t, []string{"QMQPSERVERS=" + bounceAddr}, "flush-maildir", src, "ppp-", addr)
	if code != 111 {
		t.Fatalf("exit %d, want 111 (the young message remains)\n%s", code, stdout)
	}
	if left := remaining(t, src); len(left) != 1 || left[0] != "new/1700000001.young.host" {
		t.Fatalf("left %v\n%s", left, stdout)
	}
	msgs := bounces(t, bounceDir)
	if len(msgs) != 1 {
		t.Fatalf("%d bounces stored, want 1", len(msgs))
	}
	for _, want := range []string{"This message is too old. Giving up.", "Status: 4.4.7", "Final-Recipient: rfc822; old@remote.test"} {
		if !strings.Contains(msgs[0], want) {
			t.Errorf("bounce lacks %q:\n%s", want, msgs[0])
		}
	}
}
