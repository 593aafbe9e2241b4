package smtp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"qbox/proto"
	"qbox/proto/testkit/testpeer"
)

func bytesMessage(sender string, msg []byte, rcpts ...string) proto.Message {
	return proto.Message{
		Sender:     sender,
		Recipients: rcpts,
		Size:       int64(len(msg)),
		Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil },
	}
}

func collect(results *[]proto.Result) func(proto.Result) {
	return func(r proto.Result) { *results = append(*results, r) }
}

// checkOrder asserts one result per recipient, in message and recipient
// order.
func checkOrder(t *testing.T, msgs []proto.Message, results []proto.Result) {
	t.Helper()
	k := 0
	for i := range msgs {
		for j := range msgs[i].Recipients {
			if k >= len(results) {
				t.Fatalf("only %d results", len(results))
			}
			if results[k].Message != i || results[k].Recipient != j {
				t.Fatalf("result %d is for message %d recipient %d, want %d/%d", k, results[k].Message, results[k].Recipient, i, j)
			}
			k++
		}
	}
	if k != len(results) {
		t.Fatalf("%d results for %d recipients", len(results), k)
	}
}

// No server: a ConnectError and no result.
func TestConnectError(t *testing.T) {
	addr := testpeer.ClosedAddr(t)
	var results []proto.Result
	_, err := (&Client{Helo: "h.example"}).Deliver(context.Background(), []string{addr}, []proto.Message{bytesMessage("", []byte("x\n"), "r@example.test")}, collect(&results))
	var ce *proto.ConnectError
	if !errors.As(err, &ce) || len(results) != 0 {
		t.Fatalf("err %v, %d results; want a ConnectError and none", err, len(results))
	}
}

// Addresses that could smuggle a command are refused before connecting.
func TestRefusesBadEnvelope(t *testing.T) {
	for _, m := range []proto.Message{
		bytesMessage("s@example.test", []byte("x\n"), "a@example.test>\r\nRCPT TO:<b@example.test"),
		bytesMessage("s\n@example.test", []byte("x\n"), "a@example.test"),
		bytesMessage("s@example.test", []byte("x\n")),
	} {
		var results []proto.Result
		_, err := (&Client{Helo: "h.example"}).Send(context.Background(), nil, "h", []proto.Message{m}, collect(&results))
		if err == nil || len(results) != 0 {
			t.Errorf("%q %q: err %v, %d results", m.Sender, m.Recipients, err, len(results))
		}
	}
}

type repeatReader []byte

func (r repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], r)
	}
	return n, nil
}

// TLSRequire against a server that offers no STARTTLS (Postfix's smtpd in
// client_peers_test.go, here the scripted server): ErrTLSRequired, every
// recipient a Z about STARTTLS, and no MAIL ever sent in the clear.
func TestTLSRequireWithoutSTARTTLS(t *testing.T) {
	srv := &scriptServer{}
	addr := startServer(t, srv.handle)
	msgs := []proto.Message{
		bytesMessage("s@example.test", []byte("Subject: never\n\nx\n"), "a@example.test", "b@example.test"),
		bytesMessage("s@example.test", []byte("Subject: never\n\ny\n"), "c@example.test"),
	}
	results, err := deliver(t, &Client{TLS: TLSRequire}, addr, msgs)
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("err %v, want ErrTLSRequired", err)
	}
	for _, r := range results {
		if r.Reply.Status != proto.Temporary || r.FromServer || !strings.Contains(r.Reply.Text, "STARTTLS") {
			t.Errorf("%v (from server %v), want a Z about STARTTLS", r.Reply, r.FromServer)
		}
	}
	cmds, _, _ := srv.log2()
	for _, c := range cmds {
		if strings.HasPrefix(strings.ToUpper(c), "MAIL") {
			t.Fatalf("commands %q: MAIL sent without TLS", cmds)
		}
	}
}
