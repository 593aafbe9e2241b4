package serve_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/testkit/counting"
)

// hostileAddresses are envelope addresses that must never reach a stored
// header line: each is refused where it enters, never rewritten.
var hostileAddresses = map[string]string{
	"LF header injection": "root@x\nX: y",
	"CR":                  "a\rb@c",
	"NUL":                 "a\x00b",
	"CR LF":               "a@b\r\nBcc: everyone@x",
}

// qmqpRaw sends one QMQP package built by hand and reads the reply.
func qmqpRaw(t *testing.T, addr, msg, sender string, rcpts ...string) proto.Reply {
	t.Helper()
	var items []byte
	items = netstring.AppendString(items, msg)
	items = netstring.AppendString(items, sender)
	for _, r := range rcpts {
		items = netstring.AppendString(items, r)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(netstring.Append(nil, items)); err != nil {
		t.Fatal(err)
	}
	rs, err := readReplies(c, 1, 30*time.Second)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return rs[0]
}

// qmtpRaw sends QMTP packages and reads n replies.
func qmtpRaw(t *testing.T, addr string, n int, pkgs ...[]byte) []proto.Reply {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range pkgs {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := readReplies(c, n, 30*time.Second)
	if err != nil {
		t.Fatalf("replies %s: %v", fmtReplies(rs), err)
	}
	return rs
}

// checkStored fails unless new/ holds exactly want files, each in the
// store's three-header layout with a clean envelope, and tmp/ is empty.
func checkStored(t *testing.T, dir string, want int) {
	t.Helper()
	files := readMaildir(t, dir) // fails on a file not in the store's layout
	if len(files) != want {
		t.Fatalf("%d files in new/, want %d", len(files), want)
	}
	for _, f := range files {
		if strings.ContainsAny(f.sender+f.recipient, "\r\n\x00_") || f.recipient == "" {
			t.Fatalf("%s: stored envelope %q -> %q", f.name, f.sender, f.recipient)
		}
	}
	if n := counting.Files(t, filepath.Join(dir, "tmp")); n != 0 {
		t.Fatalf("%d files left in tmp/", n)
	}
}

// An address with CR, LF or NUL, and the empty recipient, get D over QMQP
// and QMTP and nothing of them is stored. (Before, LF became '_', which
// changes where the mail goes, and the empty recipient was stored as
// "Delivered-To: " after K, then never delivered nor bounced.)
func TestHostileEnvelopeRefused(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir)
	msg := "Subject: hostile\n\nbody\n"
	stored := 0
	for name, bad := range hostileAddresses {
		t.Run("QMQP recipient "+name, func(t *testing.T) {
			if r := qmqpRaw(t, s.qmqp, msg, "a@example.test", "ok@example.test", bad); r.Status != proto.Permanent {
				t.Fatalf("reply %q, want D", r.String())
			}
			checkStored(t, dir, stored)
		})
		t.Run("QMQP sender "+name, func(t *testing.T) {
			if r := qmqpRaw(t, s.qmqp, msg, bad, "ok@example.test"); r.Status != proto.Permanent {
				t.Fatalf("reply %q, want D", r.String())
			}
			checkStored(t, dir, stored)
		})
		t.Run("QMTP recipient "+name, func(t *testing.T) {
			// The bad recipient gets D, the good one is stored as usual.
			rs := qmtpRaw(t, s.qmtp, 2, qmtpPackage([]byte(msg), false, "a@example.test", bad, "ok@example.test"))
			if rs[0].Status != proto.Permanent || rs[1].Status != proto.OK {
				t.Fatalf("replies %s, want D then K", fmtReplies(rs))
			}
			stored++
			checkStored(t, dir, stored)
		})
		t.Run("QMTP sender "+name, func(t *testing.T) {
			rs := qmtpRaw(t, s.qmtp, 2, qmtpPackage([]byte(msg), true, bad, "ok@example.test", "ok2@example.test"))
			if rs[0].Status != proto.Permanent || rs[1].Status != proto.Permanent {
				t.Fatalf("replies %s, want D D", fmtReplies(rs))
			}
			checkStored(t, dir, stored)
		})
	}
	t.Run("QMQP empty recipient", func(t *testing.T) {
		for _, rcpts := range [][]string{{""}, {"ok@example.test", ""}} {
			if r := qmqpRaw(t, s.qmqp, msg, "a@example.test", rcpts...); r.Status != proto.Permanent {
				t.Fatalf("recipients %q: reply %q, want D", rcpts, r.String())
			}
		}
		checkStored(t, dir, stored)
	})
	t.Run("QMTP empty recipient", func(t *testing.T) {
		rs := qmtpRaw(t, s.qmtp, 3,
			qmtpPackage([]byte(msg), false, "a@example.test", ""),
			qmtpPackage([]byte(msg), false, "", "", "ok@example.test"))
		if rs[0].Status != proto.Permanent || rs[1].Status != proto.Permanent || rs[2].Status != proto.OK {
			t.Fatalf("replies %s, want D, D, K", fmtReplies(rs))
		}
		stored++
		checkStored(t, dir, stored)
	})
}

// --queue-timeout bounds the hand-off and the queue program's exit status
// decides: a program that leaves a child holding its stdout and stderr
// and exits 0 gets K at its exit; one still running at the timeout gets Z
// (and its process group is killed). Its fd 6 text reaches the client
// without CR or LF.
func TestQueueProgramExitDecides(t *testing.T) {
	work := t.TempDir()
	script := filepath.Join(work, "qq")
	os.WriteFile(script, []byte(`#!/bin/sh
cat > /dev/null || exit 54
cat <&1 > /dev/null || exit 54
if [ -f "$1/stall" ]; then sleep 1000; exit 0; fi
if [ -f "$1/custom" ]; then printf 'Dbad\nX: y' >&6; exit 82; fi
sleep 1000 &
echo $! >> "$1/pids"
echo "a line on stderr" >&2
exit 0
`), 0755)
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(work, "pids"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	s := startServe(t, "--queue-program", script, "--queue-timeout", "2s", "--", work)
	env := proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test"}}
	msg := []byte("Subject: left a child\n\nbody\n")
	// The child holds stderr well past the 2s timeout: still K.
	for range 2 {
		mustK(t, s.qmqp, env, msg)
		rs := qmtpRaw(t, s.qmtp, 1, qmtpPackage(msg, false, env.Sender, env.Recipients...))
		if rs[0].Status != proto.OK {
			t.Fatalf("QMTP reply %s, want K", fmtReplies(rs))
		}
	}
	// A custom reply on fd 6 (exit 82) reaches the client on one line.
	os.WriteFile(filepath.Join(work, "custom"), nil, 0600)
	if r, err := sendQMQP(t, s.qmqp, env, msg); err != nil || r.String() != "Dbad X: y" {
		t.Fatalf("fd 6 reply %q %v, want %q", r.String(), err, "Dbad X: y")
	}
	rs := qmtpRaw(t, s.qmtp, 1, qmtpPackage(msg, false, env.Sender, env.Recipients...))
	if rs[0].String() != "Dbad X: y" {
		t.Fatalf("fd 6 QMTP reply %s, want %q", fmtReplies(rs), "Dbad X: y")
	}
	os.Remove(filepath.Join(work, "custom"))
	os.WriteFile(filepath.Join(work, "stall"), nil, 0600)
	r, err := sendQMQP(t, s.qmqp, env, msg)
	if err != nil || r.Status != proto.Temporary || !strings.Contains(r.Text, "timeout") {
		t.Fatalf("stalled program: reply %q %v, want Z qq timeout", r.String(), err)
	}
}
