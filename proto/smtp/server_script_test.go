package smtp_test

// Scripted conversations with the SMTP server: each test writes a whole
// pipelined conversation at once, as a hostile or hurried client would,
// and checks every reply and what reached the Backend. commands/serve
// runs the same kinds of conversation end to end, through a real store.

import (
	"bufio"
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/server"
	"qbox/proto/smtp"
	"qbox/proto/testkit/servetest"
)

// recorder is a Backend that keeps every committed message: its
// envelope and its text as the server hands it over (LF line ends).
type recorder struct {
	mu     sync.Mutex
	stored []storedMessage
}

type storedMessage struct {
	env  proto.Envelope
	text string
}

type recorderDelivery struct {
	r   *recorder
	buf strings.Builder
}

func (r *recorder) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return &recorderDelivery{r: r}, nil
}
func (d *recorderDelivery) Write(p []byte) (int, error) { return d.buf.Write(p) }
func (d *recorderDelivery) Abort()                      {}
func (d *recorderDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	d.r.stored = append(d.r.stored, storedMessage{env: env, text: d.buf.String()})
	return proto.Repeat(len(env.Recipients), proto.K("ok"))
}

// messages returns what was committed so far.
func (r *recorder) messages() []storedMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]storedMessage(nil), r.stored...)
}

// converse writes input to the server at addr in one go and returns every
// final reply line (continuation lines, EHLO's, dropped) the server wrote
// until it closed the connection. input ends with QUIT, so the server has
// read all of it before it closes.
func converse(t *testing.T, addr, input string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute)) // a guard, never reached when all is well
	if _, err := c.Write([]byte(input)); err != nil {
		t.Fatal(err)
	}
	var replies []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if l := sc.Text(); len(l) < 4 || l[3] != '-' {
			replies = append(replies, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading replies: %v (so far %q)", err, replies)
	}
	return replies
}

// extensions returns what the server's EHLO reply lists.
func extensions(t *testing.T, addr string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write([]byte("EHLO c.test\r\nQUIT\r\n"))
	var ext []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		// After the greeting: 250-name, then 250-EXT ... 250 EXT.
		if l := sc.Text(); strings.HasPrefix(l, "250") && len(l) > 4 {
			ext = append(ext, l[4:])
		}
	}
	if len(ext) < 2 {
		t.Fatalf("EHLO reply %q", ext)
	}
	return ext[1:]
}

// checkReplies compares replies with the prefixes want, one for one.
func checkReplies(t *testing.T, what string, replies, want []string) {
	t.Helper()
	if len(replies) != len(want) {
		t.Fatalf("%s: %d replies %q, want %d: %q", what, len(replies), replies, len(want), want)
	}
	for i := range want {
		if !strings.HasPrefix(replies[i], want[i]) {
			t.Errorf("%s: reply %d is %q, want %q", what, i, replies[i], want[i])
		}
	}
}

// SMTP smuggling: only CRLF "." CRLF ends the data. A "." line next to a
// bare LF ("\n.\n", "\r\n.\n", "\n.\r\n") is message text, so one DATA
// makes one message, never a second one made of what follows it with a
// sender and recipients of the client's choosing; bare LFs are line ends
// of the stored message (LF, as every line end). After a CRLF the dot
// starts a line and is taken for stuffing: it goes, the line stays.
func TestScriptSmugglingMakesOneMessage(t *testing.T) {
	for i, sep := range []string{"\n.\n", "\r\n.\n", "\n.\r\n"} {
		kept := map[string]string{"\n.\n": "\n.\n", "\r\n.\n": "\n\n", "\n.\r\n": "\n.\n"}[sep]
		r := &recorder{}
		addr, _ := servetest.Start(t, &smtp.Server{Backend: r, Hostname: "mx.test"})
		replies := converse(t, addr, "EHLO c.test\r\n"+
			"MAIL FROM:<s@example.test>\r\nRCPT TO:<first@example.test>\r\nDATA\r\n"+
			"Subject: smuggle "+strconv.Itoa(i)+"\r\n\r\nbody"+sep+
			"MAIL FROM:<forged@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n")
		checkReplies(t, strconv.Quote(sep), replies, []string{"220 ", "250 ", "250 ", "250 ", "354 ", "250 2.0.0 ok", "221 "})
		got := r.messages()
		if len(got) != 1 {
			t.Fatalf("%q: %d messages committed, want 1: %+v", sep, len(got), got)
		}
		want := "Subject: smuggle " + strconv.Itoa(i) + "\n\nbody" + kept +
			"MAIL FROM:<forged@example.test>\nRCPT TO:<victim@example.test>\nDATA\nforged\n"
		if m := got[0]; m.env.Sender != "s@example.test" || strings.Join(m.env.Recipients, ",") != "first@example.test" || m.text != want {
			t.Errorf("%q: committed <%s> %v %q, want <s@example.test> [first@example.test] %q", sep, m.env.Sender, m.env.Recipients, m.text, want)
		}
	}
}

