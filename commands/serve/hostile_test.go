package serve_test

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/testpeer"
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
	if n := countFiles(t, filepath.Join(dir, "tmp")); n != 0 {
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
	t.Run("Postfix qmqp-source", func(t *testing.T) {
		src := testpeer.Require(t, "qmqp-source", "postfix")
		// (qmqp-source cannot send an empty recipient: it aborts.)
		for _, to := range []string{"root@x.test\nX: y", "a\rb@x.test"} {
			out, err := exec.Command(src, "-m", "1", "-s", "1", "-f", "a@example.test", "-t", to, s.qmqp).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "can't accept addresses like that") {
				t.Fatalf("qmqp-source -t %q: %v\n%s", to, err, out)
			}
		}
		checkStored(t, dir, stored)
	})
}
