package inject

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/netstring"
	"qbox/proto/testkit/testpeer"
)

func TestRawKeepsBytesDefaultPrepares(t *testing.T) {
	srv := startScripted(t, "2:Kk,")
	env, _ := baseEnv(t)
	msg := "Subject: crlf\r\nBcc: hidden@example.test\r\n\r\nline\r\nlast"
	if code, stderr := inject(t, env, msg, "--raw", "-s", srv.addr, "a@example.test"); code != 0 {
		t.Fatalf("raw: exit %d %q", code, stderr)
	}
	got, _, rcpts := srv.received(t, 0)
	if string(got) != msg {
		t.Fatalf("--raw sent %q, want %q", got, msg)
	}
	if strings.Join(rcpts, ",") != "a@example.test" {
		t.Fatalf("recipients %q", rcpts)
	}
	if code, stderr := inject(t, env, msg, "-s", srv.addr, "-t", "a@example.test"); code != 0 {
		t.Fatalf("default: exit %d %q", code, stderr)
	}
	got, sender, rcpts := srv.received(t, 1)
	if bytes.Contains(got, []byte("\r")) || bytes.Contains(got, []byte("Bcc")) || !bytes.HasSuffix(got, []byte("\n\nline\nlast\n")) {
		t.Fatalf("prepared message %q", got)
	}
	if sender != "tester@example.test" || strings.Join(rcpts, ",") != "a@example.test,hidden@example.test" {
		t.Fatalf("envelope %q %q", sender, rcpts)
	}
}

// A pipe larger than the in-memory threshold is spilled and sent whole.
func TestPipeSpillsToFile(t *testing.T) {
	srv := startScripted(t, "2:Kk,")
	env, _ := baseEnv(t)
	spillDir := t.TempDir()
	env = append(env, "TMPDIR="+spillDir) // the last TMPDIR= wins
	var msg bytes.Buffer
	msg.WriteString("Subject: big\n\n")
	for msg.Len() < 3*DefaultSpillThreshold {
		msg.WriteString("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n")
	}
	code, stderr := inject(t, env, bytes.NewReader(msg.Bytes()), "--raw", "-s", srv.addr, "a@example.test")
	if code != 0 {
		t.Fatalf("exit %d %q", code, stderr)
	}
	got, _, _ := srv.received(t, 0)
	if !bytes.Equal(got, msg.Bytes()) {
		t.Fatalf("sent %d bytes, want %d identical", len(got), msg.Len())
	}
	// The temporary file was unlinked (only this test's directory is
	// looked at: an inherited $TMPDIR holds the go tool's own files).
	if left, _ := os.ReadDir(spillDir); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestFailoverOnConnectFailure(t *testing.T) {
	sink := startScripted(t, ns("Kok")).addr
	env, _ := baseEnv(t)
	code, stderr := inject(t, env, "Subject: x\n\nbody\n", "-s", refusedAddr(t), "-s", sink, "a@example.test")
	if code != 0 {
		t.Fatalf("exit %d %q", code, stderr)
	}
	// Every server refused: temporary, each one named.
	r1, r2 := refusedAddr(t), refusedAddr(t)
	code, stderr = inject(t, env, "Subject: x\n\nbody\n", "-s", r1, "-s", r2, "a@example.test")
	if code != 111 || !strings.Contains(stderr, r1) || !strings.Contains(stderr, r2) || !strings.Contains(stderr, "refused") {
		t.Fatalf("all refused: exit %d %q", code, stderr)
	}
}

// --connect-timeout is the flag's name, as in flush-maildir; the older
// --timeout-connect still works for scripts that use it.
func TestConnectTimeoutNames(t *testing.T) {
	sink := startScripted(t, ns("Kok")).addr
	env, _ := baseEnv(t)
	for _, flag := range []string{"--connect-timeout", "--timeout-connect"} {
		code, stderr := inject(t, env, "Subject: x\n\nbody\n", flag, "5s", "-s", refusedAddr(t), "-s", sink, "a@example.test")
		if code != 0 {
			t.Errorf("%s: exit %d %q", flag, code, stderr)
		}
	}
}

// Once connected, a failure is final: the next server is not tried.
func TestAcceptAndCloseIsFinal(t *testing.T) {
	first := startScripted(t, closeAtOnce)
	second := startScripted(t, "2:Kk,")
	env, _ := baseEnv(t)
	code, stderr := inject(t, env, "Subject: x\n\nbody\n", "-s", first.addr, "-s", second.addr, "a@example.test")
	if code != 111 {
		t.Fatalf("exit %d, want 111; stderr %q", code, stderr)
	}
	if n := second.conns.Load(); n != 0 {
		t.Fatalf("second server got %d connections after the first accepted", n)
	}
	if first.conns.Load() != 1 || !strings.Contains(stderr, first.addr) {
		t.Fatalf("stderr %q does not name the server", stderr)
	}
}

func TestReplies(t *testing.T) {
	cases := []struct {
		name, reply string
		code        int
		stderr      string
	}{
		{"K", ns("Kok 123 qp 45"), 0, ""},
		{"Z", ns("Zsorry, try again later (#4.3.0)"), 111, "temporary failure: sorry, try again later (#4.3.0)"},
		{"D", ns("Dno such mailbox (#5.1.1)"), 100, "permanent failure: no such mailbox (#5.1.1)"},
		{"D with control bytes", ns("Dbad\x1b[31m\nX: y"), 100, "permanent failure: bad?[31m X: y\n"},
		{"no comma", "3:Kok", 111, "malformed reply: connection closed in the middle of the reply"},
		{"too long", "99999:K", 111, "malformed reply: reply longer than"},
		{"bad netstring", "x:Kok,", 111, "malformed reply"},
		{"leading zero", "03:Kok,", 111, "malformed reply"},
		{"wrong length", "5:Kok,", 111, "malformed reply"},
		{"empty", "0:,", 111, "empty reply"},
		{"unknown status", "3:Xok,", 111, "unknown status byte"},
		{"no reply", "", 111, "without a reply"},
	}
	env, _ := baseEnv(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScripted(t, tc.reply)
			code, stderr := inject(t, env, "Subject: x\n\nbody\n", "-s", srv.addr, "a@example.test")
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if tc.stderr != "" && !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("stderr %q lacks %q", stderr, tc.stderr)
			}
			if tc.code == 0 && stderr != "" {
				t.Fatalf("K printed %q", stderr)
			}
		})
	}
}

