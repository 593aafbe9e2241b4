package smtp

// Scripted SMTP servers, for what Postfix cannot be made to do on demand:
// a 4xx to one RCPT, replies held until DATA (which only a pipelining
// client survives), STARTTLS, EHLO refused, trickling and hostile replies.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/testtls"
)

// peer is the server's side of one connection.
type peer struct {
	c  net.Conn
	br *bufio.Reader
}

func (p *peer) line() (string, error) {
	l, err := p.br.ReadString('\n')
	return strings.TrimSuffix(l, "\r\n"), err
}

func (p *peer) send(s string) error {
	_, err := io.WriteString(p.c, s)
	return err
}

// startServer runs handle on every connection to a fresh listener and
// waits, when the test ends, for every handler to return.
func startServer(t *testing.T, handle func(p *peer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(&peer{c: c, br: bufio.NewReader(c)})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// scriptServer is a small SMTP server with hooks.
type scriptServer struct {
	ehlo          []string // the extensions EHLO lists
	ehloRefusal   string   // when set, the reply to EHLO
	tls           *tls.Config
	holdUntilData bool // answer MAIL and RCPT only when DATA arrives
	rcpt          func(addr string) string
	data          func(body []byte) string // final reply; default 250
	// auth, when set, runs AUTH: it may read more lines from p (the
	// exchange after the command) and returns the final reply.
	auth func(p *peer, command string) string

	mu       sync.Mutex
	commands []string // every command line, in order
	bodies   [][]byte // DATA as received, final ".\r\n" excluded
	overTLS  []bool   // per MAIL: was the session in TLS
}

func (s *scriptServer) log(cmd string) {
	s.mu.Lock()
	s.commands = append(s.commands, cmd)
	s.mu.Unlock()
}

func (s *scriptServer) handle(p *peer) {
	if p.send("220 scripted ESMTP\r\n") != nil {
		return
	}
	var pending []string
	flush := func() error {
		err := p.send(strings.Join(pending, ""))
		pending = nil
		return err
	}
	reply := func(r string) error {
		pending = append(pending, r+"\r\n")
		return flush()
	}
	// hold keeps a reply until DATA (RFC 2920 lets a server do that).
	hold := func(r string) error {
		if !s.holdUntilData {
			return reply(r)
		}
		pending = append(pending, r+"\r\n")
		return nil
	}
	inTLS := false
	for {
		l, err := p.line()
		if err != nil {
			return
		}
		s.log(l)
		verb := strings.ToUpper(strings.SplitN(l, " ", 2)[0])
		switch {
		case verb == "EHLO" && s.ehloRefusal != "":
			err = reply(s.ehloRefusal)
		case verb == "EHLO":
			ext := append([]string{"scripted"}, s.ehlo...)
			if s.tls != nil && !inTLS {
				ext = append(ext, "STARTTLS")
			}
			r := ""
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				r += "250" + sep + e + "\r\n"
			}
			err = reply(strings.TrimSuffix(r, "\r\n"))
		case verb == "HELO":
			err = reply("250 scripted")
		case verb == "STARTTLS":
			if err := p.send("220 go ahead\r\n"); err != nil {
				return
			}
			tc := tls.Server(p.c, s.tls)
			if tc.Handshake() != nil {
				return
			}
			p.c, p.br, inTLS = tc, bufio.NewReader(tc), true
		case strings.HasPrefix(strings.ToUpper(l), "MAIL FROM:"):
			s.mu.Lock()
			s.overTLS = append(s.overTLS, inTLS)
			s.mu.Unlock()
			err = hold("250 2.1.0 sender ok")
		case strings.HasPrefix(strings.ToUpper(l), "RCPT TO:"):
			r := "250 2.1.5 recipient ok"
			if s.rcpt != nil {
				r = s.rcpt(strings.Trim(l[len("RCPT TO:"):], "<>"))
			}
			err = hold(r)
		case verb == "DATA":
			if reply("354 go on") != nil {
				return
			}
			var body []byte
			for {
				l, err := p.br.ReadBytes('\n')
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
				body = append(body, l...)
			}
			s.mu.Lock()
			s.bodies = append(s.bodies, body)
			s.mu.Unlock()
			r := "250 2.0.0 queued"
			if s.data != nil {
				r = s.data(body)
			}
			err = reply(r)
		case verb == "AUTH" && s.auth != nil:
			err = reply(s.auth(p, l))
		case verb == "RSET":
			err = hold("250 2.0.0 reset")
		case verb == "QUIT":
			reply("221 bye")
			flush()
			return
		default:
			err = reply("502 5.5.2 what?")
		}
		if err != nil {
			return
		}
	}
}

func (s *scriptServer) log2() ([]string, [][]byte, []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...), append([][]byte(nil), s.bodies...), append([]bool(nil), s.overTLS...)
}

