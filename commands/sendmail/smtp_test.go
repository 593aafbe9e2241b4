package sendmail

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"

	"qbox/commands/spill"
	"qbox/proto"
)

type received struct {
	env  proto.Envelope
	data string
}

// session runs an SMTP session over input and returns the replies and
// what was handed on. Its submit answers as a QMQP K would (250); the
// real hand-off is tested end to end with swaks and Postfix.
func session(t testing.TB, input string, maxSize int64) (string, []received, error) {
	var out bytes.Buffer
	var got []received
	s := &smtpSession{
		r:        bufio.NewReader(strings.NewReader(input)),
		w:        bufio.NewWriter(&out),
		hostname: "test.example",
		maxSize:  maxSize,
		rewrite: func(a string) string {
			if !strings.Contains(a, "@") {
				return a + "@default.example"
			}
			return a
		},
		submit: func(ctx context.Context, env proto.Envelope, data *spill.Buffer) (int, string) {
			b, err := io.ReadAll(data.Reader())
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) > maxSize {
				t.Fatalf("submitted %d bytes over the %d limit", len(b), maxSize)
			}
			got = append(got, received{env, string(b)})
			return 250, "2.0.0 Ok: queued"
		},
	}
	err := s.run(context.Background())
	s.w.Flush()
	return out.String(), got, err
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

var replyLine = regexp.MustCompile(`^[2345]\d\d[ -][ -~]*$`)

// FuzzSMTPSession: any input ends without a panic, every reply line is a
// well-formed SMTP reply, and nothing over the size limit is submitted.
func FuzzSMTPSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\nMAIL FROM:<>\nRCPT TO:<root>\nDATA\n..\n.\n",
		"MAIL FROM:<@route,@r2:a@b> SIZE=1\r\nRCPT TO:<\x00>\r\n",
		"DATA\r\n", "\r\n\r\n", ".\r\n", strings.Repeat("A", 3000) + "\r\nQUIT\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, _, _ := session(t, in, 512)
		for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			if !replyLine.MatchString(l) {
				t.Fatalf("bad reply line %q", l)
			}
		}
	})
}
