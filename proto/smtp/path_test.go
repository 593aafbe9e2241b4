package smtp

import (
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

// An address with '>' would end the SMTP path early and smuggle ESMTP
// parameters (RCPT TO:<a@b> NOTIFY=NEVER>). Such a recipient gets D alone
// and is never written; such a sender fails its whole message; the other
// recipients are delivered as usual.
func TestAddressThatWouldBreakThePathIsNeverWritten(t *testing.T) {
	srv := &scriptServer{ehlo: []string{"PIPELINING"}, rcpt: func(string) string { return "250 2.1.5 ok" }}
	addr := startServer(t, srv.handle)
	msgs := []proto.Message{
		bytesMessage("s@example.test", []byte("one\n"), "good@example.test", "evil@example.test> NOTIFY=NEVER", "<x@example.test"),
		bytesMessage("a>b@example.test", []byte("two\n"), "good@example.test"),
	}
	results, err := deliver(t, &Client{CommandTimeout: 20 * time.Second}, addr, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(results); got != "KDDD" {
		t.Fatalf("statuses %s, want KDDD: %+v", got, results)
	}
	for _, r := range results[1:] {
		if r.FromServer || !strings.Contains(r.Reply.Text, "cannot be written") {
			t.Errorf("refused address: %+v", r)
		}
	}
	cmds, _, _ := srv.log2()
	for _, c := range cmds {
		if strings.Contains(c, "NOTIFY") || strings.Contains(c, "evil") || strings.Contains(c, "a>b") || strings.Contains(c, "<<") {
			t.Errorf("the server was sent %q", c)
		}
	}
}