func ns(s string) string { return string(netstring.AppendString(nil, s)) }

func TestZeroRecipients(t *testing.T) {
	srv := startScripted(t, "2:Kk,")
	env, _ := baseEnv(t)
	// No arguments and no -t; and -t with no recipient fields.
	for _, args := range [][]string{{"-s", srv.addr}, {"-s", srv.addr, "-t"}} {
		code, stderr := inject(t, env, "Subject: nobody\n\nbody\n", args...)
		if code != 100 || !strings.Contains(stderr, "no recipients") {
			t.Fatalf("%v: exit %d %q", args, code, stderr)
		}
	}
	if n := srv.conns.Load(); n != 0 {
		t.Fatalf("server contacted %d times for a message to nobody", n)
	}
}

func TestServerConfiguration(t *testing.T) {
	srv := startScripted(t, "2:Kk,")
	env, home := baseEnv(t)
	msg := "Subject: x\n\nbody\n"
	// None anywhere: a configuration error, permanent.
	code, stderr := inject(t, env, msg, "a@example.test")
	if code != 100 || !strings.Contains(stderr, "no QMQP server configured") {
		t.Fatalf("no servers: exit %d %q", code, stderr)
	}
	// The control file.
	ctl := filepath.Join(home, "control", "qmqpservers")
	os.WriteFile(ctl, []byte("# cluster\n\n"+srv.addr+"\n"), 0o644)
	if code, stderr := inject(t, env, msg, "a@example.test"); code != 0 {
		t.Fatalf("control file: exit %d %q", code, stderr)
	}
	// $QMQPSERVERS wins over the control file.
	os.WriteFile(ctl, []byte(refusedAddr(t)+"\n"), 0o644)
	if code, stderr := inject(t, append(env, "QMQPSERVERS="+refusedAddr(t)+", "+srv.addr), msg, "a@example.test"); code != 0 {
		t.Fatalf("QMQPSERVERS: exit %d %q", code, stderr)
	}
	// --server wins over both.
	if code, stderr := inject(t, append(env, "QMQPSERVERS="+refusedAddr(t)), msg, "-s", srv.addr, "a@example.test"); code != 0 {
		t.Fatalf("--server: exit %d %q", code, stderr)
	}
	if n := srv.conns.Load(); n != 3 {
		t.Fatalf("server got %d connections, want 3", n)
	}
	// A bad server is a usage error.
	if code, _ := inject(t, env, msg, "-s", "host:notaport", "a@example.test"); code != 100 {
		t.Fatalf("bad server: exit %d", code)
	}
}

func TestHelpExplains(t *testing.T) {
	env, _ := baseEnv(t)
	cmd := testpeer.Binary(t)
	out, err := execOutput(cmd, env, "inject", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Failover", "only when the connection", "deliver it twice", "QMQPSERVERS", "qmqpservers", "100", "111", "--raw", "--connect-timeout"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestInjectToPostfixQmqpd (inject_peers_test.go) against the in-process
// server: a long 8-bit body goes byte for byte, the header completed as
// qmail-inject would, -f and -t making the envelope.
func TestInjectCompletesHeaderKeepsBody(t *testing.T) {
	srv := startScripted(t, "2:Kk,")
	var body bytes.Buffer
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&body, "line %d: 8-bit \xe4\xf6\xfc\xdf and a tab\there, trailing space \n", i)
	}
	body.WriteString(strings.Repeat("x", 990) + "\n")
	msg := "Subject: complete me\nTo: Someone <someone@example.test>\n\n" + body.String()
	env, _ := baseEnv(t)
	if code, stderr := inject(t, env, msg, "-s", srv.addr, "-f", "sender@example.test", "-t"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got, sender, rcpts := srv.received(t, 0)
	head, gotBody, ok := bytes.Cut(got, []byte("\n\n"))
	if !ok || !bytes.Equal(gotBody, body.Bytes()) {
		t.Fatalf("sent body differs from the one given (%d vs %d bytes)", len(gotBody), body.Len())
	}
	if sender != "sender@example.test" || strings.Join(rcpts, ",") != "someone@example.test" {
		t.Fatalf("envelope %q %q", sender, rcpts)
	}
	for _, want := range []string{"\nDate: ", "\nMessage-ID: <", "\nFrom: tester@example.test", "Subject: complete me"} {
		if !bytes.Contains(append([]byte("\n"), head...), []byte(want)) {
			t.Errorf("header lacks %q:\n%s", want, head)
		}
	}
}