// deliver runs a session and collects its results.
func deliver(t *testing.T, c *Client, addr string, msgs []proto.Message) ([]proto.Result, error) {
	t.Helper()
	if c.Helo == "" {
		c.Helo = "client.example"
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = 20 * time.Second // a test's bug fails, not hangs
	}
	var results []proto.Result
	_, err := c.Deliver(context.Background(), []string{addr}, msgs, collect(&results))
	checkOrder(t, msgs, results)
	return results, err
}

func statuses(results []proto.Result) string {
	var b strings.Builder
	for _, r := range results {
		b.WriteByte(byte(r.Reply.Status))
	}
	return b.String()
}

// A server that answers nothing until DATA arrives, as PIPELINING allows:
// only a client that sends MAIL, every RCPT and DATA in one batch gets
// replies. A 4xx RCPT is a Z, a 5xx a D, and the accepted recipients get
// the reply to the message; the DATA bytes are the message with CRLF and
// dot-stuffing, a CR in the message kept as it is.
func TestPipelinedTransactions(t *testing.T) {
	srv := &scriptServer{
		ehlo:          []string{"PIPELINING", "8BITMIME"},
		holdUntilData: true,
		rcpt: func(a string) string {
			switch {
			case strings.HasPrefix(a, "busy@"):
				return "450 4.2.1 <" + a + ">: mailbox busy"
			case strings.HasPrefix(a, "gone@"):
				return "550 5.1.1 <" + a + ">: no such user"
			}
			return "250 2.1.5 ok"
		},
	}
	addr := startServer(t, srv.handle)
	msg1 := []byte(".a\n..b\n.\nx\r\ny\n\xe9")
	msg2 := []byte("plain\n")
	msgs := []proto.Message{
		bytesMessage("s@example.test", msg1, "one@example.test", "busy@example.test", "gone@example.test", "two@example.test"),
		bytesMessage("", msg2, "three@example.test"),
	}
	results, err := deliver(t, &Client{CommandTimeout: 20 * time.Second}, addr, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(results); got != "KZDKK" {
		t.Fatalf("statuses %s, want KZDKK: %+v", got, results)
	}
	if r := results[1]; r.Reply.Text != "450 4.2.1 <busy@example.test>: mailbox busy" || !r.FromServer {
		t.Errorf("Z: %+v", r)
	}
	if r := results[0]; r.Reply.Text != "250 2.0.0 queued" {
		t.Errorf("K: %+v", r)
	}
	cmds, bodies, _ := srv.log2()
	wantCmds := []string{"EHLO client.example",
		"MAIL FROM:<s@example.test> BODY=8BITMIME", "RCPT TO:<one@example.test>", "RCPT TO:<busy@example.test>",
		"RCPT TO:<gone@example.test>", "RCPT TO:<two@example.test>", "DATA",
		"MAIL FROM:<>", "RCPT TO:<three@example.test>", "DATA", "QUIT"}
	if strings.Join(cmds, "|") != strings.Join(wantCmds, "|") {
		t.Errorf("commands\n%q\nwant\n%q", cmds, wantCmds)
	}
	if len(bodies) != 2 || string(bodies[0]) != "..a\r\n...b\r\n..\r\nx\r\r\ny\r\n\xe9\r\n" || string(bodies[1]) != "plain\r\n" {
		t.Errorf("DATA bytes %q", bodies)
	}
}

// A server refusing EHLO with a 5xx other than go-smtp's 500/502 gets a
// HELO; without EHLO there are no extensions, so each command waits for
// its reply, and no SIZE or BODY parameter is sent.
func TestEHLORefusedFallsBackToHELO(t *testing.T) {
	srv := &scriptServer{ehloRefusal: "554 5.5.1 no EHLO here"}
	addr := startServer(t, srv.handle)
	msgs := []proto.Message{bytesMessage("s@example.test", []byte("\xe9\n"), "a@example.test", "b@example.test")}
	results, err := deliver(t, &Client{}, addr, msgs)
	if err != nil || statuses(results) != "KK" {
		t.Fatalf("err %v, results %+v", err, results)
	}
	cmds, _, _ := srv.log2()
	want := "EHLO client.example|HELO client.example|MAIL FROM:<s@example.test>|RCPT TO:<a@example.test>|RCPT TO:<b@example.test>|DATA|QUIT"
	if strings.Join(cmds, "|") != want {
		t.Errorf("commands %q, want %q", cmds, want)
	}
}

// SIZE= is the message's size on the wire; BODY=8BITMIME only for a
// message with 8-bit bytes. Without PIPELINING, RCPTs all refused means no
// DATA, and a refused MAIL gives its reply to every recipient.
func TestMailParameters(t *testing.T) {
	srv := &scriptServer{
		ehlo: []string{"SIZE 1000", "8BITMIME"},
		rcpt: func(a string) string {
			if strings.HasPrefix(a, "gone@") {
				return "550 5.1.1 gone"
			}
			return "250 ok"
		},
	}
	addr := startServer(t, srv.handle)
	msgs := []proto.Message{
		bytesMessage("s@example.test", []byte("a\n.b\n"), "x@example.test"),
		bytesMessage("s@example.test", []byte("\xc3\xa9"), "y@example.test"),
		bytesMessage("s@example.test", []byte("z\n"), "gone@example.test"),
		bytesMessage("s@example.test", bytes.Repeat([]byte("a\n"), 400), "big@example.test"), // 1200 on the wire
	}
	results, err := deliver(t, &Client{}, addr, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(results); got != "KKDD" {
		t.Fatalf("statuses %s: %+v", got, results)
	}
	cmds, _, _ := srv.log2()
	want := "EHLO client.example|MAIL FROM:<s@example.test> SIZE=8|RCPT TO:<x@example.test>|DATA|" +
		"RSET|MAIL FROM:<s@example.test> SIZE=4 BODY=8BITMIME|RCPT TO:<y@example.test>|DATA|" +
		"RSET|MAIL FROM:<s@example.test> SIZE=3|RCPT TO:<gone@example.test>|QUIT"
	if strings.Join(cmds, "|") != want {
		t.Errorf("commands\n%q\nwant\n%q", strings.Join(cmds, "|"), want)
	}
}

// A refused MAIL is every recipient's reply, pipelined or not.
func TestMailRefused(t *testing.T) {
	for _, ext := range []string{"PIPELINING", "HELP"} {
		addr := startServer(t, func(p *peer) {
			p.send("220 hi\r\n")
			for {
				l, err := p.line()
				if err != nil {
					return
				}
				switch {
				case strings.HasPrefix(l, "EHLO"):
					p.send("250-hi\r\n250 " + ext + "\r\n")
				case strings.HasPrefix(l, "MAIL"):
					p.send("553 5.1.8 sender refused\r\n")
				case strings.HasPrefix(l, "QUIT"):
					p.send("221 bye\r\n")
					return
				default:
					p.send("503 5.5.1 no MAIL\r\n")
				}
			}
		})
		msgs := []proto.Message{bytesMessage("bad@example.test", []byte("x\n"), "a@example.test", "b@example.test")}
		results, err := deliver(t, &Client{}, addr, msgs)
		if err != nil || statuses(results) != "DD" || results[1].Reply.Text != "553 5.1.8 sender refused" {
			t.Errorf("%s: err %v, results %+v", ext, err, results)
		}
	}
}

// trickle sends s one byte at a time until the client goes away.
func trickle(p *peer, s string) {
	for i := 0; ; i = (i + 1) % len(s) {
		if p.send(s[i:i+1]) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A server trickling its greeting (read by go-smtp), or its reply to MAIL
// (read here), one byte at a time is given up on at the command timeout,
// however steadily the bytes come: every recipient gets a Z.
func TestTricklingServer(t *testing.T) {
	for _, where := range []string{"greeting", "MAIL"} {
		t.Run(where, func(t *testing.T) {
			addr := startServer(t, func(p *peer) {
				if where == "greeting" {
					trickle(p, "220-still greeting you\r\n")
					return
				}
				p.send("220 hi\r\n")
				p.line()
				p.send("250 hi\r\n")
				p.line()
				trickle(p, "250-wait for it\r\n")
			})
			msgs := []proto.Message{
				bytesMessage("s@example.test", []byte("x\n"), "a@example.test", "b@example.test"),
				bytesMessage("s@example.test", []byte("y\n"), "c@example.test"),
			}
			start := time.Now()
			results, err := deliver(t, &Client{CommandTimeout: time.Second}, addr, msgs)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err %v, want ErrTimeout", err)
			}
			if time.Since(start) > 30*time.Second {
				t.Errorf("gave up after %v with a 1s command timeout", time.Since(start))
			}
			for _, r := range results {
				if r.Reply.Status != proto.Temporary || r.FromServer {
					t.Errorf("%+v, want a Z of our own", r)
				}
			}
		})
	}
}

// selfSigned returns a server certificate for 127.0.0.1 and a pool
// trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	c := testtls.New(t)
	return c.TLS, c.Pool
}

// STARTTLS: used whenever offered (the certificate unverified); under
// TLSRequire the certificate must verify, else every recipient is a Z and
// no MAIL is sent; TLSNone never uses it.
func TestSTARTTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	msg := func() []proto.Message {
		return []proto.Message{bytesMessage("s@example.test", []byte("secret\n"), "a@example.test")}
	}
	cases := []struct {
		name   string
		client *Client
		want   string
		tls    bool
	}{
		{"opportunistic", &Client{}, "K", true},
		{"require-verified", &Client{TLS: TLSRequire, TLSConfig: &tls.Config{RootCAs: pool}}, "K", true},
		{"require-unverifiable", &Client{TLS: TLSRequire}, "Z", false},
		{"none", &Client{TLS: TLSNone}, "K", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := &scriptServer{ehlo: []string{"PIPELINING"}, tls: &tls.Config{Certificates: []tls.Certificate{cert}}}
			addr := startServer(t, srv.handle)
			results, err := deliver(t, c.client, addr, msg())
			if got := statuses(results); got != c.want {
				t.Fatalf("%s, err %v, want %s: %+v", got, err, c.want, results)
			}
			if c.want == "Z" && !errors.Is(err, ErrTLSRequired) {
				t.Errorf("err %v, want ErrTLSRequired", err)
			}
			_, bodies, overTLS := srv.log2()
			if c.want == "Z" {
				if len(overTLS) != 0 || len(bodies) != 0 {
					t.Errorf("a MAIL was sent: %v", overTLS)
				}
				return
			}
			if len(overTLS) != 1 || overTLS[0] != c.tls {
				t.Errorf("MAIL over TLS: %v, want %v", overTLS, c.tls)
			}
		})
	}
}

