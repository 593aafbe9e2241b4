package relay

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		want Relay
	}{
		{"10.0.0.1", Relay{Scheme: "qmqp", Protocol: QMQP, Host: "10.0.0.1", Port: "628"}},
		{"hub:1628", Relay{Scheme: "qmqp", Protocol: QMQP, Host: "hub", Port: "1628"}},
		{"[::1]:628", Relay{Scheme: "qmqp", Protocol: QMQP, Host: "::1", Port: "628"}},
		{"::1", Relay{Scheme: "qmqp", Protocol: QMQP, Host: "::1", Port: "628"}},
		{"qmqp://hub", Relay{Scheme: "qmqp", Protocol: QMQP, Host: "hub", Port: "628"}},
		{"qmqps://hub", Relay{Scheme: "qmqps", Protocol: QMQP, TLS: TLSImplicit, Host: "hub", Port: "6628"}},
		{"qmtp://hub", Relay{Scheme: "qmtp", Protocol: QMTP, Host: "hub", Port: "209"}},
		{"QMTPS://hub/", Relay{Scheme: "qmtps", Protocol: QMTP, TLS: TLSImplicit, Host: "hub", Port: "6209"}},
		{"smtp://mailer@smtp.example.com", Relay{Scheme: "smtp", Protocol: SMTP, TLS: TLSStart, Host: "smtp.example.com", Port: "587", User: "mailer"}},
		{"smtp://smtp.example.com:25?tls=none", Relay{Scheme: "smtp", Protocol: SMTP, TLS: TLSNone, Host: "smtp.example.com", Port: "25"}},
		{"smtps://a@b.example@smtp.example.com", Relay{Scheme: "smtps", Protocol: SMTP, TLS: TLSImplicit, Host: "smtp.example.com", Port: "465", User: "a@b.example"}},
		{"smtps://[::1]:4465?ca=/etc/ca.pem", Relay{Scheme: "smtps", Protocol: SMTP, TLS: TLSImplicit, Host: "::1", Port: "4465", CAFile: "/etc/ca.pem"}},
	}
	for _, c := range good {
		got, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
		}
		// What String gives parses back to the same relay.
		again, err := Parse(got.String())
		if err != nil || again != got {
			t.Errorf("Parse(%q).String() = %q parses to %+v, %v", c.in, got.String(), again, err)
		}
	}
	bad := []struct{ in, why string }{
		{"", "empty"},
		{"smtp://u:secret@host", "password"},
		{"http://host", "unknown scheme"},
		{"smtp://host?tls=maybe", "tls="},
		{"qmqp://host?tls=none", "smtp:// only"},
		{"smtp://u@host?tls=none", "TLS only"},
		{"qmtp://u@host", "only smtp"},
		{"smtp://host/path", "nothing after"},
		{"smtp://host:0", "bad port"},
		{"smtp://host:99999", "bad port"},
		{"smtp://:25", "no host"},
		{"host:x", "port"},
		{"a b", "white space"},
		{"smtp://host?x=1", "unknown option"},
		{"smtp://host?ca=a&ca=b", "2 times"},
		{strings.Repeat("a", MaxURL+1), "longer"},
	}
	for _, c := range bad {
		_, err := Parse(c.in)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", c.in, err, c.why)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q): the error shows the password: %v", c.in, err)
		}
	}
}
