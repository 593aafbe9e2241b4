package qmailremote

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
)

// earlySMTP answers the whole transaction (MAIL, each RCPT, DATA, the
// message) with the EHLO reply, before it has read any of it.
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
				io.Copy(io.Discard, br)
			}()
		}
	}()
	return ln.Addr().String()
}

// Issue 20 over SMTP: replies that came before what they answer are no
// delivery: qmail-remote reports a Z for the message, no 'r' and no K,
// so qmail keeps the recipients queued.
func TestSMTPEarlyRepliesAreZ(t *testing.T) {
	r := newRun(t)
	r.control(t, "smtproutes", ":127.0.0.1:"+portOf(earlySMTP(t, 2))+"\n")
	res := r.remote(t, testMessage("x"), "anywhere.test", "sender@example.test", "a@anywhere.test", "b@anywhere.test")
	if res.letters() != "Z" || !strings.Contains(res.message, "protocol violation") {
		t.Fatalf("reports %q, want one Z naming the violation, no r and no K", res.raw)
	}
	if v := verdict(res.raw); !strings.HasPrefix(v, "Z") {
		t.Errorf("qmail-rspawn's verdict %q", v)
	}
}