// Bytes after the 220 to STARTTLS, before the handshake, are the STARTTLS
// injection attack: the session ends, nothing is sent.
func TestSTARTTLSInjection(t *testing.T) {
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		p.line()
		p.send("250-hi\r\n250 STARTTLS\r\n")
		p.line()
		p.send("220 go ahead\r\n250 injected\r\n")
		p.line()
	})
	results, err := deliver(t, &Client{}, addr, []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test")})
	if !errors.Is(err, proto.ErrRemoteViolation) || statuses(results) != "Z" || results[0].FromServer {
		t.Fatalf("err %v, results %+v", err, results)
	}
}

// Hostile replies end the session with a Z for every recipient not yet
// answered; what the server had answered before stands.
func TestHostileReplies(t *testing.T) {
	cases := []struct {
		name  string
		mail  string // the reply to the second message's MAIL
		want  string
		isErr error
	}{
		{"long line", "250 " + strings.Repeat("x", 3000) + "\r\n", "KZ", proto.ErrRemoteViolation},
		{"endless reply", strings.Repeat("250-more\r\n", 200) + "250 ok\r\n", "KZ", proto.ErrRemoteViolation},
		{"not a reply", "hello there\r\n", "KZ", proto.ErrRemoteViolation},
		{"mixed codes", "250-ok\r\n550 no\r\n", "KZ", proto.ErrRemoteViolation},
		{"reply to nothing", "250 ok\r\n250 extra\r\n", "KZ", proto.ErrRemoteViolation},
		{"closed", "", "KZ", errConnClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := startServer(t, func(p *peer) {
				p.send("220 hi\r\n")
				mails := 0
				for {
					l, err := p.line()
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(l, "EHLO"):
						p.send("250 hi\r\n") // no PIPELINING: one reply read at a time
					case strings.HasPrefix(l, "MAIL"):
						mails++
						if mails == 2 {
							if c.mail == "" {
								return
							}
							p.send(c.mail)
							continue
						}
						p.send("250 ok\r\n")
					case l == "DATA":
						p.send("354 go\r\n")
						for l != "." {
							if l, err = p.line(); err != nil {
								return
							}
						}
						p.send("250 queued\r\n")
					case l == "QUIT":
						p.send("221 bye\r\n")
						return
					default:
						p.send("250 ok\r\n")
					}
				}
			})
			msgs := []proto.Message{
				bytesMessage("s@example.test", []byte("x\n"), "a@example.test"),
				bytesMessage("s@example.test", []byte("y\n"), "b@example.test"),
			}
			results, err := deliver(t, &Client{CommandTimeout: 20 * time.Second}, addr, msgs)
			if !errors.Is(err, c.isErr) {
				t.Errorf("err %v, want %v", err, c.isErr)
			}
			if got := statuses(results); got != c.want || results[1].FromServer {
				t.Errorf("%s, want %s: %+v", got, c.want, results)
			}
		})
	}
}