// Dot-stuffing: a line starting with "." arrives with one dot less; a
// lone CR inside a line is text.
func TestScriptDotStuffing(t *testing.T) {
	r := &recorder{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: r, Hostname: "mx.test"})
	replies := converse(t, addr, "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n"+
		"Subject: dots\r\n\r\n..one\r\n...two\r\ncr\rinside\r\n.\r\nQUIT\r\n")
	checkReplies(t, "dots", replies, []string{"220 ", "250 ", "250 ", "250 ", "354 ", "250 2.0.0 ok", "221 "})
	want := "Subject: dots\n\n.one\n..two\ncr\rinside\n"
	if got := r.messages(); len(got) != 1 || got[0].text != want {
		t.Fatalf("committed %+v, want one message %q", got, want)
	}
}

// PIPELINING: EHLO offers it, and several transactions written at once
// get their replies in order, each recipient its own (a refused one does
// not end the transaction), each message its envelope.
func TestScriptPipelining(t *testing.T) {
	r := &recorder{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: r, Hostname: "mx.test",
		RecipientAllowed: func(_, rcpt string) bool { return !strings.HasSuffix(rcpt, "@elsewhere.test") }})
	if ext := extensions(t, addr); !slices.Contains(ext, "PIPELINING") {
		t.Errorf("EHLO does not offer PIPELINING: %q", ext)
	}

	replies := converse(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<a@example.test>\r\nRCPT TO:<one@example.test>\r\nRCPT TO:<out@elsewhere.test>\r\nRCPT TO:<two@example.test>\r\n"+
		"DATA\r\nSubject: first\r\n\r\n1\r\n.\r\n"+
		"MAIL FROM:<b@example.test>\r\nRCPT TO:<three@example.test>\r\nRSET\r\n"+
		"MAIL FROM:<>\r\nRCPT TO:<four@example.test>\r\nDATA\r\nSubject: second\r\n\r\n2\r\n.\r\n"+
		"NOOP\r\nQUIT\r\n")
	checkReplies(t, "pipelined", replies, []string{"220 ", "250 ",
		"250 ", "250 ", "553 5.7.1 ", "250 ", "354 ", "250 2.0.0 ok", // the first transaction
		"250 ", "250 ", "250 ", // the one RSET abandons
		"250 ", "250 ", "354 ", "250 2.0.0 ok", // the second
		"250 ", "221 "})
	got := r.messages()
	if len(got) != 2 {
		t.Fatalf("%d messages committed, want 2: %+v", len(got), got)
	}
	if m := got[0]; m.env.Sender != "a@example.test" || strings.Join(m.env.Recipients, ",") != "one@example.test,two@example.test" || m.text != "Subject: first\n\n1\n" {
		t.Errorf("first: %+v", m)
	}
	if m := got[1]; m.env.Sender != "" || strings.Join(m.env.Recipients, ",") != "four@example.test" || m.text != "Subject: second\n\n2\n" {
		t.Errorf("second: %+v", m)
	}
}

// The command sequence: no MAIL before HELO or EHLO, no RCPT before
// MAIL, no DATA before a RCPT was accepted, nothing of a transaction after
// RSET; an unknown command is refused and the session goes on. None of
// them commits anything.
func TestScriptCommandSequence(t *testing.T) {
	r := &recorder{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: r, Hostname: "mx.test"})
	replies := converse(t, addr,
		"MAIL FROM:<s@example.test>\r\n"+ // before EHLO
			"EHLO c.test\r\n"+
			"RCPT TO:<r@example.test>\r\n"+ // before MAIL
			"DATA\r\n"+ // before MAIL
			"MAIL FROM:<s@example.test>\r\n"+
			"DATA\r\n"+ // before RCPT
			"RCPT TO:<r@example.test>\r\n"+
			"RSET\r\n"+
			"DATA\r\n"+ // after RSET: no transaction
			"FOO bar\r\n"+
			"NOOP\r\nQUIT\r\n")
	checkReplies(t, "sequence", replies, []string{"220 ",
		"502 5.5.1 ", "250 ", "502 5.5.1 ", "502 5.5.1 ", "250 ", "502 5.5.1 ", "250 ", "250 ", "502 5.5.1 ",
		"50", "250 ", "221 "})
	if got := r.messages(); len(got) != 0 {
		t.Errorf("committed %+v, want nothing", got)
	}
}

