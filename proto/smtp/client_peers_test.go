//go:build peers

package smtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/testpeer"
)

// Into Postfix's smtpd: three messages on one session. The bytes Postfix
// stores are the message's bytes (lines starting with ".", a line that is
// only ".", 8-bit bytes, a CR before a line end); the recipient at an
// unknown domain gets Postfix's 550 as a D and the others are delivered
// once each. (A CR before a line end goes on the wire as it is, "\r\r\n",
// but Postfix drops it on storing: TestWireBytes checks it on the wire.)
func TestPostfixDelivery(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	tokA, tokB := testpeer.Token(t)+"-a", testpeer.Token(t)+"-b"
	// Whole headers, so Postfix adds none of its own after Received.
	head := func(tok string) string {
		return "From: sender@example.test\nDate: Mon, 30 Nov 2026 12:00:00 +0000\nMessage-ID: <" + tok + "@example.test>\nSubject: " + tok + "\n"
	}
	msgA := []byte(head(tokA) + "\n.leading dot\n..two dots\n.\n. dot space\nend\n")
	msgB := []byte(head(tokB) + "Content-Type: text/plain; charset=utf-8\n\ncaf\xc3\xa9 \xff\xfe\n.\xc3\xa9\n\x01\x7f\tlast line")
	good1, good2 := "one@"+pf.Domain, "two@"+pf.Domain
	bad := "nobody@nonexistent.invalid"
	msgs := []proto.Message{
		bytesMessage("sender@example.test", msgA, good1, bad, good2),
		bytesMessage("sender@example.test", msgB, good1),
	}
	var results []proto.Result
	c := &Client{Helo: "qbox-test-client.example", CommandTimeout: time.Minute}
	stats, err := c.Deliver(context.Background(), []string{pf.SMTPAddr}, msgs, collect(&results))
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, msgs, results)
	want := []proto.Status{proto.OK, proto.Permanent, proto.OK, proto.OK}
	for k, r := range results {
		if r.Reply.Status != want[k] || !r.FromServer {
			t.Errorf("result %d: %v (from server %v), want %c", k, r.Reply, r.FromServer, want[k])
		}
	}
	if d := results[1].Reply.Text; !strings.HasPrefix(d, "550 5.1.1 <"+bad+">: Recipient address rejected") {
		t.Errorf("D text %q: want Postfix's reply, code first, on one line", d)
	}
	if k := results[0].Reply.Text; !strings.HasPrefix(k, "250 2.0.0 Ok: queued as ") {
		t.Errorf("K text %q", k)
	}
	if stats.BytesOut == 0 || stats.BytesIn == 0 || stats.Replies < 10 {
		t.Errorf("stats %+v", stats)
	}

	for _, c := range []struct {
		tok string
		msg []byte
		n   int
	}{{tokA, msgA, 2}, {tokB, msgB, 1}} {
		got := pf.WaitFor(t, c.tok, c.n, 30*time.Second)
		if len(got) != c.n {
			t.Errorf("%s delivered %d times, want %d", c.tok, len(got), c.n)
		}
		for _, m := range got {
			// Postfix prepends Return-Path, Delivered-To and Received;
			// what follows is the message, byte for byte (SMTP ends the
			// last line, so msgB gains its final LF).
			want := c.msg
			if !bytes.HasSuffix(want, []byte("\n")) {
				want = append(bytes.Clone(want), '\n')
			}
			if !bytes.HasSuffix(m, want) {
				t.Errorf("delivered message does not end with the bytes sent:\n%q\nwant suffix\n%q", m, want)
			}
		}
	}
}

// A message over the SIZE limit Postfix announces (10240000) is a D for
// all its recipients without being sent; the next message on the session
// is delivered.
func TestPostfixSizeLimit(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	tok := testpeer.Token(t)
	line := []byte(strings.Repeat("x", 99) + "\n")
	const lines = 103000 // 10.3 MB, over 10240000 with or without CRs
	big := proto.Message{
		Sender:     "s@example.test",
		Recipients: []string{"big1@" + pf.Domain, "big2@" + pf.Domain},
		Size:       int64(len(line) * lines),
		Open: func() (io.ReadCloser, error) {
			return io.NopCloser(io.LimitReader(repeatReader(line), int64(len(line)*lines))), nil
		},
	}
	small := bytesMessage("s@example.test", []byte("Subject: "+tok+"\n\nsmall\n"), "small@"+pf.Domain)
	msgs := []proto.Message{big, small}
	var results []proto.Result
	stats, err := (&Client{Helo: "qbox-test-client.example"}).Deliver(context.Background(), []string{pf.SMTPAddr}, msgs, collect(&results))
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, msgs, results)
	for _, r := range results[:2] {
		if r.Reply.Status != proto.Permanent || r.FromServer || !strings.Contains(r.Reply.Text, "10240000") {
			t.Errorf("big message: %v (from server %v), want D naming the limit", r.Reply, r.FromServer)
		}
	}
	if r := results[2]; r.Reply.Status != proto.OK {
		t.Errorf("small message: %v", r.Reply)
	}
	if stats.BytesOut > 10000 {
		t.Errorf("%d bytes sent: the big message went out", stats.BytesOut)
	}
	pf.WaitFor(t, tok, 1, 30*time.Second)
}

// TLSRequire against Postfix, which offers no STARTTLS here: every
// recipient gets a Z and no MAIL is sent.
func TestPostfixTLSRequireWithoutSTARTTLS(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	msgs := []proto.Message{
		bytesMessage("s@example.test", []byte("Subject: never\n\nx\n"), "a@"+pf.Domain, "b@"+pf.Domain),
		bytesMessage("s@example.test", []byte("Subject: never\n\ny\n"), "c@"+pf.Domain),
	}
	var results []proto.Result
	_, err := (&Client{Helo: "qbox-test-client.example", TLS: TLSRequire}).Deliver(context.Background(), []string{pf.SMTPAddr}, msgs, collect(&results))
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("err %v, want ErrTLSRequired", err)
	}
	checkOrder(t, msgs, results)
	for _, r := range results {
		if r.Reply.Status != proto.Temporary || r.FromServer || !strings.Contains(r.Reply.Text, "STARTTLS") {
			t.Errorf("%v (from server %v), want a Z about STARTTLS", r.Reply, r.FromServer)
		}
	}
}

// Into mailfront's smtpfront-echo under tcpserver: twenty messages on one
// pipelined session; mailfront's reply counts the bytes it received, which
// are the message's bytes after the dot-stuffing and CRLFs are undone.
func TestMailfront(t *testing.T) {
	prog := testpeer.Require(t, "smtpfront-echo", "mailfront")
	addr := testpeer.TCPServer(t, []string{"PLUGINS=accept"}, prog)
	var msgs []proto.Message
	for i := 0; i < 20; i++ {
		body := fmt.Sprintf("Subject: m%d\n\n.dot line %d\n..\n\xc3\xa9\n", i, i)
		msgs = append(msgs, bytesMessage("sender@example.test", []byte(body), fmt.Sprintf("rcpt%d@example.test", i), "other@example.test"))
	}
	var results []proto.Result
	if _, err := (&Client{Helo: "qbox-test-client.example"}).Deliver(context.Background(), []string{addr}, msgs, collect(&results)); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, msgs, results)
	for _, r := range results {
		want := fmt.Sprintf("250 Received %d bytes.", msgs[r.Message].Size)
		if r.Reply.Status != proto.OK || !r.FromServer || r.Reply.Text != want {
			t.Errorf("message %d: %v, want K %q", r.Message, r.Reply, want)
		}
	}
}
