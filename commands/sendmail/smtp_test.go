package sendmail

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"qbox/commands/spill"
	"qbox/proto"
)

type received struct {
	env  proto.Envelope
	data string
}

// harness runs SMTP sessions in memory: the input from a string, the
// replies into a buffer, a submit that records the message and answers
// as a QMQP K would (250); the real hand-off is tested end to end with
// swaks and a server. Its buffers are reused from one session to the
// next, so that the fuzz target spends its time in the session.
type harness struct {
	t       testing.TB
	in      strings.Reader
	out     bytes.Buffer
	r       *bufio.Reader
	w       *bufio.Writer
	maxSize int64
	rewrite func(string) string
	got     []received
	// commandLimit and textLimit are the session's line limits (0: the
	// real ones).
	commandLimit, textLimit int
}

func newHarness(t testing.TB, maxSize int64) *harness {
	h := &harness{t: t, maxSize: maxSize, rewrite: func(a string) string {
		if !strings.Contains(a, "@") {
			return a + "@default.example"
		}
		return a
	}}
	h.r = bufio.NewReader(&h.in)
	h.w = bufio.NewWriter(&h.out)
	return h
}

func (h *harness) submit(ctx context.Context, env proto.Envelope, data *spill.Buffer) (int, string) {
	b, err := io.ReadAll(data.Reader())
	if err != nil {
		h.t.Fatal(err)
	}
	if int64(len(b)) > h.maxSize {
		h.t.Fatalf("submitted %d bytes over the %d limit", len(b), h.maxSize)
	}
	h.got = append(h.got, received{env, string(b)})
	return 250, "2.0.0 Ok: queued"
}

// run runs one session over input and returns the replies and what was
// handed on.
func (h *harness) run(input string) (string, []received, error) {
	h.in.Reset(input)
	h.r.Reset(&h.in)
	h.out.Reset()
	h.w.Reset(&h.out)
	h.got = h.got[:0]
	s := &smtpSession{
		r:        h.r,
		w:        h.w,
		hostname: "test.example",
		maxSize:  h.maxSize,
		rewrite:  h.rewrite,
		submit:   h.submit,

		commandLimit: h.commandLimit,
		textLimit:    h.textLimit,
	}
	err := s.run(context.Background())
	s.w.Flush()
	return h.out.String(), h.got, err
}

// session runs one SMTP session over input with a fresh harness.
func session(t testing.TB, input string, maxSize int64) (string, []received, error) {
	return newHarness(t, maxSize).run(input)
}

func codes(replies string) []string {
	var c []string
	for _, l := range strings.Split(strings.TrimSuffix(replies, "\r\n"), "\r\n") {
		if len(l) >= 4 && l[3] == ' ' {
			c = append(c, l[:3])
		}
	}
	return c
}

