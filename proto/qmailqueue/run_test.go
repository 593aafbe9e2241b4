package qmailqueue

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

// recorder is a qmail-queue stand-in: it saves fd 0 and fd 1 into $OUT
// and exits with $CODE (or exits at once without reading, with $EARLY).
const recorder = `#!/bin/sh
[ -n "$EARLY" ] && exit "$EARLY"
cat > "$OUT/msg" || exit 54
cat <&1 > "$OUT/env" || exit 54
echo "$TCPREMOTEIP" > "$OUT/ip"
[ -n "$HANG" ] && sleep "$HANG"
echo "stderr text from the program" >&2
[ -n "$CUSTOM" ] && printf '%s' "$CUSTOM" >&6
exit "$CODE"
`

func recorderProgram(t *testing.T, env ...string) (*Program, string) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "qq")
	if err := os.WriteFile(script, []byte(recorder), 0755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0700)
	return &Program{
		Path:     script,
		Env:      append([]string{"OUT=" + out}, env...),
		Hostname: "mx.example.test",
		Now:      func() time.Time { return time.Date(2024, 3, 5, 6, 7, 8, 0, time.UTC) },
	}, out
}

var testPeer = proto.Peer{Protocol: "QMTP", RemoteIP: "127.0.0.1", RemoteHost: "client.example.test"}

func send(t *testing.T, p *Program, msg []byte, env proto.Envelope) []proto.Reply {
	t.Helper()
	d, err := p.Begin(context.Background(), testPeer, int64(len(msg)))
	if err != nil {
		t.Fatal(err)
	}
	for rest := msg; len(rest) > 0; {
		n := min(len(rest), 10000)
		if w, err := d.Write(rest[:n]); w != n || err != nil {
			t.Fatalf("Write = %d, %v", w, err)
		}
		rest = rest[n:]
	}
	return d.Commit(context.Background(), env)
}

func TestProgramExitCodes(t *testing.T) {
	msg := []byte("Subject: test\n\nbody \x00\xff\nlast line")
	env := proto.Envelope{Sender: "alice@example.test", Recipients: []string{"bob@example.test", "bob@example.test", "carol@x"}}
	for _, c := range []struct {
		code   string
		status proto.Status
		text   string
		custom string
	}{
		{"0", proto.OK, "ok ", ""},
		{"31", proto.Permanent, "mail server permanently rejected message (#5.3.0)", ""},
		{"71", proto.Temporary, "mail server temporarily rejected message (#4.3.0)", ""},
		{"11", proto.Permanent, "envelope address too long for qq (#5.1.3)", ""},
		{"99", proto.Temporary, "qq temporary problem (#4.3.0)", ""},
		{"82", proto.Permanent, "custom rejection (#5.7.1)", "Dcustom rejection (#5.7.1)"}, // notqmail's fd 6
		{"82", proto.Temporary, "qq temporary problem (#4.3.0)", "Kno K allowed here"},
	} {
		t.Run("exit"+c.code, func(t *testing.T) {
			p, out := recorderProgram(t, "CODE="+c.code, "CUSTOM="+c.custom)
			replies := send(t, p, msg, env)
			if len(replies) != 3 {
				t.Fatalf("%d replies, want 3", len(replies))
			}
			for _, r := range replies {
				if r.Status != c.status || !strings.HasPrefix(r.Text, c.text) {
					t.Fatalf("reply %q, want %c%s", r.String(), c.status, c.text)
				}
			}
			gotMsg, _ := os.ReadFile(filepath.Join(out, "msg"))
			wantMsg := "Received: from client.example.test (127.0.0.1) by mx.example.test with QMTP; 5 Mar 2024 06:07:08 -0000\n" + string(msg)
			if string(gotMsg) != wantMsg {
				t.Errorf("fd 0 got %q, want %q", gotMsg, wantMsg)
			}
			gotEnv, _ := os.ReadFile(filepath.Join(out, "env"))
			wantEnv := "Falice@example.test\x00Tbob@example.test\x00Tbob@example.test\x00Tcarol@x\x00\x00"
			if string(gotEnv) != wantEnv {
				t.Errorf("fd 1 got %q, want %q", gotEnv, wantEnv)
			}
			if ip, _ := os.ReadFile(filepath.Join(out, "ip")); string(ip) != "127.0.0.1\n" {
				t.Errorf("TCPREMOTEIP in the program's environment = %q", ip)
			}
		})
	}
}

func TestProgramLargeMessageStreams(t *testing.T) {
	p, out := recorderProgram(t, "CODE=0")
	msg := make([]byte, 8<<20+3)
	rand.Read(msg)
	replies := send(t, p, msg, proto.Envelope{Sender: "", Recipients: []string{"a@b"}})
	if replies[0].Status != proto.OK {
		t.Fatalf("reply %q", replies[0].String())
	}
	got, _ := os.ReadFile(filepath.Join(out, "msg"))
	_, body, _ := bytes.Cut(got, []byte("-0000\n"))
	if !bytes.Equal(body, msg) {
		t.Fatalf("program got %d message bytes, want %d identical", len(body), len(msg))
	}
	if env, _ := os.ReadFile(filepath.Join(out, "env")); string(env) != "F\x00Ta@b\x00\x00" {
		t.Errorf("envelope %q", env)
	}
}

func TestProgramAbortQueuesNothing(t *testing.T) {
	p, out := recorderProgram(t, "CODE=0")
	d, err := p.Begin(context.Background(), testPeer, 100)
	if err != nil {
		t.Fatal(err)
	}
	d.Write([]byte("half a message"))
	d.Abort()
	d.Abort()
	if _, err := os.Stat(filepath.Join(out, "env")); err == nil {
		t.Fatal("the program got to read an envelope after Abort")
	}
}

func TestProgramZeroRecipientsRunsNothing(t *testing.T) {
	p, out := recorderProgram(t, "CODE=0")
	if r := send(t, p, []byte("x\n"), proto.Envelope{Sender: "a@b"}); len(r) != 0 {
		t.Fatalf("replies %v", r)
	}
	if _, err := os.Stat(filepath.Join(out, "env")); err == nil {
		t.Fatal("the program was given an envelope without recipients")
	}
}

func TestProgramExitsWithoutReading(t *testing.T) {
	// Says 0 but never read the message: must not be K.
	p, _ := recorderProgram(t, "EARLY=0")
	r := send(t, p, bytes.Repeat([]byte("x"), 1<<20), proto.Envelope{Recipients: []string{"a@b"}})
	if r[0].Status != proto.Temporary {
		t.Fatalf("reply %q, want Z", r[0].String())
	}
}

func TestProgramHangs(t *testing.T) {
	p, _ := recorderProgram(t, "CODE=0", "HANG=60")
	p.Timeout = 300 * time.Millisecond
	start := time.Now()
	r := send(t, p, []byte("x\n"), proto.Envelope{Recipients: []string{"a@b"}})
	if r[0].Status != proto.Temporary || !strings.Contains(r[0].Text, "timeout") {
		t.Fatalf("reply %q, want Z timeout", r[0].String())
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("a hung program held the delivery for %v", time.Since(start))
	}
}

func TestProgramMissing(t *testing.T) {
	p := &Program{Path: filepath.Join(t.TempDir(), "no-such-program")}
	if _, err := p.Begin(context.Background(), testPeer, 1); err == nil {
		t.Fatal("Begin with a missing program succeeded")
	}
}
