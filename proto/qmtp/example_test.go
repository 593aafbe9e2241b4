package qmtp_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"qbox/proto"
	"qbox/proto/qmtp"
)

// memory is a tiny Backend: it keeps each message in memory.
type memory struct{ stored []string }

type memoryDelivery struct {
	m   *memory
	buf strings.Builder
}

func (m *memory) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return &memoryDelivery{m: m}, nil
}
func (d *memoryDelivery) Write(p []byte) (int, error) { return d.buf.Write(p) }
func (d *memoryDelivery) Abort()                      {}
func (d *memoryDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	d.m.stored = append(d.m.stored, d.buf.String())
	return proto.Repeat(len(env.Recipients), proto.K(fmt.Sprintf("stored as #%d", len(d.m.stored))))
}

// A QMTP server on a loopback port and a client sending it one message
// for two recipients: one reply each.
func ExampleServer() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &qmtp.Server{Backend: &memory{}} // serves loopback clients only
	go srv.Serve(l)
	defer srv.Close()

	msg := "Subject: hello\n\nHi!\n"
	pkg := proto.Message{Sender: "me@example.org", Recipients: []string{"you@example.org", "them@example.org"},
		Size: int64(len(msg)), Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(msg)), nil }}
	c := &qmtp.Client{}
	_, err = c.Deliver(context.Background(), []string{l.Addr().String()}, []proto.Message{pkg}, func(r proto.Result) {
		fmt.Println(pkg.Recipients[r.Recipient], r.Reply)
	})
	fmt.Println(err)
	// Output:
	// you@example.org Kstored as #1
	// them@example.org Kstored as #1
	// <nil>
}
