package sendmail

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"qbox/commands/spill"
	"qbox/proto"
	"qbox/proto/server"
)

type received struct {
	env  proto.Envelope
	data string
}

// harness runs -bs sessions in memory: bsSession over the input from a
// string, the replies into a buffer, a submit that records the message
// and answers as a QMQP K would (250); the real hand-off is tested end to
// end with a server and with swaks.
type harness struct {
	t       testing.TB
	limits  server.Limits
	rewrite func(string) string
	got     []received
	out     bytes.Buffer
	in      strings.Reader
}

func newHarness(t testing.TB, maxSize int64) *harness {
	return &harness{t: t, limits: bsLimits(maxSize), rewrite: func(a string) string {
		if !strings.Contains(a, "@") {
			return a + "@default.example"
		}
		return a
	}}
}

func (h *harness) submit(_ context.Context, env proto.Envelope, data *spill.Buffer) proto.Reply {
	b, err := io.ReadAll(data.Reader())
	if err != nil {
		h.t.Fatal(err)
	}
	if int64(len(b)) > h.limits.MaxMessageSize {
		h.t.Fatalf("submitted %d bytes over the %d limit", len(b), h.limits.MaxMessageSize)
	}
	h.got = append(h.got, received{env, string(b)})
	return proto.K("Ok: queued")
}

