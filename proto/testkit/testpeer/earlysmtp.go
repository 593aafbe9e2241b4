package testpeer

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
)

// EarlySMTPServer answers a whole SMTP transaction for rcpts recipients
// (MAIL, each RCPT, DATA and the message) together with its EHLO reply,
// before it has read any of it, then reads and discards what comes: every
// reply a client takes from it arrived before what it answers (issue 20).
// It returns the address.
func EarlySMTPServer(t testing.TB, rcpts int) string {
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
