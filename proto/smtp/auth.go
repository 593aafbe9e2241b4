package smtp

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

// Auth is the account a submission session authenticates with (RFC 4954),
// by PLAIN or LOGIN, whichever the server's EHLO offers (PLAIN first).
// It is used only inside TLS: over a plain connection the session ends
// before the secret is sent. The password is sent and nowhere else
// written: no error, log line or reply text this package makes holds it.
type Auth struct {
	User     string
	Password string
}

// ErrAuth is wrapped by the session error when the server refused the
// credentials (or offered no mechanism the client has): a temporary
// failure for every recipient, so the mail stays queued until the
// password is fixed, never a bounce.
var ErrAuth = errors.New("authentication failed")

// authError is a refused AUTH: every recipient gets a Z with the words.
type authError struct{ text string }

func (e *authError) Error() string { return "smtp: " + ErrAuth.Error() + ": " + e.text }
func (e *authError) Unwrap() error { return ErrAuth }

// inTLS reports whether the session's commands travel inside TLS: after
// STARTTLS, or on a connection given to Send already in TLS (smtps).
func (s *session) inTLS() bool {
	if s.tlsConn != nil {
		return true
	}
	_, ok := s.cc.Conn.(*tls.Conn)
	return ok
}

// authenticate runs AUTH with the mechanisms ext (the AUTH extension's
// parameters) offers.
func (s *session) authenticate(offered bool, ext string) error {
	a := s.c.Auth
	if !s.inTLS() {
		return fmt.Errorf("smtp: %w: AUTH is sent only inside TLS, and this session is in plain text", ErrTLSRequired)
	}
	if !offered {
		return &authError{text: s.host + " offers no AUTH (is this the submission port?)"}
	}
	var mech string
	for _, m := range strings.Fields(strings.ToUpper(ext)) {
		if m == sasl.Plain {
			mech = m
			break
		}
		if m == sasl.Login {
			mech = m
		}
	}
	var c sasl.Client
	switch mech {
	case sasl.Plain:
		c = sasl.NewPlainClient("", a.User, a.Password)
	case sasl.Login:
		c = &loginClient{user: a.User, password: a.Password}
	default:
		return &authError{text: fmt.Sprintf("%s offers AUTH %s, and qbox speaks only PLAIN and LOGIN", s.host, printableExt(ext))}
	}
	_, ir, err := c.Start()
	if err != nil {
		return &authError{text: err.Error()}
	}
	line := "AUTH " + mech
	if ir != nil {
		enc := base64.StdEncoding.EncodeToString(ir)
		if enc == "" {
			enc = "="
		}
		line += " " + enc
	}
	for step := 0; ; step++ {
		if step > 4 {
			return &authError{text: "the server asked for more than the mechanism has to say"}
		}
		r, err := s.command(line, s.w)
		if err != nil {
			return err
		}
		switch {
		case r.code == 235:
			return nil
		case r.code == 334:
			chal, err := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(r.text, "334")))
			if err != nil {
				s.command("*", s.w) // cancel the exchange (RFC 4954 4)
				return &authError{text: "a 334 challenge that is not base64"}
			}
			resp, err := c.Next(chal)
			if err != nil {
				s.command("*", s.w)
				return &authError{text: err.Error()}
			}
			line = base64.StdEncoding.EncodeToString(resp)
		default:
			return &authError{text: fmt.Sprintf("%s refused AUTH %s as %s: %s", s.host, mech, a.User, r.text)}
		}
	}
}

// loginClient is AUTH LOGIN's client side. It sends no initial response
// and answers the server's prompts in order, the user name to the first
// and the password to the second, whatever their words, as mail clients
// commonly do. go-sasl's client sends the user name as an initial
// response and then accepts only a "Password:" prompt, so it fails
// against a server that prompts "Username:" all the same.
type loginClient struct {
	user, password string
	step           int
}

func (c *loginClient) Start() (string, []byte, error) { return sasl.Login, nil, nil }

func (c *loginClient) Next(challenge []byte) ([]byte, error) {
	c.step++
	switch c.step {
	case 1:
		return []byte(c.user), nil
	case 2:
		return []byte(c.password), nil
	}
	return nil, errors.New("the server prompted AUTH LOGIN for more than a user name and a password")
}

func printableExt(s string) string {
	b := []byte(s)
	if len(b) > 100 {
		b = b[:100]
	}
	for i, c := range b {
		if c < 32 || c > 126 {
			b[i] = '?'
		}
	}
	return string(b)
}
