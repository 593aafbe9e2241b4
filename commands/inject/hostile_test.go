package inject

import (
	"strings"
	"testing"
)

// qmail-qmqpc refuses an fd-1 envelope whose addresses hold CR or LF, or
// whose recipient is empty, with qmail-queue's 91, and connects to no
// server. Before, "Troot\nx" went to the server as it was.
func TestQmqpcRefusesHostileEnvelope(t *testing.T) {
	k := startScripted(t, ns("Kok"))
	msg := []byte("Subject: x\n\nx\n")
	for _, tc := range []struct {
		name     string
		envelope string
	}{
		{"LF in a recipient", "F\x00Troot\nx\x00\x00"},
		{"CR in a recipient", "Fs@x.test\x00Troot@x.test\r\x00\x00"},
		{"LF in the sender", "Fme@x.test\nX-Injected: y\x00Troot@x.test\x00\x00"},
		{"empty recipient", "Fs@x.test\x00Tr@x.test\x00T\x00\x00"},
	} {
		for _, viaPipe := range []bool{false, true} {
			env, home := baseEnv(t)
			setServers(t, home, k.addr)
			code, stderr := qmqpc(t, env, msg, []byte(tc.envelope), viaPipe)
			if code != 91 || !strings.Contains(stderr, "envelope") {
				t.Errorf("%s (pipe %v): exit %d, stderr %q; want 91", tc.name, viaPipe, code, stderr)
			}
			if strings.ContainsAny(strings.TrimSuffix(stderr, "\n"), "\r\n\x00") {
				t.Errorf("%s: stderr holds control bytes: %q", tc.name, stderr)
			}
		}
	}
	if n := k.conns.Load(); n != 0 {
		t.Errorf("the server got %d connections, want none", n)
	}
}

// qbox inject refuses an address holding CR, LF or NUL, and the empty
// recipient, in its arguments, -f and -t headers: exit 100, nothing sent.
// Before, "root@x.test\nX: y" was sent to y@example.test.
func TestInjectRefusesHostileAddresses(t *testing.T) {
	k := startScripted(t, ns("Kok"))
	env, _ := baseEnv(t)
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		why   string
	}{
		{"LF in a recipient", "Subject: x\n\nx\n", []string{"root@x.test\nX: y"}, "CR, LF or NUL"},
		{"CR in a recipient", "Subject: x\n\nx\n", []string{"root@x.test\r"}, "CR, LF or NUL"},
		{"empty recipient", "Subject: x\n\nx\n", []string{"a@x.test", ""}, "empty recipient"},
		{"CR in -f", "Subject: x\n\nx\n", []string{"-f", "me@x.test\rX", "a@x.test"}, "CR, LF or NUL"},
		{"NUL in To with -t", "To: a\x00b@x.test\n\nx\n", []string{"-t"}, "CR, LF or NUL"},
		{"NUL in Return-Path, --raw", "Return-Path: <a\x00@x.test>\n\nx\n", []string{"--raw", "b@x.test"}, "CR, LF or NUL"},
		{"LF in the full name", "Subject: x\n\nx\n", []string{"--from", "s@x.test", "b@x.test"}, ""},
	} {
		e := env
		if tc.name == "LF in the full name" {
			e = append(append([]string{}, env...), "QMAILNAME=A\nBcc: stolen@x.test")
			tc.why = "full name"
		}
		code, stderr := inject(t, e, tc.stdin, append([]string{"-s", k.addr}, tc.args...)...)
		if code != 100 || !strings.Contains(stderr, tc.why) {
			t.Errorf("%s: exit %d, stderr %q; want 100 and %q", tc.name, code, stderr, tc.why)
		}
	}
	if n := k.conns.Load(); n != 0 {
		t.Errorf("the server got %d connections, want none", n)
	}
}
