package probe

import (
	"strings"
	"testing"
)

// FuzzClassifyGreeting feeds arbitrary first bytes from a server (what
// probe reads before speaking, at most maxGreeting) to the classifier:
// it must not panic, must say something about any non-empty input, and
// everything it reports must be printable.
func FuzzClassifyGreeting(f *testing.F) {
	for _, s := range []string{
		"", "220 mx ESMTP\r\n", "220-a\r\n220 b\r\n", "554 go away\r\n", "220",
		"60:DError: unknown[127.0.0.2] is not authorized to use this service,",
		"3:Kok,", "5:Kok", "01:K,", "99999999999999999999:x", "5:hello,", "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxGreeting {
			b = b[:maxGreeting]
		}
		g, _ := ClassifyGreeting(b)
		if len(b) > 0 && g.Heard == Silence {
			t.Fatalf("%q classified as silence", b)
		}
		for _, s := range []string{g.Banner, g.Data, replyText(g)} {
			for _, c := range []byte(s) {
				if c < 32 || c > 126 {
					t.Fatalf("unprintable %q in %+v", s, g)
				}
			}
		}
		if g.Heard == SMTPBanner && !strings.HasPrefix(string(b), g.Banner[:3]) {
			t.Fatalf("banner %q from %q", g.Banner, b)
		}
	})
}

func replyText(g Greeting) string {
	if g.Reply == nil {
		return ""
	}
	return g.Reply.Text
}

func TestClassifyGreeting(t *testing.T) {
	cases := []struct {
		in       string
		heard    Heard
		complete bool
		check    func(Greeting) bool
	}{
		{"", Silence, false, nil},
		{"220 mx.example ESMTP\r\n", SMTPBanner, true, func(g Greeting) bool { return g.SMTPCode == 220 && g.Banner == "220 mx.example ESMTP" }},
		{"220-mx.example\r\n", SMTPBanner, false, nil},
		{"220-mx.example\r\n220 second\r\n", SMTPBanner, true, func(g Greeting) bool { return g.Banner == "220-mx.example / 220 second" }},
		{"554 5.7.1 no\r\n", SMTPBanner, true, func(g Greeting) bool { return g.SMTPCode == 554 }},
		{"220", SMTPBanner, false, func(g Greeting) bool { return g.SMTPCode == 220 && g.Banner == "220" }},
		{"12:DError: nope,", Netstring, true, func(g Greeting) bool { return g.Reply.Status == "D" && g.Reply.Text == "Error: nope" }},
		{"12:DError:", Netstring, false, nil},
		{"12", Other, false, nil},
		{"5:hello,", Netstring, true, func(g Greeting) bool { return g.Reply == nil && g.Data == "hello" }},
		{"5:hello!", Other, true, nil},
		{"01:K,", Other, true, nil},
		{"99999999999999999999:x", Other, true, nil},
		{"SSH-2.0-OpenSSH_9.2\r\n", Other, false, nil},
	}
	for _, c := range cases {
		g, complete := ClassifyGreeting([]byte(c.in))
		if g.Heard != c.heard || complete != c.complete || (c.check != nil && !c.check(g)) {
			t.Errorf("ClassifyGreeting(%q) = %+v, %v", c.in, g, complete)
		}
	}
}
