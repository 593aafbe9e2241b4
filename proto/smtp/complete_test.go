package smtp

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// pipeConn is a script to read and a buffer for what is written.
type pipeConn struct {
	in  io.Reader
	out bytes.Buffer
}

func (c *pipeConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *pipeConn) SetWriteDeadline(time.Time) error { return nil }

// Each line completePaths hands out, command or text, as the server's
// replies between the reads make it.
func TestCompletePaths(t *testing.T) {
	complete := func(a string) string {
		if !strings.Contains(a, "@") {
			return a + "@home.test"
		}
		return a
	}
	tests := []struct {
		name, in, reply, out string
	}{
		{"bracketed", "RCPT TO:<root>\r\n", "", "RCPT TO:<root@home.test>\r\n"},
		{"bare LF, lower case", "mail from:<me> SIZE=10\n", "", "mail from:<me@home.test> SIZE=10\n"},
		{"no brackets", "RCPT TO: root NOTIFY=NEVER\r\n", "", "RCPT TO: root@home.test NOTIFY=NEVER\r\n"},
		{"with a domain", "RCPT TO:<a@b>\r\n", "", "RCPT TO:<a@b>\r\n"},
		{"null sender", "MAIL FROM:<>\r\n", "", "MAIL FROM:<>\r\n"},
		{"source route", "RCPT TO:<@r:a>\r\n", "", "RCPT TO:<@r:a>\r\n"},
		{"no end bracket", "RCPT TO:<root\r\n", "", "RCPT TO:<root\r\n"},
		{"other command", "VRFY root\r\n", "", "VRFY root\r\n"},
		{"NUL stays", "RCPT TO:<a\x00b>\r\n", "", "RCPT TO:<a\x00b>\r\n"},
		{"after 354: text", "RCPT TO:<root>\r\n", "354 go ahead\r\n", "RCPT TO:<root>\r\n"},
		{"after the data's reply", "RCPT TO:<root>\r\n", "354 go\r\n250 ok\r\n", "RCPT TO:<root@home.test>\r\n"},
		{"354 as a continuation only", "RCPT TO:<root>\r\n", "354-x\r\n250 y\r\n", "RCPT TO:<root@home.test>\r\n"},
		{"a bare 354", "RCPT TO:<root>\r\n", "354\r\n", "RCPT TO:<root>\r\n"},
		{"a bare 354, bare LF", "RCPT TO:<root>\r\n", "354\n", "RCPT TO:<root>\r\n"},
	}
	for _, tc := range tests {
		raw := &pipeConn{in: strings.NewReader(tc.in)}
		c := completePaths(raw, complete)
		io.WriteString(c, tc.reply)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != tc.out {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.out)
		}
		if raw.out.String() != tc.reply {
			t.Errorf("%s: wrote %q", tc.name, raw.out.String())
		}
	}

	// A hostile completion leaves the line alone.
	raw := &pipeConn{in: strings.NewReader("RCPT TO:<root>\r\n")}
	got, _ := io.ReadAll(completePaths(raw, func(a string) string { return a + "@h\r\nRSET" }))
	if string(got) != "RCPT TO:<root>\r\n" {
		t.Errorf("hostile completion: %q", got)
	}

	// A BDAT chunk passes as it is, and the command after it is one.
	raw = &pipeConn{in: strings.NewReader("BDAT 16 LAST\r\nRCPT TO:<root>\r\nRCPT TO:<root>\r\n")}
	got, _ = io.ReadAll(completePaths(raw, complete))
	if want := "BDAT 16 LAST\r\nRCPT TO:<root>\r\nRCPT TO:<root@home.test>\r\n"; string(got) != want {
		t.Errorf("BDAT: %q, want %q", got, want)
	}

	// One line per read, however much the client sent at once.
	raw = &pipeConn{in: strings.NewReader("NOOP\r\nNOOP\r\n")}
	buf := make([]byte, 100)
	if n, _ := completePaths(raw, complete).Read(buf); string(buf[:n]) != "NOOP\r\n" {
		t.Errorf("first read %q", buf[:n])
	}
}