// Commands pipelined after QUIT are never acted on: the message they
// carry is not committed, since no reply could announce it.
func TestScriptNothingAfterQuit(t *testing.T) {
	r := &recorder{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: r, Hostname: "mx.test"})
	replies := converse(t, addr, "EHLO c.test\r\nQUIT\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nSubject: late\r\n\r\nx\r\n.\r\n")
	checkReplies(t, "after QUIT", replies, []string{"220 ", "250 ", "221 "})
	if got := r.messages(); len(got) != 0 {
		t.Errorf("committed %+v after QUIT", got)
	}
}

// SIZE: EHLO announces Limits.MaxMessageSize; MAIL declaring more gets
// 552 5.3.4 at once; a message that outgrows it (by DATA or BDAT) gets
// 552 5.3.4 after its end and is not committed; the session goes on.
// Recipients beyond MaxRecipients get 452 4.5.3 and the others keep
// theirs.
func TestScriptSize(t *testing.T) {
	r := &recorder{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: r, Hostname: "mx.test",
		Limits: server.Limits{MaxMessageSize: 1000, MaxRecipients: 2}})
	big := strings.Repeat("0123456789abcdef\r\n", 100) // 1800 bytes
	replies := converse(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<s@example.test> SIZE=5000\r\n"+
		"MAIL FROM:<s@example.test> SIZE=100\r\nRCPT TO:<r@example.test>\r\nDATA\r\n"+big+".\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nBDAT "+strconv.Itoa(len(big))+" LAST\r\n"+big+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\n"+
		"DATA\r\nSubject: small\r\n\r\nx\r\n.\r\nQUIT\r\n")
	checkReplies(t, "size", replies, []string{"220 ", "250 ",
		"552 5.3.4 ",                         // SIZE=5000
		"250 ", "250 ", "354 ", "552 5.3.4 ", // DATA too big
		"250 ", "250 ", "552 5.3.4 ", // BDAT too big
		"250 ", "250 ", "250 ", "452 4.5.3 ", "354 ", "250 2.0.0 ok", // the third recipient
		"221 "})
	got := r.messages()
	if len(got) != 1 || strings.Join(got[0].env.Recipients, ",") != "a@example.test,b@example.test" || got[0].text != "Subject: small\n\nx\n" {
		t.Fatalf("committed %+v, want only the small message, to a and b", got)
	}
	if ext := extensions(t, addr); !slices.Contains(ext, "SIZE 1000") {
		t.Errorf("EHLO does not announce SIZE 1000: %q", ext)
	}
}

// CHUNKING: BDAT chunks make one message, committed with LF line ends
// once the LAST chunk is in, where a "." line is text; a message
// abandoned by RSET between chunks is not committed; the next BDAT
// transaction gets its own reply; DATA during a BDAT transfer is
// refused, and a BDAT 0 LAST ends the message.
func TestScriptBDAT(t *testing.T) {
	r := &recorder{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: r, Hostname: "mx.test"})
	first, last := "Subject: bdat\r\n\r\nline one\r\n", ".\r\n.dot kept\r\nend\r\n"
	replies := converse(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\n"+
		"BDAT "+strconv.Itoa(len(first))+"\r\n"+first+"BDAT "+strconv.Itoa(len(last))+" LAST\r\n"+last+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<gone@example.test>\r\nBDAT 5\r\nSubjeRSET\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<next@example.test>\r\nBDAT 14 LAST\r\nSubject: next\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<zero@example.test>\r\nBDAT 5\r\nabcdeDATA\r\nBDAT 0 LAST\r\n"+
		"QUIT\r\n")
	checkReplies(t, "bdat", replies, []string{"220 ", "250 ",
		"250 ", "250 ", "250 2.0.0 ", "250 2.0.0 ok", // the first message
		"250 ", "250 ", "250 2.0.0 ", "250 ", // the one RSET abandons
		"250 ", "250 ", "250 2.0.0 ok", // the next
		"250 ", "250 ", "250 2.0.0 ", "502 5.5.1 ", "250 2.0.0 ok", // DATA refused, BDAT 0 LAST
		"221 "})
	want := map[string]string{
		"r@example.test":    "Subject: bdat\n\nline one\n.\n.dot kept\nend\n",
		"next@example.test": "Subject: next\n",
		"zero@example.test": "abcde",
	}
	got := r.messages()
	if len(got) != len(want) {
		t.Fatalf("committed %+v, want %d messages", got, len(want))
	}
	for _, m := range got {
		if len(m.env.Recipients) != 1 || want[m.env.Recipients[0]] != m.text {
			t.Errorf("committed %v %q, want %q", m.env.Recipients, m.text, want[m.env.Recipients[0]])
		}
	}
}
