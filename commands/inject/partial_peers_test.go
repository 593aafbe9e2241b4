//go:build peers

package inject

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// Postfix's smtpd takes a recipient at its domain and refuses one
// elsewhere: inject exits 0, only the refused one is queued, and the
// flush (a D again, to the null sender: nothing to bounce) leaves the
// spool empty without a second copy for the recipient who has it. The
// message goes over SMTP (read twice: the size scan, then DATA) byte for
// byte.
func TestPartialAcceptBySMTPPostfix(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	env, _ := baseEnv(t)
	dir := filepath.Join(t.TempDir(), "spool")
	env = append(env, "QBOX_SPOOL="+dir)
	relay := "smtp://" + pf.SMTPAddr + "?tls=none"
	body := "token " + token + "\n" + strings.Repeat("line of the body\n", 5000)
	taken, refused := "ok-"+token+"@"+pf.Domain, "someone@elsewhere.invalid"
	code, stderr := inject(t, env, "Subject: "+token+"\n\n"+body, "-s", relay, "-f", "", taken, refused)
	if code != 0 || !strings.Contains(stderr, "taken for 1 of 2 recipients") || !strings.Contains(stderr, "("+refused+") not taken") {
		t.Fatalf("exit %d, stderr %q; want 0 and the note that %s was queued", code, stderr, refused)
	}
	if q := queuedRecipients(t, dir); len(q) != 1 || q[0].Recipient != refused {
		t.Fatalf("queued %+v; want %s alone", q, refused)
	}
	got := pf.WaitFor(t, token, 1, time.Minute)[0]
	if !bytes.Equal(testpeer.Body(got), []byte(body)) {
		t.Fatalf("delivered body differs from the one sent (%d vs %d bytes)", len(testpeer.Body(got)), len(body))
	}

	code, stderr = inject(t, env, nil, "--flush", "-s", relay)
	if code != 0 {
		t.Fatalf("flush: exit %d, stderr %q", code, stderr)
	}
	if q := queuedRecipients(t, dir); len(q) != 0 {
		t.Fatalf("still queued after the flush: %+v", q)
	}
	pf.WaitDrained(t, token, time.Minute)
	if n := len(pf.WaitFor(t, token, 1, time.Minute)); n != 1 {
		t.Fatalf("Postfix holds %d copies for %s; want 1", n, taken)
	}
}
