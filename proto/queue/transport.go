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
	"qbox/proto/smtp"
)

// Package is one message for one or more recipients, as a transport
// sends it.
type Package struct {
	Sender     string
	Recipients []string
	// Size is the message's length in bytes, LF line ends.
	Size int64
	// Open returns the message. A transport calls it just before it sends
	// the package and closes it right after, so one message is open at a
	// time however many are queued.
	Open func() (io.ReadCloser, error)
}

// Result is the outcome for one recipient of one package.
type Result struct {
	Package   int // index into the packages given to Deliver
	Recipient int // index into that package's Recipients
	Reply     proto.Reply
	// FromServer is true when a server sent the reply; false when it is
	// a Z made up by the transport because none came (no connection, the
	// connection lost, a timeout, a protocol violation, an unreadable
	// message, a package never started).
	FromServer bool
	// NotStarted marks a Z for a package the transport never began to
	// send because the run was asked to stop starting packages.
	NotStarted bool
	// Server names who answered (FromServer) or was being talked to.
	Server string
	// Protocol is what carried the package: "QMTP", "QMQP" or "SMTP".
	Protocol string
	// SMTP results only: smtp.RecipientResult's account of the step that
	// decided the result, for reports per step (qmail-remote).
	SMTPStage    smtp.Stage
	RcptAccepted bool
	Sent         bool
}

// Stats counts a transport's traffic in one Deliver.
type Stats struct {
	Sessions int   // connections that carried packages
	BytesOut int64 // bytes written
	Replies  int   // replies the servers sent
}

// Transport carries packages to a server.
type Transport interface {
	// Deliver sends pkgs and calls onResult once for every recipient of
	// every package, in order, never concurrently; a reply counts only
	// for a package sent in full. It returns an *UnreachableError when
	// no connection could be made: then nothing was sent and no result
	// was delivered. When proto.StopStarting(ctx) closes, it starts no
	// further package, still reads the replies owed, and returns an
	// error wrapping proto.ErrInterrupted.
	Deliver(ctx context.Context, pkgs []Package, onResult func(Result)) (Stats, error)
}

// wireSizer is a Transport that knows what a package costs on the wire
// (for the progress bar); others are measured by the message size.
type wireSizer interface {
	WireSize(p *Package) int64
}

// UnreachableError means no server could be reached: nothing was sent,
// nothing is touched, and every message may be tried again anywhere.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string { return e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// ErrViolation is wrapped by a transport's error when the server broke
// its protocol (a reply for what it cannot have received): the run gives
// that server no second session.
var ErrViolation = errors.New("remote protocol violation")

func isViolation(err error) bool {
	return errors.Is(err, ErrViolation) || errors.Is(err, qmtp.ErrRemoteViolation)
}

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
func (t *QMTP) WireSize(p *Package) int64 {
	q := qmtp.Package{Sender: p.Sender, Recipients: p.Recipients, Size: p.Size}
	return q.WireSize()
}

// Deliver runs one QMTP session.
func (t *QMTP) Deliver(ctx context.Context, pkgs []Package, onResult func(Result)) (Stats, error) {
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
func qmtpSession(ctx context.Context, c *qmtp.Client, conn net.Conn, server string, pkgs []Package, onResult func(Result)) (Stats, error) {
	qp := make([]qmtp.Package, len(pkgs))
	for i, p := range pkgs {
		qp[i] = qmtp.Package{Sender: p.Sender, Recipients: p.Recipients, Size: p.Size, Open: p.Open}
	}
	st, err := c.Send(ctx, conn, qp, func(r qmtp.RecipientResult) {
		res := Result{Package: r.Package, Recipient: r.Recipient, Reply: r.Reply, FromServer: r.FromServer, Server: server, Protocol: "QMTP"}
		onResult(res)
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
func (t *QMQP) WireSize(p *Package) int64 {
	return qmqp.PackageSize(proto.Envelope{Sender: p.Sender, Recipients: p.Recipients}, p.Size)
}

// Deliver sends each package in turn. Once no server could be reached,
// the rest are not tried in this run (they get a Z saying why) instead of
// waiting out the connect timeouts once per message.
func (t *QMQP) Deliver(ctx context.Context, pkgs []Package, onResult func(Result)) (Stats, error) {
	var st Stats
	var unreachable error
	if t.Client == nil {
		unreachable = errors.New("no QMQP client configured")
	}
	all := func(i int, r Result) {
		for j := range pkgs[i].Recipients {
			r.Package, r.Recipient = i, j
			onResult(r)
		}
	}
	for i := range pkgs {
		if proto.StoppedStarting(ctx) {
			for ; i < len(pkgs); i++ {
				all(i, Result{Reply: proto.Z("not sent: " + proto.ErrInterrupted.Error()), NotStarted: true, Protocol: "QMQP"})
			}
			return st, fmt.Errorf("qmqp: %w", proto.ErrInterrupted)
		}
		if unreachable == nil && ctx.Err() != nil {
			unreachable = ctx.Err()
		}
		if unreachable != nil {
			all(i, Result{Reply: proto.Z("not attempted: " + unreachable.Error()), Protocol: "QMQP"})
			continue
		}
		reply, server, err := t.send(ctx, &pkgs[i], &st)
		var ce *proto.ConnectError
		var refused *proto.Error
		switch {
		case err == nil, errors.As(err, &refused):
			st.Replies++
			all(i, Result{Reply: reply, FromServer: true, Server: server, Protocol: "QMQP"})
		case errors.As(err, &ce):
			unreachable = err
			all(i, Result{Reply: proto.Z(err.Error()), Protocol: "QMQP"})
		default:
			all(i, Result{Reply: proto.Z(err.Error()), Server: server, Protocol: "QMQP"})
		}
	}
	return st, nil
}

func (t *QMQP) send(ctx context.Context, p *Package, st *Stats) (proto.Reply, string, error) {
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
