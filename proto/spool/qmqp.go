package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"time"

	"qbox/proto"
	"qbox/proto/bounce"
	"qbox/proto/maildir"
)

// DefaultLifetime is how long a message may wait in the spool before a
// temporary failure turns into a bounce: maildirqmtp's 14 days.
const DefaultLifetime = 14 * 24 * time.Hour

// QMQPBouncer returns a BounceFunc that builds an RFC 3464 notification
// with proto/bounce and sends it through c: to the sender from the null
// sender; a failed bounce goes to the postmaster from "#@[]"; a failed
// double bounce is discarded (and its file removed), so bounces never
// loop.
func QMQPBouncer(c Sender, cfg bounce.Config, log *slog.Logger) BounceFunc {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error {
		e := &g.Entries[0]
		r, f, err := e.OpenMessage()
		if err != nil {
			return err
		}
		defer f.Close()
		var failures []bounce.Failure
		for _, rcpt := range g.Recipients() {
			failures = append(failures, bounce.Failure{Recipient: rcpt, Diagnostic: reason, TooOld: tooOld, DiagnosticType: "X-QMQP"})
		}
		b, err := bounce.Build(cfg, bounce.Original{Sender: g.Sender, Arrival: g.ModTime(), Message: r, Size: e.MessageSize()}, failures)
		if errors.Is(err, bounce.ErrDiscard) {
			log.Warn("spool: a double bounce failed; discarded", "recipients", g.Recipients(), "reason", reason)
			return nil
		}
		if err != nil {
			return err
		}
		reply, err := c.Send(ctx, proto.Envelope{Sender: b.Sender, Recipients: b.Recipients}, bytes.NewReader(b.Message), int64(len(b.Message)))
		if err != nil {
			return err
		}
		return reply.Err()
	}
}

// FlushQMQP delivers the spool through c, bouncing permanent failures
// through c as well, with DefaultLifetime. It is the one flush that
// `sendmail -q` and `qbox inject --flush` share; hostname names this host
// in bounces (and postmaster@hostname gets double bounces).
func (s *Spool) FlushQMQP(ctx context.Context, c Sender, hostname string, log *slog.Logger) (FlushResult, error) {
	return s.Flush(ctx, FlushConfig{
		Client:   c,
		Bounce:   QMQPBouncer(c, bounce.Config{Hostname: hostname, Program: "qbox sendmail spool"}, log),
		Lifetime: DefaultLifetime,
		Log:      log,
	})
}
