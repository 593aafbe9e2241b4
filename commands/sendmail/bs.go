package sendmail

// sendmail -bs: a local program speaks SMTP on our stdin and stdout. The
// protocol is proto/smtp's server (go-smtp underneath), the one `qbox
// serve --smtp` runs; this file is only its backend: each message is
// spilled, completed as qmail-inject completes one and sent over QMQP or
// put in the spool, and the reply to its final dot says which.

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"qbox/commands/exitcode"
	"qbox/commands/spill"
	"qbox/proto"
	"qbox/proto/qmail/message"
	"qbox/proto/server"
	"qbox/proto/smtp"
)

// Limits of -bs. A text line may be much longer than RFC 5321's 1000
// bytes (MUAs send such lines), so the line limit is 1 MiB; it bounds a
// command line too, which costs a local client nothing.
const (
	bsMaxLine        = 1 << 20
	bsMaxRecipients  = 1000
	defaultSizeLimit = 64 << 20
	// bsTimeout is how long the client may stay silent (RFC 5321's five
	// minutes for a server waiting on a command); the whole session is
	// bounded by smtp.Server's default session limit.
	bsTimeout = 5 * time.Minute
)

// bsSubmit hands one received message (LF line ends) on and says what
// became of it, one reply for all its recipients; sendmail -bs wires it
// to submitSMTP, the tests to a recorder.
type bsSubmit func(ctx context.Context, env proto.Envelope, data *spill.Buffer) proto.Reply

// bsSession is what one -bs session needs.
type bsSession struct {
	hostname string // in the greeting and the EHLO reply
	limits   server.Limits
	rewrite  func(string) string // completes an address (qmail-inject's rewrite)
	submit   bsSubmit
}

// bsLimits are -bs's limits with maxSize the largest message (SIZE and
// the data).
func bsLimits(maxSize int64) server.Limits {
	return server.Limits{MaxMessageSize: maxSize, MaxRecipients: bsMaxRecipients, MaxLine: bsMaxLine}
}

// serve runs the session on conn. The error says why it ended when it
// was not the client's QUIT or close (a client gone in the middle of a
// message, a timeout).
func (s bsSession) serve(ctx context.Context, conn server.Conn) error {
	rewrite := s.rewrite
	srv := &smtp.Server{
		Backend:  &bsBackend{rewrite: rewrite, submit: s.submit},
		Hostname: s.hostname,
		Limits:   s.limits,
		Timeout:  bsTimeout,
		// A recipient that the default host would turn into a hostile
		// address (a default domain holding CR, LF or NUL from the
		// environment) is refused at RCPT, where it enters; the server
		// has already refused one that is hostile as sent.
		RecipientAllowed: func(_, rcpt string) bool {
			return proto.CheckRecipient(rewrite(rcpt)) == nil
		},
		// go-smtp refuses a path without a domain; qmail-inject's
		// rewrite gives a bare one the default host.
		CompletePath: rewrite,
	}
	_, err := srv.ServeConn(ctx, conn, proto.Peer{})
	return err
}

// serveSMTP runs -bs on the process's stdin and stdout.
func serveSMTP(ctx context.Context, p *Process) error {
	cfg, err := message.ConfigFromEnv(p.Getenv)
	if err != nil {
		return exitcode.Temp(fmt.Errorf("reading the qmail configuration: %w", err))
	}
	size := int64(defaultSizeLimit)
	if v, err := strconv.ParseInt(p.Getenv("QBOX_MAX_SIZE"), 10, 64); err == nil && v > 0 {
		size = v
	}
	conn, err := stdioConn(p.Stdin, p.Stdout)
	if err != nil {
		return exitcode.Input(fmt.Errorf("-bs: %w", err))
	}
	defer conn.Close()
	s := bsSession{
		// From the environment: it must not end a reply line early.
		hostname: oneLine(cfg.DefaultHost),
		limits:   bsLimits(size),
		rewrite:  cfg.Rewrite,
		submit: func(ctx context.Context, env proto.Envelope, data *spill.Buffer) proto.Reply {
			return submitSMTP(ctx, p, cfg, env, data)
		},
	}
	if err := s.serve(ctx, conn); err != nil {
		return exitcode.Input(fmt.Errorf("-bs: %w", err))
	}
	return nil
}

