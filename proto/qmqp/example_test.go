package qmqp_test

import (
	"context"
	"fmt"
	"net"
	"strings"

	"qbox/proto"
	"qbox/proto/qmqp"
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

// A QMQP server on a loopback port and a client sending it one message.
func ExampleServer() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &qmqp.Server{Backend: &memory{}} // serves loopback clients only
	go srv.Serve(l)
	defer srv.Close()

	msg := "Subject: hello\n\nHi!\n"
	c := &qmqp.Client{Servers: []string{l.Addr().String()}}
	env := proto.Envelope{Sender: "me@example.org", Recipients: []string{"you@example.org"}}
	reply, err := c.Send(context.Background(), env, strings.NewReader(msg), int64(len(msg)))
	fmt.Println(reply, err)
	// Output: Kstored as #1 <nil>
}
