package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto"
	"qbox/proto/testkit/testtls"
)

// submission is an in-process SMTP submission server (go-smtp) with AUTH
// PLAIN and LOGIN over TLS: the unit tests' stand-in for a provider's
// relay (the peer tests use a private Postfix with Cyrus SASL).
type submission struct {
	addr string
	mu   sync.Mutex
	got  []string // "user: from -> to" of each message accepted
	auth []string // the mechanisms used
}

type subBackend struct {
	s          *submission
	user, pass string
	mechs      []string
}

func (b *subBackend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	return &subSession{b: b}, nil
}

type subSession struct {
	b    *subBackend
	user string
	from string
	to   []string
}

func (s *subSession) AuthMechanisms() []string { return s.b.mechs }

func (s *subSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != s.b.user || pass != s.b.pass {
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication failed"}
		}
		s.user = user
		s.b.s.mu.Lock()
		s.b.s.auth = append(s.b.s.auth, mech)
		s.b.s.mu.Unlock()
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, errors.New("no such mechanism")
}

// loginServer is the server side of AUTH LOGIN (go-sasl has only the
// client's).
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	if l.step == 1 && len(resp) > 0 {
		l.step++ // the user name came as the initial response
	}
	switch l.step {
	case 1:
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.user, string(resp))
}

func (s *subSession) Mail(from string, _ *gosmtp.MailOptions) error {
	if s.b.user != "" && s.user == "" {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	s.from = from
	return nil
}

func (s *subSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if strings.HasPrefix(to, "nobody@") {
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *subSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	s.b.s.mu.Lock()
	s.b.s.got = append(s.b.s.got, s.user+": "+s.from+" -> "+strings.Join(s.to, ","))
	s.b.s.mu.Unlock()
	return nil
}

func (s *subSession) Reset()        { s.from, s.to = "", nil }
func (s *subSession) Logout() error { return nil }

// startSubmission serves SMTP on 127.0.0.1:0: implicit TLS when implicit,
// else STARTTLS (none offered when cfg is nil).
func startSubmission(t *testing.T, cfg *tls.Config, implicit bool, user, pass string, mechs ...string) *submission {
	t.Helper()
	sub := &submission{}
	srv := gosmtp.NewServer(&subBackend{s: sub, user: user, pass: pass, mechs: mechs})
	srv.Domain = "submission.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if implicit {
		l = tls.NewListener(l, cfg)
	} else {
		srv.TLSConfig = cfg
	}
	sub.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sub
}

func (s *submission) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func writeNetrc(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParse(t *testing.T, s string) Relay {
	t.Helper()
	r, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const secret = "s3cret-Pa55"

func send(t *testing.T, c *Client, rcpts ...string) (Outcome, error) {
	t.Helper()
	msg := []byte("Subject: test\n\nhello\n")
	return c.SendEach(context.Background(), proto.Envelope{Sender: "me@example.test", Recipients: rcpts}, int64(len(msg)),
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil })
}

func TestSubmissionAuth(t *testing.T) {
	ca := testtls.NewCA(t, "test CA")
	for _, tc := range []struct {
		name     string
		implicit bool
		mechs    []string
		want     string
	}{
		{"STARTTLS+PLAIN", false, []string{sasl.Plain, sasl.Login}, sasl.Plain},
		{"STARTTLS+LOGIN", false, []string{sasl.Login}, sasl.Login},
		{"implicit TLS+PLAIN", true, []string{sasl.Plain}, sasl.Plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := startSubmission(t, ca.ServerConfig(t, "127.0.0.1"), tc.implicit, "mailer", secret, tc.mechs...)
			scheme := "smtp"
			if tc.implicit {
				scheme = "smtps"
			}
			c := &Client{
				Relays: []Relay{mustParse(t, scheme+"://mailer@"+sub.addr)},
				Netrc:  writeNetrc(t, "machine 127.0.0.1 login mailer password "+secret+"\n"),
				TLS:    TLSOptions{Roots: ca.Pool},
				Helo:   "client.test",
			}
			o, err := send(t, c, "you@example.test", "nobody@example.test")
			if err != nil {
				t.Fatal(err)
			}
			if o.Replies[0].Status != proto.OK || o.Replies[1].Status != proto.Permanent {
				t.Fatalf("replies %v", o.Replies)
			}
			if got := sub.messages(); len(got) != 1 || got[0] != "mailer: me@example.test -> you@example.test" {
				t.Fatalf("the server got %q", got)
			}
			if sub.auth[0] != tc.want {
				t.Errorf("mechanism %s, want %s", sub.auth[0], tc.want)
			}
		})
	}
}

// A wrong password, a server without AUTH, a server without STARTTLS:
// each a Z with the reason, nothing sent, and the secret in no reply.
func TestSubmissionRefusals(t *testing.T) {
	ca := testtls.NewCA(t, "test CA")
	netrc := writeNetrc(t, "machine 127.0.0.1 login mailer password wrong-"+secret+"\n")
	for _, tc := range []struct {
		name string
		sub  *submission
		want string
	}{
		{"wrong password", startSubmission(t, ca.ServerConfig(t, "127.0.0.1"), false, "mailer", secret, sasl.Plain), "535"},
		{"no AUTH offered", startSubmission(t, ca.ServerConfig(t, "127.0.0.1"), false, "mailer", secret), "offers no AUTH"},
		{"STARTTLS stripped", startSubmission(t, nil, false, "mailer", secret, sasl.Plain), "does not offer STARTTLS"},
		{"certificate for another name", startSubmission(t, ca.ServerConfig(t, "other.example"), false, "mailer", secret, sasl.Plain), "TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{Relays: []Relay{mustParse(t, "smtp://mailer@"+tc.sub.addr)}, Netrc: netrc, TLS: TLSOptions{Roots: ca.Pool}, Helo: "client.test"}
			o, err := send(t, c, "you@example.test")
			if err != nil {
				t.Fatal(err)
			}
			r := o.Replies[0]
			if r.Status != proto.Temporary || !strings.Contains(r.Text, tc.want) {
				t.Fatalf("reply %v, want a Z saying %q", r, tc.want)
			}
			if strings.Contains(r.Text, secret) {
				t.Fatalf("the reply shows the secret: %v", r)
			}
			if got := tc.sub.messages(); len(got) != 0 {
				t.Fatalf("the server got %q", got)
			}
		})
	}
}