func TestSMTPSessionPipelined(t *testing.T) {
	in := "EHLO client\r\nMAIL FROM:<a@x.example> SIZE=100\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<root>\r\nDATA\r\n" +
		"Subject: s\r\n\r\n..dot\r\n\r\n..\r\nbare lf\nlast\r\n.\r\nQUIT\r\n"
	out, got, err := session(t, in, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Join(codes(out), " "); c != "220 250 250 250 250 354 250 221" {
		t.Fatalf("replies %s:\n%s", c, out)
	}
	if !strings.Contains(out, "250-PIPELINING\r\n") || !strings.Contains(out, "250-SIZE 1048576\r\n") {
		t.Errorf("EHLO reply lacks extensions:\n%s", out)
	}
	if len(got) != 1 {
		t.Fatalf("%d messages", len(got))
	}
	want := received{proto.Envelope{Sender: "a@x.example", Recipients: []string{"b@y.example", "root@default.example"}},
		"Subject: s\n\n.dot\n\n.\nbare lf\nlast\n"}
	if got[0].env.Sender != want.env.Sender || strings.Join(got[0].env.Recipients, ",") != strings.Join(want.env.Recipients, ",") || got[0].data != want.data {
		t.Errorf("got %+v %q, want %+v %q", got[0].env, got[0].data, want.env, want.data)
	}
}

func TestSMTPSessionSequenceErrors(t *testing.T) {
	tests := []struct {
		name, in, codes string
	}{
		{"RCPT before MAIL", "RCPT TO:<a@b>\r\nQUIT\r\n", "220 503 221"},
		{"DATA before MAIL", "DATA\r\nQUIT\r\n", "220 503 221"},
		{"DATA without RCPT", "MAIL FROM:<>\r\nDATA\r\nQUIT\r\n", "220 250 554 221"},
		{"nested MAIL", "MAIL FROM:<a@b>\r\nMAIL FROM:<c@d>\r\nQUIT\r\n", "220 250 503 221"},
		{"RSET clears", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nDATA\r\nQUIT\r\n", "220 250 250 250 503 221"},
		{"bad syntax", "MAIL FROM a@b\r\nMAIL FROM:<a@b\r\nRCPT TO:<>\r\nQUIT\r\n", "220 501 501 503 221"},
		{"HELO needs a name", "HELO\r\nHELO x\r\nQUIT\r\n", "220 501 250 221"},
		{"others", "NOOP\r\nVRFY x\r\nEXPN x\r\nHELP\r\nFROB\r\nSTARTTLS\r\nQUIT\r\n", "220 250 252 502 214 500 502 221"},
		{"declared size too big", "MAIL FROM:<a@b> SIZE=999999\r\nQUIT\r\n", "220 552 221"},
		{"lenient MAIL without brackets", "MAIL FROM: a@b\r\nRCPT TO: c@d\r\nQUIT\r\n", "220 250 250 221"},
	}
	for _, tc := range tests {
		out, got, err := session(t, tc.in, 1000)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if c := strings.Join(codes(out), " "); c != tc.codes {
			t.Errorf("%s: replies %s, want %s:\n%s", tc.name, c, tc.codes, out)
		}
		if len(got) != 0 {
			t.Errorf("%s: a message was submitted", tc.name)
		}
	}
}

func TestSMTPSessionLimits(t *testing.T) {
	// A command line over the limit is refused and the session goes on.
	out, _, _ := session(t, "NOOP "+strings.Repeat("x", maxCommandLine+10)+"\r\nNOOP\r\nQUIT\r\n", 1000)
	if c := strings.Join(codes(out), " "); c != "220 500 250 221" {
		t.Errorf("long command: %s\n%s", c, out)
	}
	// A message over the size limit is read to its end and refused; the
	// next one in the same session goes through.
	big := "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("0123456789\r\n", 200) + ".\r\n"
	small := "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n"
	out, got, _ := session(t, big+small, 1000)
	if c := strings.Join(codes(out), " "); c != "220 250 250 354 552 250 250 354 250 221" {
		t.Errorf("size limit: %s\n%s", c, out)
	}
	if len(got) != 1 || got[0].data != "small\n" {
		t.Errorf("submitted %+v", got)
	}
	// Too many bad commands end the session.
	out, _, _ = session(t, strings.Repeat("BAD\r\n", maxBadCommands+5), 1000)
	if !strings.HasSuffix(out, "421 4.7.0 too many errors, closing\r\n") || strings.Count(out, "500 ") != maxBadCommands {
		t.Errorf("too many errors:\n%s", out)
	}
}

// A client that goes away inside DATA submits nothing.
func TestSMTPSessionEOFInData(t *testing.T) {
	_, got, err := session(t, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: cut\r\n", 1000)
	if err == nil || len(got) != 0 {
		t.Fatalf("err %v, %d submitted", err, len(got))
	}
	// EOF between commands is a normal end.
	if _, _, err := session(t, "NOOP\r\n", 1000); err != nil {
		t.Fatal(err)
	}
}

// maxFuzzInput is the longest input FuzzSMTPSession runs.
const maxFuzzInput = 512

// badReplyLine returns the first reply line that is not "ddd-text" or
// "ddd text" with a code from 200 to 599 and printable ASCII text.
func badReplyLine(out string) (string, bool) {
	for len(out) > 0 {
		i := strings.Index(out, "\r\n")
		if i < 0 {
			return out, true // no CRLF at the end
		}
		l := out[:i]
		out = out[i+2:]
		if len(l) < 4 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' || (l[3] != ' ' && l[3] != '-') {
			return l, true
		}
		for j := 4; j < len(l); j++ {
			if l[j] < ' ' || l[j] > '~' {
				return l, true
			}
		}
	}
	return "", false
}

// FuzzSMTPSession: any input ends without a panic; every reply line is a
// well-formed SMTP reply; nothing over the size limit is submitted; every
// envelope handed on passes the address check; and no input gets more
// messages through than it has CRLF "." CRLF sequences (a bare-LF dot
// never ends a message: no smuggling).
//
// Speed: the session runs in memory with buffers reused across inputs,
// no process, goroutine or timer, and with line limits of 64 and 128
// bytes, so that inputs of at most maxFuzzInput bytes reach every path
// (a long line, a message over the size limit). Longer inputs are
// skipped: they would add no path, and the fuzzer's minimization of an
// interesting input takes time quadratic in its length (a 3,000-byte
// one stalled all workers for the whole 60 s -fuzzminimizetime).
func FuzzSMTPSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\nMAIL FROM:<>\nRCPT TO:<root>\nDATA\n..\n.\n",
		"MAIL FROM:<@route,@r2:a@b> SIZE=1\r\nRCPT TO:<\x00>\r\n",
		"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\nMAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\ny\r\n.\r\n",
		"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\nRSET\r\n.\r\n",
		"DATA\r\n", "\r\n\r\n", ".\r\n", strings.Repeat("A", 100) + "\r\nQUIT\r\n",
		"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("long line ", 20) + "\r\n.\r\n",
	} {
		f.Add(seed)
	}
	var h *harness
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > maxFuzzInput {
			return
		}
		if h == nil {
			h = newHarness(t, 128)
			h.commandLimit, h.textLimit = 64, 128
		}
		h.t = t
		out, got, _ := h.run(in)
		if l, bad := badReplyLine(out); bad {
			t.Fatalf("bad reply line %q", l)
		}
		if ends := strings.Count(in, "\r\n.\r\n"); len(got) > ends {
			t.Fatalf("%d messages submitted from an input with %d CRLF.CRLF", len(got), ends)
		}
		for _, m := range got {
			if err := proto.CheckEnvelope(m.env); err != nil || len(m.env.Recipients) == 0 {
				t.Fatalf("envelope %+v submitted: %v", m.env, err)
			}
		}
	})
}

