package sendmail

import (
	"strings"
	"testing"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
)

// A QMTP relay that takes one recipient and refuses another: only the
// refused one is queued, so the retry (whose D then bounces) never sends
// the message a second time to the recipient who has it.
func TestPartialAcceptQueuesOnlyTheRest(t *testing.T) {
	s := testpeer.StartPartialQMTP(t, "example.test")
	dest := s.Maildir
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, "", "QBOX_RELAYS=qmtp://"+s.QMTP)
	code, _, stderr := run(t, sendmail, env, "Subject: partial\n\nx\n", "ok@example.test", "out@elsewhere.test")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if got := maildirtest.Recipients(t, dest); len(got) != 1 || got["ok@example.test"] != 1 {
		t.Fatalf("stored: %v; want ok@example.test once", got)
	}
	q, bad, err := (&spool.Spool{Dir: spoolDir}).Queued()
	if err != nil || len(bad) != 0 {
		t.Fatalf("queued: %v, malformed %v", err, bad)
	}
	if len(q) != 1 || q[0].Recipient != "out@elsewhere.test" {
		t.Fatalf("queued %+v; want out@elsewhere.test alone", q)
	}
	if !strings.Contains(q[0].LastError, "1 of 2") {
		t.Errorf("last error %q does not say the message was taken for 1 of 2", q[0].LastError)
	}
}
