package flush

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
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

// --lifetime on malformed files (TestFlushMalformedPastLifetime, against
// Postfix, in engine_peers_test.go), the reports going to qbox serve: past
// it, a regular file is reported to the postmaster with its contents, a
// symlink without (its target never read nor touched), and both are
// removed.
func TestFlushMalformedPastLifetimeToServe(t *testing.T) {
	bounceAddr, bounceDir := bounceServer(t)
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("not yours\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := newMaildir(t)
	if err := os.WriteFile(filepath.Join(src, "new", "1700000001.bad.host"), []byte("From: nobody\nDelivered-To: ppp-r@remote.test\n\nbody of the bad file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(src, "new", "1700000002.link.host")); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--lifetime", "1ns", "--bounce-server", bounceAddr,
		"--postmaster", "postmaster@example.test", "--json", src, "ppp-", testpeer.ClosedAddr(t))
	if code != 0 { // nothing left: no message needed the (unreachable) QMTP server
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	r := parseJSON(t, stdout)
	status := map[string]string{}
	for _, m := range r.Messages {
		status[m.File] = m.Status
	}
	if status["new/1700000001.bad.host"] != "bounced" || status["new/1700000002.link.host"] != "bounced" || r.Summary.Remaining != 0 {
		t.Fatalf("outcomes %v, summary %+v, want both reported and removed\n%s", status, r.Summary, stdout)
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "not yours\n" {
		t.Errorf("the symlink's target changed: %q %v", b, err)
	}
	if got := maildirtest.Recipients(t, bounceDir); len(got) != 1 || got["postmaster@example.test"] != 2 {
		t.Fatalf("reports stored for %v, want two for the postmaster", got)
	}
	var withBody, withoutBody int
	for _, m := range bounces(t, bounceDir) {
		if !strings.Contains(m, "multipart/report") {
			t.Errorf("not a report:\n%s", m)
		}
		switch {
		case strings.Contains(m, "body of the bad file"):
			withBody++
		case strings.Contains(m, "not yours"):
			t.Errorf("the symlink's target was attached:\n%s", m)
		default:
			withoutBody++
		}
	}
	if withBody != 1 || withoutBody != 1 {
		t.Errorf("%d reports with the file attached, %d without; want 1 and 1", withBody, withoutBody)
	}
}
