package inject

import (
	"bytes"
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

// qmail-qmqpc reads $QMQPSERVERS first, as the README says and as inject
// and sendmail do, and falls back to control/qmqpservers only without it.
// Before, it read only the control file: here that names a refused port,
// and the message would never reach the server. (The server only has to
// say K and keep what it got: an in-process one, no Postfix needed.)
func TestQmqpcReadsQMQPSERVERS(t *testing.T) {
	server := startScripted(t, ns("Kok"))
	env, home := baseEnv(t)
	setServers(t, home, refusedAddr(t))
	env = append(env, "QMQPSERVERS="+refusedAddr(t)+", "+server.addr)
	msg := []byte("Subject: qmqpc\n\nvia $QMQPSERVERS\n")
	code, stderr := qmqpc(t, env, msg, envelope("s@example.test", "qmqpc-env@example.test"), false)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got, sender, rcpts := server.received(t, 0)
	if !bytes.Equal(got, msg) || sender != "s@example.test" || strings.Join(rcpts, ",") != "qmqpc-env@example.test" {
		t.Errorf("server got %q from %q to %q", got, sender, rcpts)
	}

	// Without $QMQPSERVERS the control file decides: refused, 73.
	env, home = baseEnv(t)
	setServers(t, home, refusedAddr(t))
	if code, stderr := qmqpc(t, env, msg, envelope("s@x", "r@x"), false); code != 73 {
		t.Errorf("control file only: exit %d, stderr %q; want 73", code, stderr)
	}
	// A $QMQPSERVERS entry that is no server is a configuration error
	// (55), as it is for inject; the control file is not tried instead.
	env, home = baseEnv(t)
	k := startScripted(t, ns("Kok"))
	setServers(t, home, k.addr)
	env = append(env, "QMQPSERVERS=host:notaport")
	if code, stderr := qmqpc(t, env, msg, envelope("s@x", "r@x"), false); code != 55 || !strings.Contains(stderr, "QMQPSERVERS") {
		t.Errorf("bad $QMQPSERVERS: exit %d, stderr %q; want 55", code, stderr)
	}
	if n := k.conns.Load(); n != 0 {
		t.Errorf("the control file's server got %d connections", n)
	}
}
