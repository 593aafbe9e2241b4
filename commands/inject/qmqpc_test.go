package inject

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/store/qmailqueue"
	"qbox/proto/testkit/testpeer"
)

// qmqpc runs the qmail-qmqpc personality as qmail-inject runs qmail-queue:
// the message on fd 0 (a file, or a pipe when viaPipe), the envelope on
// fd 1 (a file, or a pipe written after the message is complete).
func qmqpc(t *testing.T, env []string, msg, envelope []byte, viaPipe bool) (int, string) {
	t.Helper()
	link := testpeer.Personality(t, "qmail-qmqpc")
	if !viaPipe {
		return run(t, link, env, writeFile(t, "msg", msg), func(c *exec.Cmd) {
			c.Stdout = writeFile(t, "envelope", envelope)
		})
	}
	msgR, msgW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	envR, envW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		msgW.Write(msg)
		msgW.Close()
		envW.Write(envelope)
		envW.Close()
	}()
	code, stderr := run(t, link, env, msgR, func(c *exec.Cmd) { c.Stdout = envR })
	msgR.Close()
	envR.Close()
	return code, stderr
}

func setServers(t *testing.T, home string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(home, "control", "qmqpservers"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func envelope(sender string, rcpts ...string) []byte {
	return qmailqueue.EncodeEnvelope(proto.Envelope{Sender: sender, Recipients: rcpts})
}

// (K from Postfix's qmqp-sink: TestQmqpcToQmqpSink.)
func TestQmqpcExitCodes(t *testing.T) {
	k := startScripted(t, ns("Kok"))
	z := startScripted(t, ns("Zdisk full (#4.3.0)"))
	d := startScripted(t, ns("Dno thanks (#5.7.1)"))
	closer := startScripted(t, closeAtOnce)
	bad := startScripted(t, "3:Xno,")
	good := envelope("s@example.test", "r@example.test")
	msg := []byte("Subject: x\r\n\r\nCRLF kept, no final newline")
	cases := []struct {
		name     string
		servers  []string // nil: no control file at all
		envelope []byte
		code     int
		stderr   string
	}{
		{"K after a refused server", []string{refusedAddr(t), k.addr}, good, 0, ""},
		{"zero recipients sent as qmail does", []string{k.addr}, envelope("s@x"), 0, ""},
		{"D", []string{d.addr}, good, 31, "no thanks (#5.7.1)"},
		{"Z", []string{z.addr}, good, 71, "disk full"},
		{"refused", []string{refusedAddr(t)}, good, 73, "refused"},
		{"closed after connect", []string{closer.addr, k.addr}, good, 74, "without a reply"},
		{"malformed reply", []string{bad.addr}, good, 74, "unknown status byte"},
		{"envelope not F first", []string{k.addr}, []byte("Tr@x\x00\x00"), 91, "envelope"},
		{"envelope cut short", []string{k.addr}, []byte("Fs@x\x00Tr@x\x00"), 91, "envelope"},
		{"envelope bad item", []string{k.addr}, []byte("Fs@x\x00Xr@x\x00\x00"), 91, "envelope"},
		{"empty envelope", []string{k.addr}, nil, 91, "envelope"},
		{"no control file", nil, good, 55, "qmqpservers"},
		{"no usable server", []string{"# nothing", "host:badport"}, good, 55, "no usable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, home := baseEnv(t)
			if tc.servers != nil {
				setServers(t, home, tc.servers...)
			}
			code, stderr := qmqpc(t, env, msg, tc.envelope, false)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("stderr %q lacks %q", stderr, tc.stderr)
			}
		})
	}
	// Two cases reached the K server; never the one after a server that
	// accepted and closed, and none with a bad envelope.
	if k.conns.Load() != 2 {
		t.Errorf("K server got %d connections, want 2", k.conns.Load())
	}
	// What the K server received is the message untouched and the
	// envelope as given.
	got, sender, rcpts := k.received(t, 0)
	if !bytes.Equal(got, msg) || sender != "s@example.test" || strings.Join(rcpts, ",") != "r@example.test" {
		t.Fatalf("server got %q from %q to %q", got, sender, rcpts)
	}
}

// A connection attempt that hangs is given up after qmail's 10 seconds:
// exit 72.
func TestQmqpcConnectTimeout(t *testing.T) {
	env, home := baseEnv(t)
	setServers(t, home, timeoutAddr(t))
	start := time.Now()
	code, stderr := qmqpc(t, env, []byte("Subject: x\n\nbody\n"), envelope("s@x", "r@x"), false)
	if code != 72 {
		t.Fatalf("exit %d, want 72; stderr %q", code, stderr)
	}
	if el := time.Since(start); el < DefaultConnectTimeout {
		t.Fatalf("gave up after %v, before the connect timeout", el)
	}
}

// mini-qmail's layout: bin/qmail-queue is qbox under that name, and
// qmail-inject-style callers reach the QMQP server through it.
func TestQmailQueueNameIsQmqpc(t *testing.T) {
	sink := startScripted(t, ns("Kok")).addr
	env, home := baseEnv(t)
	setServers(t, home, sink)
	link := testpeer.Personality(t, "qmail-queue")
	code, stderr := run(t, link, env, writeFile(t, "msg", []byte("Subject: x\n\nmini-qmail\n")), func(c *exec.Cmd) {
		c.Stdout = writeFile(t, "envelope", envelope("s@example.test", "r@example.test"))
	})
	if code != 0 || stderr != "" {
		t.Fatalf("qmail-queue link: exit %d, stderr %q", code, stderr)
	}
	setServers(t, home, refusedAddr(t))
	code, _ = run(t, link, env, writeFile(t, "msg", []byte("Subject: x\n\n")), func(c *exec.Cmd) {
		c.Stdout = writeFile(t, "envelope", envelope("s@example.test", "r@example.test"))
	})
	if code != 73 {
		t.Fatalf("qmail-queue link, server refused: exit %d, want qmail-qmqpc's 73", code)
	}
}

// qmail-qmqpc speaks QMQP only (one answer for the whole message, so no
// answer can take some recipients and not others): $QBOX_RELAYS is not
// its list, and a relay URL in $QMQPSERVERS is no server (exit 55).
func TestQmqpcSpeaksQMQPOnly(t *testing.T) {
	k := startScripted(t, ns("Kok"))
	partial := testpeer.StartPartialQMTP(t, "example.test")
	env, home := baseEnv(t)
	setServers(t, home, k.addr)
	good := envelope("s@example.test", "ok@example.test", "out@elsewhere.test")
	msg := []byte("Subject: x\n\nbody\n")
	code, stderr := qmqpc(t, append(env, "QBOX_RELAYS=qmtp://"+partial.QMTP), msg, good, false)
	if code != 0 || k.conns.Load() != 1 {
		t.Fatalf("with $QBOX_RELAYS set: exit %d, stderr %q, %d QMQP connections; want 0 through the QMQP server", code, stderr, k.conns.Load())
	}
	code, stderr = qmqpc(t, append(env, "QMQPSERVERS=qmtp://"+partial.QMTP), msg, good, false)
	if code != 55 || !strings.Contains(stderr, "bad QMQP server") {
		t.Fatalf("a QMTP URL in $QMQPSERVERS: exit %d, stderr %q; want 55", code, stderr)
	}
}
