package smtp

// PIPELINING across messages (RFC 2920): the next message's MAIL, RCPTs
// and DATA follow a message's final "." in the same batch, before the "."
// reply is read.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
)

// dotServer is a pipelining server whose handling of the end of data is
// the test's: afterDot runs once a message's "." is read, with that
// message's number (from 1), and says whether the session goes on.
type dotServer struct {
	afterDot func(p *peer, n int, record func(string)) bool

	mu       sync.Mutex
	commands []string
}

func (s *dotServer) record(l string) {
	s.mu.Lock()
	s.commands = append(s.commands, l)
	s.mu.Unlock()
}

func (s *dotServer) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.commands, "|")
}

func (s *dotServer) handle(p *peer) {
	p.send("220 hi\r\n")
	n := 0
	for {
		l, err := p.line()
		if err != nil {
			return
		}
		s.record(l)
		switch strings.ToUpper(strings.SplitN(l, " ", 2)[0]) {
		case "EHLO":
			p.send("250-hi\r\n250 PIPELINING\r\n")
		case "DATA":
			p.send("354 go on\r\n")
			for {
				l, err := p.line()
				if err != nil {
					return
				}
				if l == "." {
					break
				}
			}
			s.record(".")
			n++
			if !s.afterDot(p, n, s.record) {
				return
			}
		case "QUIT":
			p.send("221 bye\r\n")
			return
		default:
			p.send("250 ok\r\n")
		}
	}
}

// A server that answers a message's "." only once it has read the next
// MAIL: only a client that writes the next transaction before waiting for
// the "." reply gets through (one that waits gives up at its data
// timeout). No RSET comes between transactions that ended with a "."
// reply, and every recipient gets the reply to its own message.
func TestNextMailBeforeDotReply(t *testing.T) {
	const count = 3
	srv := &dotServer{}
	srv.afterDot = func(p *peer, n int, record func(string)) bool {
		if n < count {
			l, err := p.line() // hold the "." reply until the next MAIL
			if err != nil {
				return false
			}
			record(l)
			if !strings.HasPrefix(l, "MAIL FROM:") {
				p.send("503 5.5.1 MAIL expected\r\n")
				return false
			}
			return p.send(fmt.Sprintf("250 queued %d\r\n250 ok\r\n", n)) == nil
		}
		return p.send(fmt.Sprintf("250 queued %d\r\n", n)) == nil
	}
	addr := startServer(t, srv.handle)
	var msgs []proto.Message
	for i := 0; i < count; i++ {
		msgs = append(msgs, bytesMessage("s@example.test", []byte(fmt.Sprintf("m%d\n", i)),
			fmt.Sprintf("a%d@example.test", i), fmt.Sprintf("b%d@example.test", i)))
	}
	results, err := deliver(t, &Client{DataTimeout: 10 * time.Second}, addr, msgs)
	if err != nil {
		t.Fatalf("err %v, results %+v", err, results)
	}
	if got := statuses(results); got != "KKKKKK" {
		t.Fatalf("statuses %s: %+v", got, results)
	}
	for _, r := range results {
		if want := fmt.Sprintf("250 queued %d", r.Message+1); r.Reply.Text != want || r.Stage != proto.StageMessage || !r.Sent {
			t.Errorf("%+v: want %q", r, want)
		}
	}
	want := "EHLO client.example|" +
		"MAIL FROM:<s@example.test>|RCPT TO:<a0@example.test>|RCPT TO:<b0@example.test>|DATA|.|" +
		"MAIL FROM:<s@example.test>|RCPT TO:<a1@example.test>|RCPT TO:<b1@example.test>|DATA|.|" +
		"MAIL FROM:<s@example.test>|RCPT TO:<a2@example.test>|RCPT TO:<b2@example.test>|DATA|.|QUIT"
	if got := srv.log(); got != want {
		t.Errorf("commands\n%s\nwant\n%s", got, want)
	}
}

// The connection lost after a message's "." and the next MAIL, before the
// "." reply: that message is a Z (sent, maybe delivered: not K, not from
// the server), and so is every recipient of the next.
func TestLostAfterPipelinedDot(t *testing.T) {
	srv := &dotServer{}
	srv.afterDot = func(p *peer, n int, record func(string)) bool {
		if l, err := p.line(); err == nil {
			record(l) // the next MAIL, pipelined after the "."
		}
		return false // closes without a reply
	}
	addr := startServer(t, srv.handle)
	msgs := []proto.Message{
		bytesMessage("s@example.test", []byte("one\n"), "a@example.test", "b@example.test"),
		bytesMessage("s@example.test", []byte("two\n"), "c@example.test"),
	}
	results, err := deliver(t, &Client{DataTimeout: 10 * time.Second}, addr, msgs)
	if err == nil || errors.Is(err, ErrTimeout) {
		t.Errorf("err %v, want the connection lost", err)
	}
	want := fmt.Sprintf("Z/%d/true/true/false Z/%d/true/true/false Z/%d/false/false/false", proto.StageNone, proto.StageNone, proto.StageNone)
	if got := stages(results); got != want {
		t.Errorf("results %s, want %s: %+v", got, want, results)
	}
	if got, want := srv.log(), "EHLO client.example|MAIL FROM:<s@example.test>|RCPT TO:<a@example.test>|RCPT TO:<b@example.test>|DATA|.|MAIL FROM:<s@example.test>"; got != want {
		t.Errorf("commands\n%s\nwant\n%s", got, want)
	}
}