// go-smtp reads the EHLO reply; a server sending megabytes of extension
// lines is cut off.
func TestEndlessEHLO(t *testing.T) {
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		p.line()
		p.send("250-hi\r\n")
		line := "250-X" + strings.Repeat("x", 1900) + "\r\n"
		for i := 0; i < 2000; i++ {
			if p.send(line) != nil {
				return
			}
		}
		p.send("250 end\r\n")
	})
	results, err := deliver(t, &Client{CommandTimeout: 20 * time.Second}, addr, []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test")})
	if !errors.Is(err, proto.ErrRemoteViolation) || statuses(results) != "Z" {
		t.Fatalf("err %v, results %+v", err, results)
	}
}

// DATA answered with 250 instead of 354: the message is not sent (the
// server would take it for commands) and its recipients get a Z; a server
// closing the connection in the middle of the message: a Z of our own.
func TestDataOddities(t *testing.T) {
	for _, c := range []struct {
		name  string
		data  func(p *peer)
		text  string
		fromS bool
	}{
		{"250 to DATA", func(p *peer) {
			p.send("250 sure\r\n")
			l, _ := p.line()
			if l != "QUIT" {
				p.send("500 the message came: " + l + "\r\n")
				return
			}
			p.send("221 bye\r\n")
		}, "unexpected reply to DATA: 250 sure", true},
		{"closed mid-message", func(p *peer) {
			p.send("354 go\r\n")
			p.line()
		}, "no reply from the server", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := startServer(t, func(p *peer) {
				p.send("220 hi\r\n")
				for {
					l, err := p.line()
					if err != nil {
						return
					}
					if l == "DATA" {
						c.data(p)
						return
					}
					p.send("250 ok\r\n")
				}
			})
			results, _ := deliver(t, &Client{CommandTimeout: 20 * time.Second, DataTimeout: 20 * time.Second}, addr,
				[]proto.Message{bytesMessage("s@example.test", []byte(strings.Repeat("line\n", 100)), "a@example.test")})
			r := results[0]
			if r.Reply.Status != proto.Temporary || r.FromServer != c.fromS || !strings.HasPrefix(r.Reply.Text, c.text) {
				t.Errorf("%+v, want Z %q (from server %v)", r, c.text, c.fromS)
			}
		})
	}
}

