package queue

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto/smtp"
)

// A message larger than the server's SIZE is refused by the SMTP client
// before it is sent (a D it decides itself, not the server's reply). It
// is as final as a server's D: it bounces in the first run, not deferred
// run after run.
func TestRunBouncesMessageOverServerSize(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				c.Write([]byte("220 hi\r\n"))
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(l, "EHLO"):
						c.Write([]byte("250-hi\r\n250 SIZE 10\r\n"))
					case strings.HasPrefix(l, "QUIT"):
						c.Write([]byte("221 bye\r\n"))
						return
					default:
						c.Write([]byte("250 ok\r\n"))
					}
				}
			}(c)
		}
	}()
	dir := newQueue(t)
	put(t, dir, "1", "s@x.test", "r@y.test", strings.Repeat("long line\n", 10), time.Minute)
	var outs []Outcome
	_, err = Run(context.Background(), Config{Source: &Maildir{Dir: dir}, Transport: &SMTP{Client: smtp.Client{Helo: "c.test", TLS: smtp.TLSNone}, Addrs: []string{ln.Addr().String()}},
		Lifetime: time.Hour, Bouncer: &bouncer{}, Events: collect(&outs)})
	if len(outs) != 1 || outs[0].Status != Bounced {
		t.Fatalf("outcomes %+v (err %v), want the one message bounced", outs, err)
	}
	if !strings.Contains(outs[0].Reply, "SIZE") {
		t.Errorf("reply %q does not say why", outs[0].Reply)
	}
}