// run runs one session over input and returns the replies, what was
// handed on and the session's error.
func (h *harness) run(input string) (string, []received, error) {
	h.got = nil
	h.out.Reset()
	h.in.Reset(input)
	s := bsSession{hostname: "test.example", limits: h.limits, rewrite: h.rewrite, submit: h.submit}
	err := s.serve(context.Background(), &plainConn{in: &h.in, out: &h.out})
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
	if !strings.Contains(out, "-PIPELINING\r\n") || !strings.Contains(out, "SIZE 1048576\r\n") || !strings.Contains(out, "ENHANCEDSTATUSCODES\r\n") {
		t.Errorf("EHLO reply lacks extensions:\n%s", out)
	}
	if !strings.HasPrefix(out, "220 test.example ") {
		t.Errorf("greeting does not name the host:\n%s", out)
	}
	if !strings.Contains(out, "250 2.0.0 Ok: queued\r\n") {
		t.Errorf("the reply to the data is not the submit's:\n%s", out)
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

// go-smtp's state machine and its reply codes: 502 for a command out of
// sequence (the hand-written server said 503, and 554 for DATA without a
// recipient), MAIL before HELO or EHLO refused (RFC 5321 4.1.4 lets a
// server insist on the greeting), a second MAIL inside a transaction
// refused with 503 (proto/smtp's server: it must not become the sender of
// recipients already given), HELP not implemented.
func TestSMTPSessionSequenceErrors(t *testing.T) {
	tests := []struct {
		name, in, codes string
	}{
		{"MAIL before HELO", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nQUIT\r\n", "220 502 502 502 221"},
		{"RCPT before MAIL", "HELO x\r\nRCPT TO:<a@b>\r\nQUIT\r\n", "220 250 502 221"},
		{"DATA before MAIL", "HELO x\r\nDATA\r\nQUIT\r\n", "220 250 502 221"},
		{"DATA without RCPT", "HELO x\r\nMAIL FROM:<>\r\nDATA\r\nQUIT\r\n", "220 250 250 502 221"},
		{"second MAIL", "HELO x\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<e@f>\r\nQUIT\r\n", "220 250 250 503 221"},
		{"RSET clears", "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nDATA\r\nQUIT\r\n", "220 250 250 250 250 502 221"},
		{"bad syntax", "HELO x\r\nMAIL FROM a@b\r\nMAIL FROM:<a@b\r\nRCPT TO:<>\r\nQUIT\r\n", "220 250 501 501 502 221"},
		{"HELO needs a name", "HELO\r\nHELO x\r\nQUIT\r\n", "220 501 250 221"},
		{"others", "HELO x\r\nNOOP\r\nVRFY x\r\nEXPN x\r\nHELP\r\nFROB\r\nSTARTTLS\r\nQUIT\r\n", "220 250 250 252 502 502 500 502 221"},
		{"declared size too big", "HELO x\r\nMAIL FROM:<a@b> SIZE=999999\r\nQUIT\r\n", "220 250 552 221"},
		{"lenient MAIL without brackets", "HELO x\r\nMAIL FROM: a@b\r\nRCPT TO: c@d\r\nQUIT\r\n", "220 250 250 250 221"},
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

// A bare sender or recipient gets the default host (qmail-inject's
// rewrite), bracketed or not, Postmaster too; an address with a domain
// stays as it was sent.
func TestSMTPSessionCompletesBareAddresses(t *testing.T) {
	in := "HELO x\r\nMAIL FROM:<me>\r\nRCPT TO: root\r\nRCPT TO:<Postmaster>\r\nrcpt to:<you@there.example>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"
	out, got, err := session(t, in, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Join(codes(out), " "); c != "220 250 250 250 250 250 354 250 221" {
		t.Fatalf("replies %s:\n%s", c, out)
	}
	if len(got) != 1 || got[0].env.Sender != "me@default.example" ||
		strings.Join(got[0].env.Recipients, " ") != "root@default.example Postmaster@default.example you@there.example" {
		t.Fatalf("submitted %+v", got)
	}
	// The null sender stays null.
	_, got, _ = session(t, "HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<a>\r\nDATA\r\nx\r\n.\r\n", 1000)
	if len(got) != 1 || got[0].env.Sender != "" || got[0].env.Recipients[0] != "a@default.example" {
		t.Fatalf("null sender: submitted %+v", got)
	}
}

// The completion works on command lines only: message text that looks
// like MAIL or RCPT, in DATA or in a BDAT chunk, reaches the message
// byte for byte.
func TestSMTPSessionCompletionLeavesTextAlone(t *testing.T) {
	text := "RCPT TO:<x>\r\nMAIL FROM:<y>\r\nBDAT 5\r\n"
	in := "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + text + ".\r\n" +
		"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT " + strconv.Itoa(len(text)) + " LAST\r\n" + text +
		"MAIL FROM:<a@b>\r\nRCPT TO:<c>\r\nDATA\r\nz\r\n.\r\nQUIT\r\n"
	out, got, err := session(t, in, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Join(codes(out), " "); c != "220 250 250 250 354 250 250 250 250 250 250 354 250 221" {
		t.Fatalf("replies %s:\n%s", c, out)
	}
	want := strings.ReplaceAll(text, "\r\n", "\n")
	if len(got) != 3 || got[0].data != want || got[1].data != want {
		t.Fatalf("submitted %+v, want twice %q", got, want)
	}
	// The RCPT reply no longer repeats the address (250 2.1.5 ok): the
	// third message's envelope shows the completion.
	if r := got[2].env.Recipients; len(r) != 1 || r[0] != "c@default.example" {
		t.Errorf("the command after the chunk was not completed: recipients %q", r)
	}
}

func TestSMTPSessionLimits(t *testing.T) {
	// A line over the limit ends the session with 500 (go-smtp; the
	// hand-written server refused the line and read on).
	out, _, _ := session(t, "HELO x\r\nNOOP "+strings.Repeat("x", bsMaxLine+10)+"\r\nNOOP\r\nQUIT\r\n", 1000)
	if c := strings.Join(codes(out), " "); c != "220 250 500" {
		t.Errorf("long command: %s\n%s", c, out)
	}
	// A message over the size limit is read to its end and refused; the
	// next one in the same session goes through.
	big := "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("0123456789\r\n", 200) + ".\r\n"
	small := "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n"
	out, got, _ := session(t, "HELO x\r\n"+big+small, 1000)
	if c := strings.Join(codes(out), " "); c != "220 250 250 250 354 552 250 250 354 250 221" {
		t.Errorf("size limit: %s\n%s", c, out)
	}
	if len(got) != 1 || got[0].data != "small\n" {
		t.Errorf("submitted %+v", got)
	}
	// Too many bad commands end the session (go-smtp: after the fourth,
	// with 500; the hand-written server took twenty, then 421).
	out, _, _ = session(t, strings.Repeat("BAD\r\n", 30), 1000)
	if !strings.HasSuffix(out, "500 5.5.1 Too many errors. Quiting now\r\n") || strings.Count(out, "\r\n") > 10 {
		t.Errorf("too many errors:\n%s", out)
	}
	// Recipients beyond the limit get 452, and the message goes to the
	// others.
	var rcpts strings.Builder
	for i := 0; i <= bsMaxRecipients; i++ {
		fmt.Fprintf(&rcpts, "RCPT TO:<r%d@x>\r\n", i)
	}
	out, got, _ = session(t, "HELO x\r\nMAIL FROM:<a@b>\r\n"+rcpts.String()+"DATA\r\nx\r\n.\r\n", 1000)
	if c := codes(out); len(c) != bsMaxRecipients+6 || c[len(c)-3] != "452" {
		t.Errorf("%d replies, the last RCPT's %s", len(c), c[len(c)-3])
	}
	if len(got) != 1 || len(got[0].env.Recipients) != bsMaxRecipients {
		t.Errorf("submitted %d messages", len(got))
	}
}

// A client that goes away inside DATA submits nothing, and the session
// ends with an error (sendmail -bs exits with the input status).
func TestSMTPSessionEOFInData(t *testing.T) {
	_, got, err := session(t, "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: cut\r\n", 1000)
	if err == nil || len(got) != 0 {
		t.Fatalf("err %v, %d submitted", err, len(got))
	}
	// EOF between commands is a normal end.
	if _, _, err := session(t, "NOOP\r\n", 1000); err != nil {
		t.Fatal(err)
	}
}

// messageEnds counts what can end a message in a session's input: CRLF
// "." CRLF, a "." CRLF line right after a DATA command ended by a bare LF
// (a command line may end so; its LF is the line end before the dot),
// and BDAT commands. A "." next to a bare LF inside the text ends nothing.
func messageEnds(in string) int {
	ends := strings.Count(in, "\r\n.\r\n") + strings.Count(strings.ToUpper(in), "BDAT")
	lines := strings.Split(in, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if strings.EqualFold(lines[i], "DATA") && lines[i+1] == ".\r" {
			ends++
		}
	}
	return ends
}

// maxFuzzInput is the longest input FuzzSMTPSession runs.
const maxFuzzInput = 512

// FuzzSMTPSession: any input ends without a panic; every reply is a line
// ending in CRLF with a code from 200 to 599 (go-smtp echoes what a
// client put in its HELO, so the text is not checked further); nothing
// over the size limit is submitted; every envelope handed on passes the
// address check; and no input gets more messages through than it has
// CRLF "." CRLF sequences and BDAT commands (a bare-LF dot never ends a
// message: no smuggling).
//
// Speed: the session runs in memory, with a line limit of 128 bytes and
// a size limit of 256, so that short inputs reach every path (a long
// line, a message over the size limit). Longer inputs are skipped: they
// would add no path, and the fuzzer's minimization of an interesting
// input takes time quadratic in its length.
func FuzzSMTPSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\nMAIL FROM:<>\nRCPT TO:<root>\nDATA\n..\n.\n",
		"HELO x\r\nMAIL FROM:<@route,@r2:a> SIZE=1\r\nRCPT TO:<\x00>\r\nRCPT TO: b\r\n",
		"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\nMAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\ny\r\n.\r\n",
		"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\nRSET\r\n.\r\n",
		"EHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<c>\r\nBDAT 13\r\nRCPT TO:<x>\r\nBDAT 0 LAST\r\n",
		"DATA\r\n", "\r\n\r\n", ".\r\n", strings.Repeat("A", 100) + "\r\nQUIT\r\n",
		"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("long line ", 20) + "\r\n.\r\n",
	} {
		f.Add(seed)
	}
	var h *harness
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > maxFuzzInput {
			return
		}
		if h == nil {
			h = newHarness(t, 256)
			h.limits.MaxLine = 128
		}
		h.t = t
		out, got, _ := h.run(in)
		if l, bad := badReply(out); bad {
			t.Fatalf("bad reply line %q", l)
		}
		if ends := messageEnds(in); len(got) > ends {
			t.Fatalf("%d messages submitted from an input with %d CRLF.CRLF and BDAT", len(got), ends)
		}
		for _, m := range got {
			if err := proto.CheckEnvelope(m.env); err != nil || len(m.env.Recipients) == 0 {
				t.Fatalf("envelope %+v submitted: %v", m.env, err)
			}
		}
	})
}

// badReply returns the first reply line that does not end in CRLF, holds
// another LF, or does not start with a code from 200 to 599 and a space
// or hyphen.
func badReply(out string) (string, bool) {
	for _, l := range strings.SplitAfter(out, "\r\n") {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\r\n") || strings.Contains(l[:len(l)-2], "\n") ||
			len(l) < 6 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' || (l[3] != ' ' && l[3] != '-') {
			return l, true
		}
	}
	return "", false
}

// Only CRLF "." CRLF ends DATA (Postfix's smtpd_forbid_bare_newline =
// normalize): a "." line after or before a bare LF is text, so a second
// transaction hidden in the data is never run.
func TestSMTPSessionSmuggling(t *testing.T) {
	smuggled := "MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim>\r\nDATA\r\nforged\r\n"
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
		// The smuggled RCPT is text: not completed, not a recipient.
		if r := got[0].env.Recipients; len(r) != 1 || r[0] != "b@x.example" || !strings.Contains(got[0].data, "RCPT TO:<victim>\n") {
			t.Errorf("%q: submitted %+v", dot, got[0])
		}
	}
	// The dot line that ends nothing is text, kept as it was (go-smtp
	// unstuffs a dot only after CRLF; the hand-written server took it
	// away); bare LF line ends in the text are line ends.
	_, got, _ := session(t, "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\none\ntwo\n.\nthree\r\n.\r\n", 1000)
	if len(got) != 1 || got[0].data != "one\ntwo\n.\nthree\n" {
		t.Errorf("submitted %+v", got)
	}
	// A client that ends its data with a bare-LF dot only sends nothing.
	_, got, err := session(t, "HELO x\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nhi\n.\nQUIT\n", 1000)
	if len(got) != 0 || err == nil {
		t.Errorf("err %v, submitted %+v", err, got)
	}
	// The CRLF before the dot may be the DATA command's own.
	_, got, _ = session(t, "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\nQUIT\r\n", 1000)
	if len(got) != 1 || got[0].data != "" {
		t.Errorf("empty message: submitted %+v", got)
	}
}

// MAIL and RCPT refuse an address holding CR, LF or NUL with 553, and the
// empty recipient with 501 (go-smtp's parser; it was 553), also when the
// default host or domain the environment adds holds them: a bare address
// is then not completed (501, go-smtp takes no path without a domain),
// one that would get a hostile default domain is refused (553).
func TestSMTPSessionRefusesAddressBytes(t *testing.T) {
	tests := []struct{ name, in, codes string }{
		{"CR in MAIL", "HELO x\r\nMAIL FROM:<a\rb@x>\r\nQUIT\r\n", "220 250 553 221"},
		{"NUL in MAIL", "HELO x\r\nMAIL FROM:<a\x00b@x>\r\nQUIT\r\n", "220 250 553 221"},
		{"NUL and CR in RCPT", "HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<c\x00d@x>\r\nRCPT TO:<c\rd@x>\r\nRCPT TO:<e\x00>\r\nQUIT\r\n", "220 250 250 553 553 501 221"},
		{"empty RCPT", "HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<>\r\nDATA\r\nQUIT\r\n", "220 250 250 501 502 221"},
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
	h.rewrite = func(a string) string {
		if !strings.Contains(a, "@") {
			return a + "@host\nX-Injected: y"
		}
		return a
	}
	out, got, _ := h.run("HELO x\r\nMAIL FROM:<me>\r\nMAIL FROM:<me@x.test>\r\nRCPT TO:<you>\r\nQUIT\r\n")
	if c := strings.Join(codes(out), " "); c != "220 250 501 250 501 221" || len(got) != 0 || strings.Contains(out, "X-Injected") {
		t.Errorf("default host with LF: replies %s, submitted %+v:\n%s", c, got, out)
	}
	h.rewrite = func(a string) string {
		if !strings.Contains(a[strings.LastIndexByte(a, '@')+1:], ".") {
			return a + ".dom\rX"
		}
		return a
	}
	out, got, _ = h.run("HELO x\r\nMAIL FROM:<me@x.test>\r\nRCPT TO:<you@host>\r\nRCPT TO:<ok@x.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
	if c := strings.Join(codes(out), " "); c != "220 250 250 553 250 354 250 221" || len(got) != 1 || strings.Join(got[0].env.Recipients, " ") != "ok@x.test" {
		t.Errorf("default domain with CR: replies %s, submitted %+v:\n%s", c, got, out)
	}
}
