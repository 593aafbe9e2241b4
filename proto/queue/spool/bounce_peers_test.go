//go:build peers

package spool

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/store/maildir"
	"qbox/proto/testkit/testpeer"
)

// storedMail reads every message `qbox serve` stored in the maildir dir.
func storedMail(t *testing.T, dir string) []maildir.Entry {
	t.Helper()
	res, err := maildir.Scan(dir, maildir.ScanOptions{TmpMaxAge: -1})
	if err != nil {
		t.Fatal(err)
	}
	return res.Entries
}

func readEntry(t *testing.T, e *maildir.Entry) string {
	t.Helper()
	b, err := os.ReadFile(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A hub whose size limit refuses the original (qbox serve --max-size
// 32K; the message is 50 KB, under the 64 KB a bounce would carry whole):
// the bounce carries the original's header only (text/rfc822-headers),
// so the same hub takes it, and the message leaves the queue after one
// run instead of staying stuck.
func TestOversizeBouncedHeadersOnly(t *testing.T) {
	box := filepath.Join(t.TempDir(), "hub")
	srv := testpeer.StartServe(t, "--qmqp", "127.0.0.1:0", "--qmtp", "", "--maildir", box, "--max-size", "32K")
	s := openSpool(t)
	body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq\n", 50<<10/64)
	msg := "Subject: too big for the hub\nX-Marker: original-header\n\n" + body
	enqueue(t, s, "owner@example.test", msg, "rcpt@example.test")
	res, err := s.FlushQMQP(context.Background(), client(srv.QMQP), "example.test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 1 || res.Remaining() != 0 {
		t.Fatalf("flush %+v, want the message bounced and gone", res)
	}
	got := storedMail(t, box)
	if len(got) != 1 || got[0].Recipient != "owner@example.test" || got[0].Sender != "" {
		t.Fatalf("hub holds %+v, want one bounce to the owner from <>", got)
	}
	b := readEntry(t, &got[0])
	for _, want := range []string{"Content-Type: text/rfc822-headers", "X-Marker: original-header", "#5.3.4"} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%.3000s", want, b)
		}
	}
	if strings.Contains(b, "message/rfc822") || strings.Contains(b, body[:200]) {
		t.Errorf("bounce carries the original's body (%d bytes)", len(b))
	}
	if n := len(queued(t, s)); n != 0 {
		t.Fatalf("%d recipients still queued", n)
	}
	l, _ := s.Messages()
	if c := l.Count(); c.Stuck != 0 || c.Messages != 0 {
		t.Errorf("counts %+v after the bounce", c)
	}
}
