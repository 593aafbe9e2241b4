package inject

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
)

// queuedRecipients lists the recipients the spool at dir holds.
func queuedRecipients(t *testing.T, dir string) []spool.QueuedRecipient {
	t.Helper()
	q, bad, err := (&spool.Spool{Dir: dir}).Queued()
	if err != nil || len(bad) != 0 {
		t.Fatalf("queued: %v, malformed %v", err, bad)
	}
	return q
}

// A QMTP relay takes one recipient and refuses the other: inject exits 0
// with one line saying so, only the refused recipient is queued, and a
// later flush (to a relay that takes everything) delivers the message to
// that recipient alone, never a second time to the one who has it.
func TestPartialAcceptQueuesOnlyTheRest(t *testing.T) {
	s := testpeer.StartPartialQMTP(t, "example.test")
	env, dir := spoolEnv(t)
	code, stderr := inject(t, env, "Subject: partial\n\nx\n", "-s", "qmtp://"+s.QMTP, "ok@example.test", "out@elsewhere.test")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(stderr, "taken for 1 of 2 recipients") || !strings.Contains(stderr, "other 1 (out@elsewhere.test) not taken") || !strings.Contains(stderr, "queued in "+dir) {
		t.Fatalf("stderr %q; want one line: taken for 1 of 2, the other queued in %s", stderr, dir)
	}
	if got := maildirtest.Recipients(t, s.Maildir); len(got) != 1 || got["ok@example.test"] != 1 {
		t.Fatalf("stored: %v; want ok@example.test once", got)
	}
	q := queuedRecipients(t, dir)
	if len(q) != 1 || q[0].Recipient != "out@elsewhere.test" || !strings.Contains(q[0].LastError, "1 of 2") {
		t.Fatalf("queued %+v; want out@elsewhere.test alone, its last error saying 1 of 2", q)
	}

	all := testpeer.StartServe(t, "--qmqp", "", "--qmtp", "127.0.0.1:0", "--maildir", filepath.Join(t.TempDir(), "all"))
	code, stderr = inject(t, env, nil, "--flush", "-s", "qmtp://"+all.QMTP)
	if code != 0 {
		t.Fatalf("flush: exit %d, stderr %q", code, stderr)
	}
	if got := maildirtest.Recipients(t, all.Maildir); len(got) != 1 || got["out@elsewhere.test"] != 1 {
		t.Fatalf("the flush delivered to %v; want out@elsewhere.test alone", got)
	}
	if got := maildirtest.Recipients(t, s.Maildir); len(got) != 1 || got["ok@example.test"] != 1 {
		t.Fatalf("first relay now holds %v; want ok@example.test once", got)
	}
	if q := queuedRecipients(t, dir); len(q) != 0 {
		t.Fatalf("still queued after the flush: %+v", q)
	}
}

// The queued remainder of a D comes back as D from the flush, which
// bounces it to the sender; the recipient who has the message gets no
// second copy.
func TestPartialRefusedRestBounces(t *testing.T) {
	s := testpeer.StartPartialQMTP(t, "example.test")
	env, _ := spoolEnv(t)
	relay := "qmtp://" + s.QMTP
	if code, stderr := inject(t, env, "Subject: partial\n\nx\n", "-s", relay, "-f", "me@example.test", "ok@example.test", "out@elsewhere.test"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	code, stderr := inject(t, env, nil, "--flush", "-s", relay)
	if code != 0 {
		t.Fatalf("flush: exit %d, stderr %q", code, stderr)
	}
	got := maildirtest.Recipients(t, s.Maildir)
	if len(got) != 2 || got["ok@example.test"] != 1 || got["me@example.test"] != 1 {
		t.Fatalf("stored: %v; want ok@example.test once and the bounce to me@example.test", got)
	}
}

// Every recipient refused: a permanent failure as before (100), nothing
// queued.
func TestAllRefusedIsPermanent(t *testing.T) {
	s := testpeer.StartPartialQMTP(t, "example.test")
	env, dir := spoolEnv(t)
	code, stderr := inject(t, env, "Subject: no\n\nx\n", "-s", "qmtp://"+s.QMTP, "a@elsewhere.test", "b@elsewhere.test")
	if code != 100 {
		t.Fatalf("exit %d, stderr %q; want 100", code, stderr)
	}
	if q := queuedRecipients(t, dir); len(q) != 0 {
		t.Fatalf("queued %+v; want nothing", q)
	}
}

// When the spool cannot take the rest, the exit is temporary (111) and
// the message names the recipients that already have it.
func TestPartialWithoutSpoolNamesTheTaken(t *testing.T) {
	s := testpeer.StartPartialQMTP(t, "example.test")
	env, _ := baseEnv(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env = append(env, "QBOX_SPOOL="+filepath.Join(file, "spool")) // under a file: unusable
	code, stderr := inject(t, env, "Subject: partial\n\nx\n", "-s", "qmtp://"+s.QMTP, "ok@example.test", "out@elsewhere.test")
	if code != 111 {
		t.Fatalf("exit %d, stderr %q; want 111", code, stderr)
	}
	if !strings.Contains(stderr, "took the message for ok@example.test but") || !strings.Contains(stderr, "sends it again to ok@example.test") {
		t.Fatalf("stderr %q does not name ok@example.test (alone) as already taken", stderr)
	}
}

// QMQP answers the whole message: a Z stays exit 111, nothing queued.
func TestQMQPDeferralNotQueued(t *testing.T) {
	z := startScripted(t, ns("Zlater"))
	env, dir := spoolEnv(t)
	code, stderr := inject(t, env, "Subject: z\n\nx\n", "-s", z.addr, "a@example.test", "b@example.test")
	if code != 111 || !strings.Contains(stderr, "later") {
		t.Fatalf("exit %d, stderr %q; want 111 with the reply", code, stderr)
	}
	if q := queuedRecipients(t, dir); len(q) != 0 {
		t.Fatalf("queued %+v; want nothing", q)
	}
}

// A per-recipient relay that defers every recipient (qbox serve over
// QMTP, its queue program exiting 71, qmail-queue's Z): the message is
// queued for all of them and inject exits 0 saying so.
func TestPerRecipientRelayDeferringAllQueues(t *testing.T) {
	prog := filepath.Join(t.TempDir(), "defer")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\ncat >/dev/null\nexit 71\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := testpeer.StartServe(t, "--qmqp", "", "--qmtp", "127.0.0.1:0", "--queue-program", prog)
	env, dir := spoolEnv(t)
	code, stderr := inject(t, env, "Subject: later\n\nx\n", "-s", "qmtp://"+s.QMTP, "a@example.test", "b@example.test")
	if code != 0 || !strings.Contains(stderr, "not sent now") || !strings.Contains(stderr, "queued for its 2 recipients in "+dir) {
		t.Fatalf("exit %d, stderr %q; want 0 and the note that both were queued", code, stderr)
	}
	if q := queuedRecipients(t, dir); len(q) != 2 {
		t.Fatalf("queued %+v; want both recipients", q)
	}
}

// spoolEnv is baseEnv with a spool of the test's own ($QBOX_SPOOL), which
// it returns.
func spoolEnv(t *testing.T) ([]string, string) {
	env, _ := baseEnv(t)
	dir := filepath.Join(t.TempDir(), "spool")
	return append(env, "QBOX_SPOOL="+dir), dir
}