// A message that cannot be read is a Z for its recipients; the session
// goes on with the next.
func TestUnreadableMessage(t *testing.T) {
	srv := &scriptServer{ehlo: []string{"PIPELINING"}}
	addr := startServer(t, srv.handle)
	bad := proto.Message{Sender: "s@example.test", Recipients: []string{"a@example.test"}, Size: 5,
		Open: func() (io.ReadCloser, error) { return nil, fmt.Errorf("gone") }}
	short := bytesMessage("s@example.test", []byte("abc"), "b@example.test")
	short.Size = 10
	msgs := []proto.Message{bad, short, bytesMessage("s@example.test", []byte("ok\n"), "c@example.test")}
	results, err := deliver(t, &Client{}, addr, msgs)
	if err != nil || statuses(results) != "ZZK" || results[0].FromServer || results[1].FromServer {
		t.Fatalf("err %v, results %+v", err, results)
	}
}

// Interrupted (proto.StopStarting): the message under way finishes, the
// others are not started and say so.
func TestInterrupted(t *testing.T) {
	srv := &scriptServer{ehlo: []string{"PIPELINING"}}
	addr := startServer(t, srv.handle)
	stop := make(chan struct{})
	ctx := proto.WithStopStarting(context.Background(), stop)
	var msgs []proto.Message
	for i := 0; i < 3; i++ {
		msgs = append(msgs, bytesMessage("s@example.test", []byte("x\n"), fmt.Sprintf("r%d@example.test", i)))
	}
	var results []proto.Result
	_, err := (&Client{Helo: "h.example"}).Deliver(ctx, []string{addr}, msgs, func(r proto.Result) {
		results = append(results, r)
		if r.Message == 0 {
			close(stop)
		}
	})
	checkOrder(t, msgs, results)
	if !errors.Is(err, proto.ErrInterrupted) || statuses(results) != "KZZ" || !strings.Contains(results[2].Reply.Text, "not sent") {
		t.Fatalf("err %v, results %+v", err, results)
	}
}