// Only CRLF "." CRLF ends DATA (Postfix's smtpd_forbid_bare_newline =
// normalize): a "." line after or before a bare LF is text, so a second
// transaction hidden in the data is never run. Before, "\n.\n" ended the
// message and the rest was read as commands: two messages.
func TestSMTPSessionSmuggling(t *testing.T) {
	smuggled := "MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\nforged\r\n"
	for _, dot := range []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\n.\r\r\n"} {
		in := "EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\nreal" + dot + smuggled + ".\r\nQUIT\r\n"
		out, got, err := session(t, in, 1<<20)
		if err != nil {
			t.Fatalf("%q: %v", dot, err)
		}
		if c := strings.Join(codes(out), " "); c != "220 250 250 250 354 250 221" {
			t.Errorf("%q: replies %s:\n%s", dot, c, out)
		}
		if len(got) != 1 {
			t.Fatalf("%q: %d messages submitted, want 1: %+v", dot, len(got), got)
		}
		if r := got[0].env.Recipients; len(r) != 1 || r[0] != "b@x.example" || !strings.Contains(got[0].data, "RCPT TO:<victim@x.example>\n") {
			t.Errorf("%q: submitted %+v", dot, got[0])
		}
	}
	// The dot line that ends nothing is text, dot-unstuffed like any
	// other; bare LF line ends in the text are line ends.
	_, got, _ := session(t, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\none\ntwo\n.\nthree\r\n.\r\n", 1000)
	if len(got) != 1 || got[0].data != "one\ntwo\n\nthree\n" {
		t.Errorf("submitted %+v", got)
	}
	// A client that ends its data with a bare-LF dot only sends nothing.
	_, got, err := session(t, "HELO x\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nhi\n.\nQUIT\n", 1000)
	if len(got) != 0 || err == nil {
		t.Errorf("err %v, submitted %+v", err, got)
	}
	// The CRLF before the dot may be the DATA command's own.
	_, got, _ = session(t, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\nQUIT\r\n", 1000)
	if len(got) != 1 || got[0].data != "" {
		t.Errorf("empty message: submitted %+v", got)
	}
}

// MAIL and RCPT refuse an address holding CR, LF or NUL, and the empty
// recipient, with a 5xx to that command, also when the default host the
// environment adds holds them.
func TestSMTPSessionRefusesAddressBytes(t *testing.T) {
	tests := []struct{ name, in, codes string }{
		{"CR in MAIL", "MAIL FROM:<a\rb@x>\r\nQUIT\r\n", "220 553 221"},
		{"NUL in MAIL", "MAIL FROM:<a\x00b@x>\r\nQUIT\r\n", "220 553 221"},
		{"NUL in RCPT", "MAIL FROM:<a@x>\r\nRCPT TO:<c\x00d@x>\r\nRCPT TO:<c\rd@x>\r\nQUIT\r\n", "220 250 553 553 221"},
		{"empty RCPT", "MAIL FROM:<a@x>\r\nRCPT TO:<>\r\nDATA\r\nQUIT\r\n", "220 250 553 554 221"},
	}
	for _, tc := range tests {
		out, got, _ := session(t, tc.in, 1000)
		if c := strings.Join(codes(out), " "); c != tc.codes {
			t.Errorf("%s: replies %s, want %s:\n%s", tc.name, c, tc.codes, out)
		}
		if len(got) != 0 {
			t.Errorf("%s: submitted %+v", tc.name, got)
		}
	}
	h := newHarness(t, 1000)
	h.rewrite = func(a string) string { return a + "@host\nX-Injected: y" }
	out, got, _ := h.run("MAIL FROM:<me>\r\nRCPT TO:<you>\r\nQUIT\r\n")
	if c := strings.Join(codes(out), " "); c != "220 553 503 221" || len(got) != 0 {
		t.Errorf("default host with LF: replies %s, submitted %+v:\n%s", c, got, out)
	}
}