// stdioConn is the session's connection: stdin and stdout as
// server.NewStdioConn makes them (deadlines on pipes) when they are files,
// as the real process has them; a plain reader and writer otherwise, with
// no deadlines.
func stdioConn(in io.Reader, out io.Writer) (interface {
	server.Conn
	Close() error
}, error) {
	fin, ok1 := in.(*os.File)
	fout, ok2 := out.(*os.File)
	if ok1 && ok2 {
		return server.NewStdioConn(fin, fout)
	}
	return &plainConn{in: in, out: out}, nil
}

// plainConn is a reader and a writer as a server.Conn without deadlines.
type plainConn struct {
	in  io.Reader
	out io.Writer
}

func (c *plainConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *plainConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *plainConn) SetReadDeadline(time.Time) error  { return nil }
func (c *plainConn) SetWriteDeadline(time.Time) error { return nil }
func (c *plainConn) Close() error                     { return nil }

// bsBackend takes the messages of a -bs session.
type bsBackend struct {
	rewrite func(string) string
	submit  bsSubmit
}

func (b *bsBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return &bsDelivery{b: b}, nil
}

// bsDelivery spills one message (bounded memory, the rest in an unlinked
// temporary file) until its final dot.
type bsDelivery struct {
	b   *bsBackend
	buf spill.Buffer
}

func (d *bsDelivery) Write(p []byte) (int, error) { return d.buf.Write(p) }

func (d *bsDelivery) Abort() { d.buf.Close() }

// Commit completes the envelope as qmail-inject does (a bare sender or
// recipient gets the default host), submits the message and gives its
// one reply to every recipient: QMQP and the spool take a message whole
// or not at all.
func (d *bsDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	defer d.buf.Close()
	fill := func(r proto.Reply) []proto.Reply { return proto.Repeat(len(env.Recipients), r) }
	if env.Sender != "" {
		env.Sender = d.b.rewrite(env.Sender)
		if err := proto.CheckSender(env.Sender); err != nil {
			return fill(proto.D("sender refused after adding the default host: " + oneLine(err.Error()) + " (#5.1.7)"))
		}
	}
	rcpts := make([]string, len(env.Recipients))
	for i, r := range env.Recipients {
		rcpts[i] = d.b.rewrite(r)
		if err := proto.CheckRecipient(rcpts[i]); err != nil {
			// RecipientAllowed refused it already; never hand it on.
			return fill(proto.D("recipient refused after adding the default host: " + oneLine(err.Error()) + " (#5.1.3)"))
		}
	}
	env.Recipients = rcpts
	return fill(d.b.submit(ctx, env, &d.buf))
}

// submitSMTP completes the received message's header (Date, Message-ID,
// From when missing; Bcc removed) and sends it; the SMTP envelope is
// kept as given. The reply's text carries its enhanced status code as
// "(#x.y.z)", which smtp.DataReply puts into the SMTP reply.
func submitSMTP(ctx context.Context, p *Process, cfg message.Config, env proto.Envelope, data *spill.Buffer) proto.Reply {
	sender := env.Sender
	// A missing From names the envelope sender, as -f does.
	applySenderOptions(&cfg, &Options{Sender: sender, SenderSet: true})
	mopts := message.Options{Sender: &sender}
	// control/systemfrom rewrites a system user's mail here too, sender
	// and From both, as for sendmail's other ways in.
	if err := systemFrom(p, &cfg, &mopts); err != nil {
		return proto.Z(oneLine(err.Error()) + " (#4.3.0)")
	}
	m, err := message.Prepare(data.Reader(), cfg, mopts)
	if err != nil {
		return proto.D(oneLine(err.Error()) + " (#5.6.0)")
	}
	env.Sender = m.Sender
	var buf spill.Buffer
	defer buf.Close()
	if _, err := io.Copy(&buf, m.Reader()); err != nil {
		return proto.Z(oneLine(err.Error()) + " (#4.3.0)")
	}
	res := submit(ctx, p, env, &buf)
	switch res.kind {
	case sent:
		return proto.K("Ok: sent over QMQP: " + oneLine(res.reply.Text))
	case rejected:
		return proto.D("rejected: " + oneLine(res.reply.Text) + " (#5.3.0)")
	case queued:
		p.note(false, "%s", res.queuedNote())
		return proto.K("Ok: queued in the local spool; relay unavailable: " + oneLine(res.reason))
	default:
		return proto.Z("not sent and not queued: " + oneLine(res.reason) + " (#4.3.0)")
	}
}

// oneLine makes server or error text fit one SMTP reply line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(proto.Printable(s, 2000)), " ")
}
