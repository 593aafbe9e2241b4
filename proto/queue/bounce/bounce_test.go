package bounce

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"
)

const original = "From: alice@example.test\nTo: bob@example.test\nSubject: hello\n\nbody line\n"

func parts(t *testing.T, msg []byte) (*mail.Message, [][]byte, []string) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var bodies [][]byte
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		bodies = append(bodies, b)
		types = append(types, p.Header.Get("Content-Type"))
	}
	return m, bodies, types
}

func TestBounceToSender(t *testing.T) {
	arrival := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	b, err := Build(Config{Hostname: "relay.example.test", Program: "qbox flush-maildir"},
		Original{Sender: "alice@example.test", Arrival: arrival, Message: strings.NewReader(original), Size: int64(len(original))},
		[]Failure{{Recipient: "bob@example.test", RemoteMTA: "127.0.0.1:209", Diagnostic: "sorry, no mailbox here by that name (#5.1.1)"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Sender != "" || len(b.Recipients) != 1 || b.Recipients[0] != "alice@example.test" {
		t.Fatalf("envelope %q -> %v", b.Sender, b.Recipients)
	}
	m, bodies, types := parts(t, b.Message)
	if m.Header.Get("To") != "alice@example.test" || !strings.HasPrefix(m.Header.Get("From"), "MAILER-DAEMON@") {
		t.Errorf("header To %q From %q", m.Header.Get("To"), m.Header.Get("From"))
	}
	if len(bodies) != 3 || types[1] != "message/delivery-status" || types[2] != "message/rfc822" {
		t.Fatalf("parts %v", types)
	}
	if !strings.Contains(string(bodies[0]), "127.0.0.1:209 said: sorry, no mailbox here by that name (#5.1.1)") {
		t.Errorf("text part:\n%s", bodies[0])
	}
	for _, want := range []string{"Final-Recipient: rfc822; bob@example.test", "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; 127.0.0.1\n", "Diagnostic-Code: X-QMTP; sorry", "Arrival-Date: Wed, 01 May 2024 12:00:00 +0000"} {
		if !strings.Contains(string(bodies[1]), want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, bodies[1])
		}
	}
	if string(bodies[2]) != original {
		t.Errorf("original %q", bodies[2])
	}
	if bytes.Contains(b.Message, []byte("\r")) {
		t.Error("bounce has CR: QMQP wants LF line ends")
	}
}

func TestDoubleAndTripleBounce(t *testing.T) {
	b, err := Build(Config{Hostname: "h.test"}, Original{Sender: "", Message: strings.NewReader(original), Size: int64(len(original))},
		[]Failure{{Recipient: "x@y", Diagnostic: "no"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Sender != DoubleBounceSender || b.Recipients[0] != "postmaster@h.test" {
		t.Fatalf("double bounce %q -> %v", b.Sender, b.Recipients)
	}
	b, err = Build(Config{Hostname: "h.test", Postmaster: "ops@h.test"}, Original{Sender: ""}, []Failure{{Recipient: "x@y"}})
	if err != nil || b.Recipients[0] != "ops@h.test" {
		t.Fatalf("configured postmaster: %v %v", b, err)
	}
	if _, err := Build(Config{}, Original{Sender: DoubleBounceSender}, []Failure{{Recipient: "x@y"}}); !errors.Is(err, ErrDiscard) {
		t.Fatalf("triple bounce: %v, want ErrDiscard", err)
	}
}

func TestTooOldAndHeaderOnly(t *testing.T) {
	big := "Subject: big\nX-Evil: a\n\n" + strings.Repeat("x", 200)
	b, err := Build(Config{Hostname: "h.test", MaxOriginal: 100},
		Original{Sender: "s@x", Message: strings.NewReader(big), Size: int64(len(big))},
		[]Failure{{Recipient: "r1@y", TooOld: true, Diagnostic: "Zsorry,\r\n injected: header"}, {Recipient: "r2@y", TooOld: true}})
	if err != nil {
		t.Fatal(err)
	}
	_, bodies, types := parts(t, b.Message)
	if !strings.Contains(string(bodies[0]), "This message is too old. Giving up.") {
		t.Errorf("text:\n%s", bodies[0])
	}
	if strings.Count(string(bodies[1]), "Status: 4.4.7") != 2 {
		t.Errorf("delivery status:\n%s", bodies[1])
	}
	if strings.Contains(string(b.Message), "\n injected") {
		t.Error("server text broke a header line")
	}
	if types[2] != "text/rfc822-headers" || string(bodies[2]) != "Subject: big\nX-Evil: a\n\n" {
		t.Errorf("third part %q: %q", types[2], bodies[2])
	}
}
