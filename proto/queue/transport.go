package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
)

// Stats counts a transport's traffic in one Deliver.
type Stats struct {
	Sessions int   // connections that carried packages
	BytesOut int64 // bytes written
	Replies  int   // replies the servers sent
}

// Transport carries packages to a server.
type Transport interface {
	// Deliver sends pkgs and calls onResult once for every recipient of
	// every message, in order, never concurrently, with the result's
	// Server and Protocol set; a reply counts only for a message sent in
	// full. It returns an *UnreachableError when
	// no connection could be made: then nothing was sent and no result
	// was delivered. When proto.StopStarting(ctx) closes, it starts no
	// further package, still reads the replies owed, and returns an
	// error wrapping proto.ErrInterrupted.
	Deliver(ctx context.Context, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error)
}

// wireSizer is a Transport that knows what a package costs on the wire
// (for the progress bar); others are measured by the message size.
type wireSizer interface {
	WireSize(p *proto.Message) int64
}

// UnreachableError means no server could be reached: nothing was sent,
// nothing is touched, and every message may be tried again anywhere.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string { return e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// QMTP is the pipelined QMTP transport: every package over one
// connection.
type QMTP struct {
	Client qmtp.Client // timeouts; its Dial is used by Addrs, not by Connect
	// Connect opens the connection and names the server it reached; an
	// error means nothing was sent. Nil: Client.Connect to Addrs.
	Connect func(ctx context.Context) (net.Conn, string, error)
	Addrs   []string
}

// WireSize is the package's size as QMTP sends it.
func (t *QMTP) WireSize(p *proto.Message) int64 { return qmtp.WireSize(p) }

// Deliver runs one QMTP session.
func (t *QMTP) Deliver(ctx context.Context, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error) {
	var conn net.Conn
	var server string
	var err error
	if t.Connect != nil {
		conn, server, err = t.Connect(ctx)
	} else {
		conn, server, err = t.Client.Connect(ctx, t.Addrs)
	}
	if err != nil {
		return Stats{}, &UnreachableError{Err: err}
	}
	defer conn.Close()
	return qmtpSession(ctx, &t.Client, conn, server, pkgs, onResult)
}

// qmtpSession sends pkgs over conn, which a QMTP server named server
// answers.
func qmtpSession(ctx context.Context, c *qmtp.Client, conn net.Conn, server string, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error) {
	st, err := c.Send(ctx, conn, pkgs, func(r proto.Result) {
		r.Server, r.Protocol = server, "QMTP"
		onResult(r)
	})
	return Stats{Sessions: 1, BytesOut: st.BytesOut, Replies: st.Replies}, err
}

// QMQPSender sends one message to a QMQP server; a *qmqp.Client is one.
type QMQPSender interface {
	Send(ctx context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error)
}

// QMQP is the QMQP transport: one connection, and one reply, per package.
type QMQP struct {
	Client QMQPSender // nil: every package deferred, "no QMQP client configured"
}

// WireSize is the package's size as QMQP sends it.
func (t *QMQP) WireSize(p *proto.Message) int64 {
	return qmqp.PackageSize(proto.Envelope{Sender: p.Sender, Recipients: p.Recipients}, p.Size)
}

// Deliver sends each package in turn. Once no server could be reached,
// the rest are not tried in this run (they get a Z saying why) instead of
// waiting out the connect timeouts once per message.
func (t *QMQP) Deliver(ctx context.Context, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error) {
	var st Stats
	var unreachable error
	if t.Client == nil {
		unreachable = errors.New("no QMQP client configured")
	}
	all := func(i int, r proto.Result) {
		for j := range pkgs[i].Recipients {
			r.Message, r.Recipient = i, j
			onResult(r)
		}
	}
	for i := range pkgs {
		if proto.StoppedStarting(ctx) {
			for ; i < len(pkgs); i++ {
				all(i, proto.Result{Reply: proto.Z("not sent: " + proto.ErrInterrupted.Error()), NotStarted: true, Protocol: "QMQP"})
			}
			return st, fmt.Errorf("qmqp: %w", proto.ErrInterrupted)
		}
		if unreachable == nil && ctx.Err() != nil {
			unreachable = ctx.Err()
		}
		if unreachable != nil {
			all(i, proto.Result{Reply: proto.Z("not attempted: " + unreachable.Error()), Protocol: "QMQP"})
			continue
		}
		if rs, ok := t.Client.(RecipientSender); ok {
			unreachable = t.sendEach(ctx, rs, i, &pkgs[i], &st, onResult)
			continue
		}
		reply, server, err := t.send(ctx, &pkgs[i], &st)
		var ce *proto.ConnectError
		var refused *proto.Error
		switch {
		case err == nil, errors.As(err, &refused):
			st.Replies++
			all(i, proto.Result{Reply: reply, FromServer: true, Server: server, Protocol: "QMQP"})
		case errors.As(err, &ce):
			unreachable = err
			all(i, proto.Result{Reply: proto.Z(err.Error()), Protocol: "QMQP"})
		default:
			all(i, proto.Result{Reply: proto.Z(err.Error()), Server: server, Protocol: "QMQP"})
		}
	}
	return st, nil
}

func (t *QMQP) send(ctx context.Context, p *proto.Message, st *Stats) (proto.Reply, string, error) {
	rc, err := p.Open()
	if err != nil {
		return proto.Reply{}, "", err
	}
	defer rc.Close()
	env := proto.Envelope{Sender: p.Sender, Recipients: p.Recipients}
	reply, err := t.Client.Send(ctx, env, rc, p.Size)
	var ce *proto.ConnectError
	if !errors.As(err, &ce) {
		st.Sessions++
		st.BytesOut += t.WireSize(p)
	}
	server := ""
	var se *qmqp.SessionError
	if errors.As(err, &se) {
		server = se.Server
	}
	return reply, server, err
}