// A malformed greeting or EHLO reply, read by go-smtp, is a protocol
// violation too.
func TestMalformedGreeting(t *testing.T) {
	for _, greeting := range []string{"hello\r\n", "220-" + strings.Repeat("x", 3000) + "\r\n"} {
		addr := startServer(t, func(p *peer) {
			p.send(greeting)
			p.line()
		})
		results, err := deliver(t, &Client{}, addr, []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test")})
		if !errors.Is(err, proto.ErrRemoteViolation) || statuses(results) != "Z" {
			t.Errorf("%.20q: err %v, results %+v", greeting, err, results)
		}
	}
}

// A server that stops reading in the middle of the message is given up on
// at the data timeout: the write never completes, so no reply can count.
func TestDataTimeout(t *testing.T) {
	stalled := make(chan struct{})
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		for {
			l, err := p.line()
			if err != nil {
				return
			}
			if l == "DATA" {
				p.send("354 go\r\n")
				<-stalled // read nothing more until the test ends
				return
			}
			p.send("250 ok\r\n")
		}
	})
	t.Cleanup(func() { close(stalled) }) // runs before startServer's cleanup
	line := []byte(strings.Repeat("z", 99) + "\n")
	size := int64(16 << 20) // beyond loopback socket buffers (if not, the reply wait times out instead)
	big := proto.Message{Sender: "s@example.test", Recipients: []string{"a@example.test"}, Size: size,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(io.LimitReader(repeatReader(line), size)), nil }}
	start := time.Now()
	results, err := deliver(t, &Client{DataTimeout: time.Second}, addr, []proto.Message{big})
	if !errors.Is(err, ErrTimeout) || statuses(results) != "Z" || results[0].FromServer {
		t.Fatalf("err %v, results %+v", err, results)
	}
	if time.Since(start) > time.Minute {
		t.Errorf("gave up after %v with a 1s data timeout", time.Since(start))
	}
}

