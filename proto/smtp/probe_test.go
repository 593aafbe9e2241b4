package smtp

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

// IsReplyStart is the regexp it replaced, for every input.
func FuzzIsReplyStart(f *testing.F) {
	re := regexp.MustCompile(`^[0-9]{3}([ -]|\r?$)`)
	for _, s := range []string{"220 x", "220-", "220", "220\r", "220\r\n", "220\n", "22", "2a0 ", "2200", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := IsReplyStart(b), re.Match(b); got != want {
			t.Fatalf("IsReplyStart(%q) = %v, the regexp says %v", b, got, want)
		}
	})
}

// FuzzSniffGreeting: any bytes; a greeting's code is its first three
// digits, and every line reported is printable and bounded.
func FuzzSniffGreeting(f *testing.F) {
	for _, s := range []string{"220 mx ESMTP\r\n", "220-a\r\n220 b\r\n", "554 no\r\n", "220", "220-x\n", "\x00\xff", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		code, lines, complete, ok := SniffGreeting(b)
		if ok != IsReplyStart(b) {
			t.Fatalf("ok %v for %q", ok, b)
		}
		if !ok {
			return
		}
		if len(lines) == 0 || !strings.HasPrefix(string(b), lines[0][:3]) || code/100 != int(b[0]-'0') {
			t.Fatalf("%d %q from %q", code, lines, b)
		}
		if complete && !strings.Contains(string(b), "\n") {
			t.Fatalf("complete without a line end: %q", b)
		}
		for _, l := range lines {
			if len(l) > maxSniffLine {
				t.Fatalf("line of %d bytes", len(l))
			}
			for _, c := range []byte(l) {
				if c < 32 || c > 126 {
					t.Fatalf("unprintable %q", l)
				}
			}
		}
	})
}

func TestSniffGreeting(t *testing.T) {
	for _, c := range []struct {
		in       string
		code     int
		lines    string
		complete bool
	}{
		{"220 mx ESMTP\r\n", 220, "220 mx ESMTP", true},
		{"220-mx\r\n", 220, "220-mx", false},
		{"220-mx\r\n220 ok\r\nextra", 220, "220-mx|220 ok", true},
		{"220 mx", 220, "220 mx", false},
		{"554 5.7.1 no\n", 554, "554 5.7.1 no", true},
		{"220 \x01\r\n", 220, "220 ?", true},
	} {
		code, lines, complete, ok := SniffGreeting([]byte(c.in))
		if !ok || code != c.code || strings.Join(lines, "|") != c.lines || complete != c.complete {
			t.Errorf("SniffGreeting(%q) = %d %q %v %v", c.in, code, lines, complete, ok)
		}
	}
	if _, _, _, ok := SniffGreeting([]byte("SSH-2.0\r\n")); ok {
		t.Error("SSH taken for SMTP")
	}
}

// sendOne runs SendOne against addr and returns the dialogue as lines.
func sendOne(t *testing.T, addr string, m proto.Message) (proto.Result, []string, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &Client{Helo: "client.example", CommandTimeout: 20 * time.Second, TLS: TLSNone}
	var dialogue []string
	r, err := c.SendOne(context.Background(), conn, "", m, func(e Exchange) {
		dialogue = append(dialogue, strings.TrimSpace(e.Command+" "+strconv.Itoa(e.Code)+" "+strings.Join(e.Lines, " / ")))
	})
	return r, dialogue, err
}

// SendOne reports every reply with the command it answers, with and
// without PIPELINING (MAIL, RCPT and DATA in one batch, their replies
// read in order), the message's dot-stuffed data not taken for commands,
// and QUIT after the reply to the end of the data.
func TestSendOneDialogue(t *testing.T) {
	for _, ext := range [][]string{nil, {"PIPELINING"}} {
		srv := &scriptServer{ehlo: ext}
		addr := startServer(t, srv.handle)
		msg := []byte("Subject: x\n\n.\nDATA\nQUIT\n..\n")
		r, dialogue, err := sendOne(t, addr, bytesMessage("s@example.test", msg, "r@example.test"))
		if err != nil || r.Reply.Status != proto.OK || !r.FromServer || r.Stage != proto.StageMessage {
			t.Fatalf("%v: %+v, %v", ext, r, err)
		}
		ehlo := "EHLO 250 scripted"
		for _, e := range ext {
			ehlo += " / " + e
		}
		want := []string{"greeting 220 scripted ESMTP", ehlo, "MAIL 250 2.1.0 sender ok", "RCPT 250 2.1.5 recipient ok",
			"DATA 354 go on", "end of data 250 2.0.0 queued", "QUIT 221 bye"}
		if strings.Join(dialogue, "\n") != strings.Join(want, "\n") {
			t.Errorf("%v: dialogue\n%s\nwant\n%s", ext, strings.Join(dialogue, "\n"), strings.Join(want, "\n"))
		}
	}
}

// A refused recipient is SendOne's answer, a D from the server; a 5xx
// greeting is a D too (Send would make it a Z to retry).
func TestSendOneRefusals(t *testing.T) {
	srv := &scriptServer{ehlo: []string{"PIPELINING"}, rcpt: func(string) string { return "550 5.1.1 no such user" }}
	addr := startServer(t, srv.handle)
	r, dialogue, err := sendOne(t, addr, bytesMessage("s@example.test", []byte("x\n"), "r@example.test"))
	if err != nil || r.Reply.Status != proto.Permanent || r.Stage != proto.StageRcpt || r.Reply.Text != "550 5.1.1 no such user" {
		t.Fatalf("%+v, %v", r, err)
	}
	if d := strings.Join(dialogue, "\n"); !strings.Contains(d, "RCPT 550 5.1.1 no such user") || !strings.HasSuffix(d, "QUIT 221 bye") {
		t.Errorf("dialogue:\n%s", d)
	}

	addr = startServer(t, func(p *peer) {
		p.send("554 5.7.1 not you\r\n")
		p.line()
	})
	r, dialogue, err = sendOne(t, addr, bytesMessage("s@example.test", []byte("x\n"), "r@example.test"))
	if err == nil || r.Reply.Status != proto.Permanent || !r.FromServer || r.Stage != proto.StageGreeting ||
		!strings.HasPrefix(r.Reply.Text, "554") || strings.Join(dialogue, "\n") != "greeting 554 5.7.1 not you" {
		t.Fatalf("%+v, %v, %q", r, err, dialogue)
	}

	// An envelope Send refuses: nothing is written.
	r, dialogue, err = sendOne(t, addr, bytesMessage("s@example.test", []byte("x\n"), "r\r\n@example.test"))
	if err == nil || r.FromServer || len(dialogue) != 0 {
		t.Fatalf("%+v, %v, %q", r, err, dialogue)
	}
}

// A server that sends replies nobody asked for is reported once, and the
// session ends on it.
func TestSendOneRepliesToNothing(t *testing.T) {
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		p.line()
		p.send("250 hi\r\n" + strings.Repeat("250 unasked\r\n", 500))
		p.line()
	})
	r, dialogue, err := sendOne(t, addr, bytesMessage("s@example.test", []byte("x\n"), "r@example.test"))
	if !errors.Is(err, proto.ErrRemoteViolation) || r.FromServer || r.Reply.Status != proto.Temporary {
		t.Fatalf("%+v, %v", r, err)
	}
	want := "greeting 220 hi\nEHLO 250 hi\nreply to nothing 250 unasked"
	if d := strings.Join(dialogue, "\n"); d != want {
		t.Fatalf("dialogue:\n%s\nwant\n%s", d, want)
	}
}