// A stop requested while a message is under way (here: when its DATA
// arrives) lets that message finish, with its "." reply read, and no
// further MAIL is written, pipelining or not.
func TestStopDuringTransactionSendsNoNextMail(t *testing.T) {
	stop := make(chan struct{})
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		for {
			l, err := p.line()
			if err != nil {
				return
			}
			switch strings.ToUpper(strings.SplitN(l, " ", 2)[0]) {
			case "EHLO":
				p.send("250-hi\r\n250 PIPELINING\r\n")
			case "DATA":
				close(stop) // before the 354 the client waits for
				p.send("354 go on\r\n")
				for {
					l, err := p.line()
					if err != nil {
						return
					}
					if l == "." {
						break
					}
				}
				p.send("250 queued\r\n")
			case "MAIL":
				select {
				case <-stop:
					p.send("421 4.3.0 MAIL after the stop\r\n")
					return
				default:
				}
				p.send("250 ok\r\n")
			default:
				p.send("250 ok\r\n")
			}
		}
	})
	ctx := proto.WithStopStarting(context.Background(), stop)
	msgs := []proto.Message{
		bytesMessage("s@example.test", []byte("x\n"), "a@example.test"),
		bytesMessage("s@example.test", []byte("y\n"), "b@example.test"),
		bytesMessage("s@example.test", []byte("z\n"), "c@example.test"),
	}
	var results []proto.Result
	_, err := (&Client{Helo: "h.example", CommandTimeout: 20 * time.Second}).Deliver(ctx, []string{addr}, msgs, collect(&results))
	checkOrder(t, msgs, results)
	if !errors.Is(err, proto.ErrInterrupted) || statuses(results) != "KZZ" {
		t.Fatalf("err %v, results %+v", err, results)
	}
	if r := results[0]; r.Reply.Text != "250 queued" || !r.FromServer {
		t.Errorf("the message under way: %+v", r)
	}
	for _, r := range results[1:] {
		if r.FromServer || r.Sent || r.RcptAccepted || !strings.Contains(r.Reply.Text, "not sent") {
			t.Errorf("a message not started: %+v", r)
		}
	}
}

// Every RCPT refused with DATA already pipelined: the server's 554 to DATA
// sends nothing and changes no result, and the transaction it aborted is
// followed by RSET before the next MAIL (and only that one).
func TestAllRecipientsRefusedPipelined(t *testing.T) {
	var mu sync.Mutex
	var cmds []string
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		accepted := 0
		for {
			l, err := p.line()
			if err != nil {
				return
			}
			mu.Lock()
			cmds = append(cmds, l)
			mu.Unlock()
			switch {
			case strings.HasPrefix(l, "EHLO"):
				p.send("250-hi\r\n250 PIPELINING\r\n")
			case strings.HasPrefix(l, "RCPT TO:<gone@"):
				p.send("550 5.1.1 no such user\r\n")
			case strings.HasPrefix(l, "RCPT"):
				accepted++
				p.send("250 ok\r\n")
			case l == "DATA" && accepted == 0:
				p.send("554 5.5.1 no valid recipients\r\n")
			case l == "DATA":
				p.send("354 go on\r\n")
				for {
					if l, err := p.line(); err != nil || l == "." {
						break
					}
				}
				accepted = 0
				p.send("250 queued\r\n")
			case l == "RSET":
				accepted = 0
				p.send("250 reset\r\n")
			case l == "QUIT":
				p.send("221 bye\r\n")
				return
			default:
				p.send("250 ok\r\n")
			}
		}
	})
	msgs := []proto.Message{
		bytesMessage("s@example.test", []byte("one\n"), "gone@example.test"),
		bytesMessage("s@example.test", []byte("two\n"), "a@example.test"),
		bytesMessage("s@example.test", []byte("three\n"), "b@example.test"),
	}
	results, err := deliver(t, &Client{}, addr, msgs)
	if err != nil || statuses(results) != "DKK" || results[0].Reply.Text != "550 5.1.1 no such user" || results[0].Stage != proto.StageRcpt {
		t.Fatalf("err %v, results %+v", err, results)
	}
	mu.Lock()
	got := strings.Join(cmds, "|")
	mu.Unlock()
	want := "EHLO client.example|MAIL FROM:<s@example.test>|RCPT TO:<gone@example.test>|DATA|" +
		"RSET|MAIL FROM:<s@example.test>|RCPT TO:<a@example.test>|DATA|" +
		"MAIL FROM:<s@example.test>|RCPT TO:<b@example.test>|DATA|QUIT"
	if got != want {
		t.Errorf("commands\n%s\nwant\n%s", got, want)
	}
}
