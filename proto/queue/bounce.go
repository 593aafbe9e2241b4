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
}

// Bouncer reports permanent failures. Bounce returns nil once the report
// was accepted; discarded says it was deliberately dropped (a bounce of a
// double bounce). Either way the files go. An error keeps them; its text
// says why (it is shown after "kept: ").
type Bouncer interface {
	Bounce(ctx context.Context, n *Notice) (note string, discarded bool, err error)
}

// QMQPBouncer builds an RFC 3464 notification with proto/queue/bounce and
// injects it over QMQP: to the sender from the null sender; a failed
// bounce to the postmaster from "#@[]"; a failed double bounce is
// discarded, so bounces never loop.
type QMQPBouncer struct {
	Config bounce.Config
	// Client injects the notification; nil keeps the message, saying
	// NoClient.
	Client   QMQPSender
	NoClient string
}

// Bounce builds and injects the notification.
func (b *QMQPBouncer) Bounce(ctx context.Context, n *Notice) (string, bool, error) {
	orig := bounce.Original{Sender: n.Sender, Arrival: n.Arrival, Size: n.Size}
	if n.Open != nil {
		rd, err := n.Open()
		if err != nil {
			return "", false, errors.New("cannot read it to bounce: " + err.Error())
		}
		defer rd.Close()
		orig.Message = rd
	}
	msg, err := bounce.Build(b.Config, orig, n.Failures)
	if errors.Is(err, bounce.ErrDiscard) {
		return "a failed double bounce: discarded", true, nil
	}
	if err != nil {
		return "", false, err
	}
	if b.Client == nil {
		note := b.NoClient
		if note == "" {
			note = "no QMQP server configured for bounces"
		}
		return "", false, errors.New(note)
	}
	reply, err := b.Client.Send(ctx, proto.Envelope{Sender: msg.Sender, Recipients: msg.Recipients}, bytes.NewReader(msg.Message), int64(len(msg.Message)))
	var refused *proto.Error
	switch {
	case errors.As(err, &refused):
		return "", false, errors.New("bounce refused: " + proto.Printable(reply.String(), 500))
	case err != nil:
		return "", false, errors.New("bounce not injected: " + err.Error())
	}
	to := "<" + msg.Recipients[0] + ">"
	return "bounce to " + proto.Printable(to, 300) + " accepted: " + proto.Printable(reply.Text, 200), false, nil
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
