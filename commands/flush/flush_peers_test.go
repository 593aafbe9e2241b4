//go:build peers

package flush

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/qmtp"
	"qbox/proto/testkit/testpeer"
)

func TestFlushMailfront(t *testing.T) {
	addr := testpeer.Mailfront(t, "qmtp")
	src := newMaildir(t)
	fill(t, src, 15, testpeer.Token(t))
	var out bytes.Buffer
	sum, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Connect: hostConnect(addr, &qmtp.Client{}), Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if sum.Succeeded != 15 || sum.Remaining != 0 {
		t.Fatalf("%+v\n%s", sum, out.String())
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("left %v", left)
	}
}

// Permanent failure: serve refuses messages over --max-size with D; the
// bounce goes over QMQP to Postfix and lands in its maildir.
func TestFlushBounceToPostfix(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	addr, _ := serve(t, "--max-size", "1K")
	src := newMaildir(t)
	token := testpeer.Token(t)
	big := []byte("Subject: " + token + "\n\n" + strings.Repeat("too big for the server\n", 100))
	enqueue(t, src, "1700000001.big.host", "sender@"+pf.Domain, "ppp-victim@remote.test", big, time.Hour)
	small := []byte("Subject: small\n\nok\n")
	enqueue(t, src, "1700000002.small.host", "sender@"+pf.Domain, "ppp-fine@remote.test", small, time.Hour)

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--bounce-server", pf.QMQPAddr, src, "ppp-", addr)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "bounced new/1700000001.big.host <victim@remote.test>") {
		t.Errorf("no bounced line:\n%s", stdout)
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	msgs := pf.WaitFor(t, token, 1, 30*time.Second)
	b := string(msgs[0])
	for _, want := range []string{"To: sender@" + pf.Domain, "Final-Recipient: rfc822; victim@remote.test", "Status: 5.3.4", "multipart/report"} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
}

// Deferred mail: serve hands off to a queue program that always fails
// temporarily (exit 71: Z). A young message stays; one past --lifetime is
// bounced as too old; --no-bounce keeps it.
func TestFlushDeferredAndLifetime(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	script := filepath.Join(t.TempDir(), "qq-tempfail")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat >/dev/null\nexit 71\n"), 0755); err != nil {
		t.Fatal(err)
	}
	addr, _ := serve(t, "--queue-program", script)
	token := testpeer.Token(t)
	src := newMaildir(t)
	enqueue(t, src, "1700000001.young.host", "sender@"+pf.Domain, "ppp-young@remote.test", []byte("Subject: young\n\nx\n"), time.Hour)
	enqueue(t, src, "1700000002.old.host", "sender@"+pf.Domain, "ppp-old@remote.test", []byte("Subject: "+token+"\n\nold\n"), 15*24*time.Hour)

	// --no-bounce: both stay.
	stdout, _, code := runQbox(t, nil, "flush-maildir", "--no-bounce", "--bounce-server", pf.QMQPAddr, src, "ppp-", addr)
	if code != 111 || len(remaining(t, src)) != 2 {
		t.Fatalf("--no-bounce: exit %d, left %v\n%s", code, remaining(t, src), stdout)
	}
	if !strings.Contains(stdout, "deferred new/1700000001.young.host") || !strings.Contains(stdout, "failed new/1700000002.old.host") {
		t.Errorf("--no-bounce output:\n%s", stdout)
	}

	// Bounces find their server as qbox inject does: here $QMQPSERVERS.
	stdout, _, code = runQbox(t, []string{"QMQPSERVERS=" + pf.QMQPAddr}, "flush-maildir", src, "ppp-", addr)
	if code != 111 {
		t.Fatalf("exit %d, want 111 (the young message remains)\n%s", code, stdout)
	}
	if left := remaining(t, src); len(left) != 1 || left[0] != "new/1700000001.young.host" {
		t.Fatalf("left %v\n%s", left, stdout)
	}
	b := string(pf.WaitFor(t, token, 1, 30*time.Second)[0])
	for _, want := range []string{"This message is too old. Giving up.", "Status: 4.4.7", "Final-Recipient: rfc822; old@remote.test"} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
}