// Cancelling the context ends a session waiting for a reply at once.
func TestCancel(t *testing.T) {
	waiting := make(chan struct{})
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		p.line()
		p.send("250 hi\r\n")
		p.line() // MAIL: never answered
		close(waiting)
		p.line()
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-waiting
		cancel()
	}()
	msgs := []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test", "b@example.test")}
	var results []proto.Result
	_, err := (&Client{Helo: "h.example", CommandTimeout: time.Hour}).Deliver(ctx, []string{addr}, msgs, collect(&results))
	checkOrder(t, msgs, results)
	if !errors.Is(err, context.Canceled) || statuses(results) != "ZZ" {
		t.Fatalf("err %v, results %+v", err, results)
	}
}

// AUTH LOGIN sends no initial response and answers the server's prompts
// in order, the user name first: a server that prompts "Username:"
// whatever follows the command is served too (go-sasl's LOGIN client sent
// the user name as an initial response, then refused that prompt, and the
// mail stayed queued).
func TestAuthLoginAnswersPrompts(t *testing.T) {
	cert, pool := selfSigned(t)
	b64 := base64.StdEncoding.EncodeToString
	var exchange []string
	srv := &scriptServer{ehlo: []string{"AUTH LOGIN"}, tls: &tls.Config{Certificates: []tls.Certificate{cert}}}
	srv.auth = func(p *peer, command string) string {
		exchange = append(exchange, command)
		for _, prompt := range []string{"Username:", "Password:"} {
			if p.send("334 "+b64([]byte(prompt))+"\r\n") != nil {
				return "454 gone"
			}
			l, err := p.line()
			if err != nil {
				return "454 gone"
			}
			exchange = append(exchange, l)
		}
		if exchange[1] == b64([]byte("mailer")) && exchange[2] == b64([]byte("s3cret")) {
			return "235 2.7.0 ok"
		}
		return "535 5.7.8 no"
	}
	addr := startServer(t, srv.handle)
	c := &Client{TLS: TLSRequire, TLSConfig: &tls.Config{RootCAs: pool}, Auth: &Auth{User: "mailer", Password: "s3cret"}}
	results, err := deliver(t, c, addr, []proto.Message{bytesMessage("s@example.test", []byte("hi\n"), "a@example.test")})
	if got := statuses(results); got != "K" {
		t.Fatalf("%s, err %v; AUTH exchange %q", got, err, exchange)
	}
	want := []string{"AUTH LOGIN", b64([]byte("mailer")), b64([]byte("s3cret"))}
	if !slices.Equal(exchange, want) {
		t.Fatalf("AUTH exchange %q, want %q", exchange, want)
	}
}
