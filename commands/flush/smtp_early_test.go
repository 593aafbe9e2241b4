package flush

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// earlySMTP is a server that answers the whole transaction (MAIL, each
// RCPT, DATA, the message) with the EHLO reply, before it has read any of
// it, then reads and discards what comes.
func earlySMTP(t *testing.T, rcpts int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("220 early ESMTP\r\n"))
				br := bufio.NewReader(c)
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				c.Write([]byte("250-early\r\n250 PIPELINING\r\n250 2.1.0 ok\r\n" +
					strings.Repeat("250 2.1.5 ok\r\n", rcpts) + "354 go on\r\n250 2.0.0 queued early\r\n"))
				br.WriteTo(discard{})
			}()
		}
	}()
	return ln.Addr().String()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Issue 20 over SMTP: a server whose replies all came before the message
// did (here: with the EHLO reply) delivers nothing: flush-maildir --smtp
// keeps the file, says why, and exits 111.
func TestFlushSMTPEarlyRepliesKeepFile(t *testing.T) {
	src := newMaildir(t)
	enqueue(t, src, "1700000000.a.host", "s@example.test", "ppp-a@remote.test", []byte("Subject: x\n\nx\n"), 0)
	addr := earlySMTP(t, 1)
	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--smtp", addr, "--helo", testHelo, src, "ppp-")
	if code != 111 {
		t.Fatalf("exit %d, want 111\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(src, "new", "1700000000.a.host")); err != nil {
		t.Fatalf("the message answered before it was sent is gone: %v", err)
	}
	if !strings.Contains(stdout+stderr, "protocol violation") || !strings.Contains(stdout, "deferred new/1700000000.a.host") {
		t.Errorf("output does not name the violation, or claims success:\n%s\n%s", stdout, stderr)
	}
}
