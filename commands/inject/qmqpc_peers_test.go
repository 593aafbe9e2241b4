//go:build peers

package inject

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"qbox/proto/testpeer"
)

func TestQmqpcDeliversToPostfixUntouched(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	env, home := baseEnv(t)
	setServers(t, home, "# a comment, skipped", "not an address at all", pf.QMQPAddr)
	msg := []byte("Received: (qmail 1 invoked by uid 0)\nSubject: " + token + "\n\nbody " + token + "\n\xe4 8-bit\n")
	for _, viaPipe := range []bool{false, true} {
		tok := token + map[bool]string{false: "-file", true: "-pipe"}[viaPipe]
		m := bytes.ReplaceAll(msg, []byte(token), []byte(tok))
		code, stderr := qmqpc(t, env, m, envelope("sender@"+pf.Domain, "r1@"+pf.Domain), viaPipe)
		if code != 0 {
			t.Fatalf("pipe %v: exit %d %q", viaPipe, code, stderr)
		}
		got := pf.WaitFor(t, tok, 1, 30*time.Second)[0]
		if !bytes.Equal(testpeer.Body(got), testpeer.Body(m)) {
			t.Fatalf("body changed:\n%q\nwant\n%q", testpeer.Body(got), testpeer.Body(m))
		}
		if bytes.Contains(got, []byte("Message-ID:")) {
			t.Fatal("qmail-qmqpc added a header")
		}
	}
}

// qmail-qmqpc reads $QMQPSERVERS first, as the README says and as inject
// and sendmail do, and falls back to control/qmqpservers only without it.
// Before, it read only the control file: here that names a refused port,
// and the message would never reach Postfix.
func TestQmqpcReadsQMQPSERVERS(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	tok := testpeer.Token(t)
	env, home := baseEnv(t)
	setServers(t, home, refusedAddr(t))
	env = append(env, "QMQPSERVERS="+refusedAddr(t)+", "+pf.QMQPAddr)
	msg := []byte("Subject: " + tok + "\n\nvia $QMQPSERVERS\n")
	code, stderr := qmqpc(t, env, msg, envelope("s@"+pf.Domain, "qmqpc-env@"+pf.Domain), false)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, tok, 1, 30*time.Second)[0]
	if !bytes.Equal(testpeer.Body(got), testpeer.Body(msg)) {
		t.Errorf("body %q", testpeer.Body(got))
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

// qmail-qmqpc's K from a real QMQP server, Postfix's qmqp-sink: exit 0,
// nothing on stderr.
func TestQmqpcToQmqpSink(t *testing.T) {
	sink := testpeer.QmqpSink(t)
	env, home := baseEnv(t)
	setServers(t, home, sink)
	code, stderr := qmqpc(t, env, []byte("Subject: x\r\n\r\nCRLF kept, no final newline"), envelope("s@example.test", "r@example.test"), false)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
