//go:build peers

package inject

import (
	"bytes"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
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
