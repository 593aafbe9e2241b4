package relay

import (
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{"host", "hub:628", "[::1]:1", "qmqps://h", "smtp://u@h:587?tls=none", "smtps://h?ca=/x", "smtp://u:p@h", "qmtp://h/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		if r.Host == "" || r.Port == "" || r.Protocol == "" {
			t.Fatalf("Parse(%q) = %+v: an incomplete relay", s, r)
		}
		if strings.ContainsAny(r.Host+r.User+r.CAFile, "\x00\r\n") {
			t.Fatalf("Parse(%q) = %+v: control bytes got through", s, r)
		}
		again, err := Parse(r.String())
		if err != nil || again != r {
			t.Fatalf("Parse(%q) = %+v; its String %q parses to %+v, %v", s, r, r.String(), again, err)
		}
	})
}

func FuzzParseNetrc(f *testing.F) {
	f.Add([]byte("machine h login u password p\ndefault login a password b\n"))
	f.Add([]byte("machine h login \"a b\" password \"x\\\"y\"\nmacdef m\nx\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseNetrc(b)
		if err != nil {
			return
		}
		for _, e := range n.Entries {
			if len(e.Machine) > maxToken || len(e.Login) > maxToken || len(e.Password) > maxToken {
				t.Fatalf("an entry over the word limit: %d %d %d", len(e.Machine), len(e.Login), len(e.Password))
			}
		}
	})
}
