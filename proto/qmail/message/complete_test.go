package message

import (
	"errors"
	"strings"
	"testing"
)

// TestCompleteHeaderAddresses: the address fields qmail-inject rewrites
// get their bare boxes and dotless hosts completed in the header, as
// qmail-header(5) and qmail-inject(8) describe; other fields, display
// names, comments and folding stay as written.
func TestCompleteHeaderAddresses(t *testing.T) {
	cfg := fixedConfig()
	cfg.DefaultHost, cfg.DefaultDomain, cfg.PlusDomain, cfg.IDHost = "dh.example", "dd.example", "pd.example", "id.example"
	in := "From: \"Root\" <root>\n" +
		"Sender: daemon (the daemon)\n" +
		"Reply-To: bob@office, carol@lab+\n" +
		"To: root, bob\n" +
		"Cc: team:\n\talice, \"x y\"@z.example;\n" +
		"Errors-To: errors\r\n" +
		"Return-Receipt-To: rr\n" +
		"Apparently-To: at\n" +
		"Resent-From: rf\nResent-Sender: rs\nResent-Reply-To: rrt\nResent-To: rt\nResent-Cc: rc\n" +
		"X-Not-An-Address: root\n" +
		"Subject: root\n" +
		"\nbody\n"
	m, err := Prepare(strings.NewReader(in), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := "Resent-Date: 26 Sep 1995 04:46:53 -0000\n" +
		"Resent-Message-ID: <19950926044653.12345.qmail@id.example>\n" +
		"From: \"Root\" <root@dh.example>\n" +
		"Sender: daemon@dh.example (the daemon)\n" +
		"Reply-To: bob@office.dd.example, carol@lab.pd.example\n" +
		"To: root@dh.example, bob@dh.example\n" +
		"Cc: team:\n\talice@dh.example, \"x y\"@z.example;\n" +
		"Errors-To: errors@dh.example\n" +
		"Return-Receipt-To: rr@dh.example\n" +
		"Apparently-To: at@dh.example\n" +
		"Resent-From: rf@dh.example\nResent-Sender: rs@dh.example\nResent-Reply-To: rrt@dh.example\nResent-To: rt@dh.example\nResent-Cc: rc@dh.example\n" +
		"X-Not-An-Address: root\n" +
		"Subject: root\n" +
		"\n"
	if got := string(m.Header); got != want {
		t.Errorf("header:\n%s\nwant:\n%s", got, want)
	}
}

// TestCompleteHeaderKeepsUnparsable: a field qbox cannot parse is kept
// as written (qmail-inject does the same); a default host that would
// split the field is refused, never written.
func TestCompleteHeaderKeepsUnparsable(t *testing.T) {
	cfg := fixedConfig()
	cfg.DefaultHost, cfg.DefaultDomain = "dh.example", "dd.example"
	m, err := Prepare(strings.NewReader("To: \"unterminated\nFrom: <a\n\nbody\n"), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Header), "To: \"unterminated\nFrom: <a\n") {
		t.Errorf("unparsable fields changed:\n%s", m.Header)
	}
	cfg.DefaultHost = "evil\nBcc: x@y"
	_, err = Prepare(strings.NewReader("To: root@x.example\nReply-To: bare\n\nbody\n"), cfg, Options{})
	var refused *RefusedError
	if !errors.As(err, &refused) || !errors.Is(err, ErrHeaderBytes) {
		t.Fatalf("default host with LF: got %v, want a RefusedError wrapping ErrHeaderBytes", err)
	}
}
