package qmailqueue

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
		// fd 6 text is shown and stored on one line: CR, LF become spaces.
		{"82", proto.Permanent, "bad X: y", "Dbad\nX: y"},
		{"82", proto.Temporary, "try later  X-Injected: yes", "Ztry later\r\nX-Injected: yes"},
	} {
		t.Run("exit"+c.code, func(t *testing.T) {
			p, out := recorderProgram(t, "CODE="+c.code, "CUSTOM="+c.custom)
			replies := send(t, p, msg, env)
			if len(replies) != 3 {
				t.Fatalf("%d replies, want 3", len(replies))
			}
			for _, r := range replies {
				if strings.ContainsAny(r.Text, "\r\n\x00") {
					t.Fatalf("reply text %q holds CR, LF or NUL", r.Text)
				}
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

// An address the program cannot be handed unchanged (NUL ends an item of
// the envelope on fd 1) is refused with D, never rewritten; the other
// recipients are handed over as usual. A bad sender refuses them all and
// the program queues nothing.
func TestProgramRefusesUnwritableAddresses(t *testing.T) {
	p, out := recorderProgram(t, "CODE=0")
	env := proto.Envelope{Sender: "a@x", Recipients: []string{"evil\x00Tother@x", "ok@x", "root@x\nX: y", "a\rb@c", ""}}
	replies := send(t, p, []byte("x\n"), env)
	for i, want := range []proto.Status{proto.Permanent, proto.OK, proto.Permanent, proto.Permanent, proto.Permanent} {
		if replies[i].Status != want {
			t.Fatalf("reply %d (%q) = %q, want %c", i, env.Recipients[i], replies[i].String(), want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(out, "env")); string(got) != "Fa@x\x00Tok@x\x00\x00" {
		t.Fatalf("fd 1 got %q", got)
	}
	os.Remove(filepath.Join(out, "env"))
	for _, sender := range []string{"a\x00Tx@y", "a\nb@x", "a\rb@x"} {
		r := send(t, p, []byte("x\n"), proto.Envelope{Sender: sender, Recipients: []string{"ok@x", "ok2@x"}})
		if len(r) != 2 || r[0].Status != proto.Permanent || r[1].Status != proto.Permanent {
			t.Fatalf("sender %q: replies %v, want D D", sender, r)
		}
		if _, err := os.Stat(filepath.Join(out, "env")); err == nil {
			t.Fatalf("sender %q: the program got an envelope", sender)
		}
	}
}

// leftChild is a queue program that reads everything, leaves a child
// running that holds its stdout, stderr and fd 6, and exits 0.
const leftChild = `#!/bin/sh
cat > /dev/null || exit 54
cat <&1 > /dev/null || exit 54
sleep 1000 &
echo $! > "$OUT/pid"
exit 0
`

// The program's exit status decides, at its exit: a child it left running
// that holds stdout and stderr open neither turns its K into Z nor holds
// the delivery until the timeout. (Before, Wait waited for stderr's EOF,
// then the timeout killed the program's group and answered Z.)
func TestProgramLeftChildHoldsPipes(t *testing.T) {
	p, out := recorderProgram(t)
	if err := os.WriteFile(p.Path, []byte(leftChild), 0755); err != nil {
		t.Fatal(err)
	}
	p.Timeout = 2 * time.Minute
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(out, "pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	got := make(chan []proto.Reply, 1)
	go func() { got <- send(t, p, []byte("x\n"), proto.Envelope{Sender: "a@x", Recipients: []string{"b@x"}}) }()
	select {
	case r := <-got:
		if r[0].Status != proto.OK {
			t.Fatalf("reply %q, want K", r[0].String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the delivery waits for the program's child, not its exit")
	}
}

// A queue program that stalls while the message arrives (a disk hang) is
// given up at --queue-timeout. If it then wakes up, it must not get the
// envelope: it would queue the part of the message it read, exit 0, and
// the client, told Z, would send the whole message again.
func TestProgramStalledMidMessageQueuesNothing(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	queued := filepath.Join(dir, "queued")
	script := filepath.Join(dir, "qq")
	// It reads nothing until the gate exists, then queues what it gets.
	body := "#!/bin/sh\nwhile [ ! -e " + gate + " ]; do sleep 0.01; done\ncat > " + queued + "\ncat <&1 > " + queued + ".env\nexit 0\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &Program{Path: script, Timeout: 200 * time.Millisecond}
	d, err := p.Begin(context.Background(), proto.Peer{RemoteIP: "127.0.0.1"}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16) // 1 MiB: more than a pipe holds
	for off := 0; off < len(msg); off += 32 << 10 {
		d.Write(msg[off : off+32<<10]) // the writes past the pipe's buffer time out
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil { // the program wakes up
		t.Fatal(err)
	}
	r := d.Commit(context.Background(), proto.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}})
	if r[0].Status == proto.OK {
		t.Fatalf("K for a message the program did not read whole: %v", r)
	}
	if env, err := os.ReadFile(queued + ".env"); err == nil && len(env) > 0 {
		t.Fatalf("the program got the envelope (%q) after a truncated message: it queued part of it, and the client will send it again", env)
	}
}
