package serve_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/commands/serve"
	"qbox/proto"
	"qbox/proto/testkit/testpeer"
)

func writeRcptHosts(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRcptHostsMatching(t *testing.T) {
	r, err := serve.LoadRcptHosts(writeRcptHosts(t, "# our domains", "Example.ORG", "", "  .example.net  "))
	if err != nil {
		t.Fatal(err)
	}
	for rcpt, want := range map[string]bool{
		"a@example.org":             true,
		"a@EXAMPLE.org":             true,
		"a@sub.example.org":         false, // exact line: that domain only
		"a@example.net":             false, // dot line: only below it
		"a@mx.example.net":          true,
		"a@deep.mx.example.net":     true,
		"a@example.com":             false,
		"a@evil-example.org":        false,
		"a@":                        false,
		"postmaster":                true, // no @: local, as in qmail
		"\"a@b\"@example.com":       false,
		"x@example.net@example.org": true, // the last @ counts
	} {
		if got := r.Allows(rcpt); got != want {
			t.Errorf("Allows(%q) = %v, want %v", rcpt, got, want)
		}
	}
	if _, err := serve.LoadRcptHosts(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing rcpthosts file loaded")
	}
}

// serve as a public QMTP MX: QMTP open to everyone, QMQP on loopback only,
// recipients limited to rcpthosts unless the client may relay.
// sendToThree sends a QMTP package to one recipient in example.org, one
// outside and one in mx.example.net, and returns the three replies.
func sendToThree(t *testing.T, addr string) []proto.Reply {
	t.Helper()
	pkg := qmtpPackage([]byte("Subject: to three\n\nhi\n"), false, "a@elsewhere.test",
		"in@example.org", "out@example.com", "in@mx.example.net")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(pkg)
	replies, err := readReplies(c, 3, 20*time.Second)
	if err != nil {
		t.Fatalf("replies %s: %v", fmtReplies(replies), err)
	}
	return replies
}

func TestQMTPRcptHosts(t *testing.T) {
	hosts := writeRcptHosts(t, "example.org", ".example.net")
	send := sendToThree

	t.Run("not a relay client", func(t *testing.T) {
		dir := t.TempDir()
		s := startServe(t, "--maildir", dir, "--allow-qmtp", "0.0.0.0/0", "--allow-qmtp", "::/0", "--rcpthosts", hosts)
		r := send(t, s.qmtp)
		if r[0].Status != proto.OK || r[1].Status != proto.Permanent || !strings.Contains(r[1].Text, "rcpthosts") || r[2].Status != proto.OK {
			t.Fatalf("replies %s, want K, D (rcpthosts), K", fmtReplies(r))
		}
		var got []string
		for _, f := range readMaildir(t, dir) {
			got = append(got, f.recipient)
		}
		if strings.Join(got, " ") != "in@example.org in@mx.example.net" && strings.Join(got, " ") != "in@mx.example.net in@example.org" {
			t.Fatalf("stored for %q", got)
		}
		// QMQP clients are trusted: no rcpthosts check there.
		mustK(t, s.qmqp, proto.Envelope{Sender: "a@b", Recipients: []string{"out@example.com"}}, []byte("Subject: qmqp\n\n"))
	})

	t.Run("relay client", func(t *testing.T) {
		dir := t.TempDir()
		s := startServe(t, "--maildir", dir, "--allow-qmtp", "0.0.0.0/0", "--rcpthosts", hosts, "--relay", "127.0.0.1")
		for i, r := range send(t, s.qmtp) {
			if r.Status != proto.OK {
				t.Fatalf("recipient %d: %s, want K for a relay client", i, r.String())
			}
		}
		if n := len(readMaildir(t, dir)); n != 3 {
			t.Fatalf("%d files, want 3", n)
		}
	})
}

// QMTP's access list is its own: QMTP only from 127.0.0.2 refuses
// 127.0.0.1, while QMQP keeps the loopback default.
func TestAllowQMTPSeparate(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir, "--allow-qmtp", "127.0.0.2")
	c, err := net.Dial("tcp", s.qmtp)
	if err != nil {
		t.Fatal(err)
	}
	replies, err := readReplies(c, 1, 10*time.Second)
	c.Close()
	if len(replies) != 1 || replies[0].Status != proto.Permanent || !strings.Contains(replies[0].Text, "not authorized") {
		t.Fatalf("QMTP from 127.0.0.1: %s %v, want D not authorized", fmtReplies(replies), err)
	}
	mustK(t, s.qmqp, proto.Envelope{Sender: "a@b", Recipients: []string{"c@d"}}, []byte("Subject: qmqp\n\n"))
}

func TestRcptHostsUsage(t *testing.T) {
	bin := testpeer.Binary(t)
	for _, args := range [][]string{
		{"--relay", "10.0.0.0/8"},
		{"--rcpthosts", filepath.Join(t.TempDir(), "missing")},
		{"--allow-qmtp", "not-a-network"},
	} {
		cmd := exec.Command(bin, append([]string{"serve", "--maildir", t.TempDir(), "--qmqp", "", "--qmtp", "127.0.0.1:0"}, args...)...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 100 {
			t.Errorf("serve %v: %v, want exit 100\n%s", args, err, out)
		}
	}
	// Open to the world without rcpthosts: it starts, and says what that means.
	s := startServe(t, "--maildir", t.TempDir(), "--allow-qmtp", "0.0.0.0/0")
	if !waitLog(t, s, "anyone can relay") {
		t.Error("no warning about an open relay")
	}
}