// An implicit-TLS relay whose certificate fails verification is not
// used (no plaintext fallback), and the next relay is tried: nothing of
// the mail was sent.
func TestFailoverOnConnectAndTLS(t *testing.T) {
	ca := testtls.NewCA(t, "test CA")
	other := testtls.NewCA(t, "another CA")
	bad := startSubmission(t, other.ServerConfig(t, "127.0.0.1"), true, "", "")
	good := startSubmission(t, ca.ServerConfig(t, "127.0.0.1"), true, "", "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	c := &Client{Relays: []Relay{mustParse(t, "smtps://"+closed), mustParse(t, "smtps://"+bad.addr), mustParse(t, "smtps://"+good.addr)},
		TLS: TLSOptions{Roots: ca.Pool}, Helo: "client.test"}
	o, err := send(t, c, "you@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if o.Replies[0].Status != proto.OK || !strings.Contains(o.Relay, good.addr) {
		t.Fatalf("outcome %+v", o)
	}
	if len(bad.messages()) != 0 {
		t.Fatal("the relay with the unverified certificate got the mail")
	}
	// With the good one gone, the error names each relay and why.
	c.Relays = c.Relays[:2]
	_, err = send(t, c, "you@example.test")
	var ce *proto.ConnectError
	if !errors.As(err, &ce) || len(ce.Tried) != 2 || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err %v", err)
	}
}

// Send (the QMQPSender side) folds the replies; a reader that cannot seek
// is copied once for SMTP's two readings.
func TestSendOneShotReader(t *testing.T) {
	ca := testtls.NewCA(t, "test CA")
	sub := startSubmission(t, ca.ServerConfig(t, "127.0.0.1"), true, "", "")
	c := &Client{Relays: []Relay{mustParse(t, "smtps://"+sub.addr)}, TLS: TLSOptions{Roots: ca.Pool}, Helo: "client.test"}
	msg := "Subject: x\n\nbody\n"
	reply, err := c.Send(context.Background(), proto.Envelope{Sender: "me@example.test", Recipients: []string{"you@example.test"}},
		io.MultiReader(strings.NewReader(msg)), int64(len(msg)))
	if err != nil || reply.Status != proto.OK {
		t.Fatalf("reply %v, err %v", reply, err)
	}
}

// AUTH is never sent in plain text: smtp://user@host?tls=none is refused
// by the parser, and a netrc entry for a plain relay is not used.
func TestNoAuthInPlainText(t *testing.T) {
	if _, err := Parse("smtp://mailer@host?tls=none"); err == nil {
		t.Fatal("a user on a plain-text relay was taken")
	}
	sub := startSubmission(t, nil, false, "", "", sasl.Plain)
	c := &Client{Relays: []Relay{mustParse(t, "smtp://"+sub.addr+"?tls=none")}, Netrc: writeNetrc(t, "machine 127.0.0.1 login mailer password "+secret+"\n"), Helo: "client.test"}
	o, err := send(t, c, "you@example.test")
	if err != nil || o.Replies[0].Status != proto.OK {
		t.Fatalf("%+v %v", o, err)
	}
	if len(sub.auth) != 0 {
		t.Fatal("AUTH went over plain text")
	}
}
