package smtp

import (
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto"
	"qbox/proto/server"
)

// The one reply to the dot for the store's replies per recipient: 250
// only when all are K; 451 as soon as one is Z (the client sends again);
// 554 when some are D, saying how many did get it when some did; the
// enhanced code from a qmail-style text when its class fits.
func TestDataReply(t *testing.T) {
	K, Z, D := proto.K("ok stored"), proto.Z("disk full (#4.3.0)"), proto.D("no such user (#5.1.1)")
	for _, c := range []struct {
		replies []proto.Reply
		code    int
		enh     gosmtp.EnhancedCode
		text    string
	}{
		{[]proto.Reply{K, K}, 250, gosmtp.EnhancedCode{2, 0, 0}, "ok stored"},
		{[]proto.Reply{Z, Z}, 451, gosmtp.EnhancedCode{4, 3, 0}, "disk full (#4.3.0)"},
		{[]proto.Reply{K, Z}, 451, gosmtp.EnhancedCode{4, 3, 0}, "disk full"},
		{[]proto.Reply{D, Z, K}, 451, gosmtp.EnhancedCode{4, 3, 0}, "disk full"},
		{[]proto.Reply{D, D}, 554, gosmtp.EnhancedCode{5, 1, 1}, "no such user (#5.1.1)"},
		{[]proto.Reply{K, D, K}, 554, gosmtp.EnhancedCode{5, 1, 1}, "delivered to 2 of 3 recipients only"},
		{[]proto.Reply{proto.D("bad (#4.1.1)")}, 554, gosmtp.EnhancedCode{5, 0, 0}, "bad"},
		{[]proto.Reply{proto.Z("line\r\nbreak (#4.x.0)")}, 451, gosmtp.EnhancedCode{4, 0, 0}, "line??break"},
		{nil, 451, gosmtp.EnhancedCode{4, 3, 0}, "no recipients"},
	} {
		r := DataReply(c.replies)
		if r.Code != c.code || r.EnhancedCode != c.enh || !strings.Contains(r.Message, c.text) || strings.ContainsAny(r.Message, "\r\n") {
			t.Errorf("%v: %d %v %q, want %d %v containing %q", c.replies, r.Code, r.EnhancedCode, r.Message, c.code, c.enh, c.text)
		}
	}
}

// The data as go-smtp hands it over (CRLF, dot-unstuffed) is stored with
// LF line ends; a bare LF stays a line end, a bare CR stays, also across
// reads.
func TestCRLFToLF(t *testing.T) {
	in := []string{"a\r\nb\r", "\nc\rd\ne\r", "\r\n", "\r"}
	var out []byte
	cr := false
	for _, s := range in {
		out, cr = server.AppendCRLFToLF(out, []byte(s), cr)
	}
	if cr {
		out = append(out, '\r')
	}
	if string(out) != "a\nb\nc\rd\ne\r\n\r" {
		t.Errorf("got %q", out)
	}
}
