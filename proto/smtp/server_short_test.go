package smtp_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto/smtp"
	"qbox/proto/testkit/servetest"
)

// MAIL and RCPT are answered as shortly as qmail-smtpd answers them, not
// with go-smtp's sentence repeating the address: on a slow line a
// 100-recipient transaction's replies were most of its bytes down.
func TestServeShortMailRcptReplies(t *testing.T) {
	addr, _ := servetest.Start(t, &smtp.Server{Backend: okBackend{}, Hostname: "mx.test"})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	in := bufio.NewReader(c)
	expect := func(send, want string) {
		t.Helper()
		if send != "" {
			if _, err := c.Write([]byte(send + "\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		line, err := in.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, want) {
			t.Fatalf("after %q: %q, %v; want %q", send, line, err, want)
		}
	}
	expect("", "220 ")
	expect("HELO client.test", "250 ")
	expect("MAIL FROM:<a@example.test>", "250 2.1.0 ok\r\n")
	expect("RCPT TO:<b@example.test>", "250 2.1.5 ok\r\n")
	expect("RCPT TO:<c@example.test>", "250 2.1.5 ok\r\n")
	expect("DATA", "354 ")
	expect("Subject: hi\r\n\r\nbody\r\n.", "250 2.0.0 ok\r\n")
	expect("QUIT", "221 ")
}
