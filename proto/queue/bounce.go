package queue

import (
	"bytes"
	"context"
	"errors"
	"io"
	"time"

	"qbox/proto"
	"qbox/proto/queue/bounce"
)

// Notice is what a Bouncer reports: the failed recipients of one message.
type Notice struct {
	Sender  string // the message's sender; "" for a malformed file (the postmaster is told)
	Arrival time.Time
	// Open returns the message (to attach to the report); nil when
	// there is nothing to attach (a symlink or FIFO).
	Open     func() (io.ReadCloser, error)
	Size     int64
	Failures []bounce.Failure
	// Reason is the failure in one line: the server's reply, or why the
	// message expired.
	Reason string
	TooOld bool
	// SizeRefused says a server refused the message for its size: the
	// report carries its header only (RFC 3462), or it would be refused
	// too.
	SizeRefused bool
}

// Bouncer reports permanent failures. Bounce returns nil once the report
// was accepted; discarded says it was deliberately dropped (a bounce of a
// double bounce). Either way the files go. An error keeps them; its text
// says why (it is shown after "kept: ").
type Bouncer interface {
	Bounce(ctx context.Context, n *Notice) (note string, discarded bool, err error)
}

// QMQPBouncer builds an RFC 3464 notification with proto/queue/bounce and
// injects it over QMQP: to the sender from the null sender. A bounce the
// server refuses for good goes once to the postmaster from "#@[]" (a
// double bounce, the original's header only); a double bounce refused
// for good is discarded (the outcome says so; the caller logs it), so
// bounces never loop and a message gets one notice. A bounce the server
// defers, or no server reached, keeps the message for the next run.
type QMQPBouncer struct {
	Config bounce.Config
	// Client injects the notification; nil keeps the message, saying
	// NoClient.
	Client   QMQPSender
	NoClient string
}

// Bounce builds and injects the notification.
func (b *QMQPBouncer) Bounce(ctx context.Context, n *Notice) (string, bool, error) {
	orig := bounce.Original{Sender: n.Sender, Arrival: n.Arrival, Size: n.Size, HeadersOnly: n.SizeRefused}
	note, err := b.send(ctx, n, orig)
	var refused *bounceRefused
	switch {
	case errors.As(err, &refused) && n.Sender != "" && n.Sender != bounce.DoubleBounceSender:
		// The bounce cannot be delivered: once to the postmaster.
		orig.Sender, orig.HeadersOnly = "", true
		orig.Note = "The failure notice to <" + n.Sender + "> was refused: " + refused.reply
		dnote, derr := b.send(ctx, n, orig)
		switch {
		case errors.As(derr, &refused):
			return "the bounce and the double bounce were refused (" + refused.reply + "): discarded", true, nil
		case errors.Is(derr, errDiscarded):
			return "a failed double bounce: discarded", true, nil
		case derr != nil:
			return "", false, derr
		}
		return "bounce refused (" + refused.reply + "); " + dnote, false, nil
	case errors.As(err, &refused):
		// A double bounce (of a bounce) refused: dropped.
		return "the failure notice was refused (" + refused.reply + "): discarded", true, nil
	case errors.Is(err, errDiscarded):
		return "a failed double bounce: discarded", true, nil
	}
	return note, false, err
}

var errDiscarded = errors.New("discarded")

// bounceRefused is a notification the server refused for good.
type bounceRefused struct{ reply string }

func (e *bounceRefused) Error() string { return "bounce refused: " + e.reply }

// send builds one notification about orig and injects it.
func (b *QMQPBouncer) send(ctx context.Context, n *Notice, orig bounce.Original) (string, error) {
	if n.Open != nil {
		rd, err := n.Open()
		if err != nil {
			return "", errors.New("cannot read it to bounce: " + err.Error())
		}
		defer rd.Close()
		orig.Message = rd
	}
	msg, err := bounce.Build(b.Config, orig, n.Failures)
	if errors.Is(err, bounce.ErrDiscard) {
		return "", errDiscarded
	}
	if err != nil {
		return "", err
	}
	if b.Client == nil {
		note := b.NoClient
		if note == "" {
			note = "no QMQP server configured for bounces"
		}
		return "", errors.New(note)
	}
	reply, err := b.Client.Send(ctx, proto.Envelope{Sender: msg.Sender, Recipients: msg.Recipients}, bytes.NewReader(msg.Message), int64(len(msg.Message)))
	var refused *proto.Error
	switch {
	case errors.As(err, &refused) && !refused.Temporary():
		return "", &bounceRefused{reply: proto.Printable(reply.String(), 500)}
	case errors.As(err, &refused):
		return "", errors.New("bounce deferred: " + proto.Printable(reply.String(), 500))
	case err != nil:
		return "", errors.New("bounce not injected: " + err.Error())
	}
	to := "<" + msg.Recipients[0] + ">"
	return "bounce to " + proto.Printable(to, 300) + " accepted: " + proto.Printable(reply.Text, 200), nil
}

// QMQPRelay is the run the sendmail spool's flushes make (sendmail -q,
// inject --flush, qbox queue flush): one QMQP pass through c over src,
// grouped messages as src gives them; a message still undelivered after
// DefaultLifetime (a Z, or no server reachable for that long) bounces,
// like a D, through c as well: to the sender from the null sender, a
// failed bounce to the postmaster, a failed double bounce discarded.
// hostname names this host in bounces.
func QMQPRelay(src Source, c QMQPSender, hostname string) Config {
	return Config{
		Source:           src,
		Transport:        &QMQP{Client: c},
		Rounds:           1,
		Lifetime:         DefaultLifetime,
		ExpireUnanswered: true,
		Bouncer:          &QMQPBouncer{Config: bounce.Config{Hostname: hostname, Program: "qbox sendmail spool"}, Client: c},
		KeepNote:         "no bounce configured",
	}
}
