package spool

import (
	"context"
	"io"
	"log/slog"

	"qbox/proto/queue"
	"qbox/proto/queue/bounce"
	"qbox/proto/store/maildir"
)

// DefaultLifetime is how long a message may wait in the spool before a
// temporary failure turns into a bounce: maildirqmtp's 14 days.
const DefaultLifetime = queue.DefaultLifetime

// QMQPBouncer returns a BounceFunc that builds an RFC 3464 notification
// with proto/queue/bounce and sends it through c (queue.QMQPBouncer): to the
// sender from the null sender; a failed bounce goes to the postmaster
// from "#@[]"; a failed double bounce is discarded (and its file
// removed), so bounces never loop.
func QMQPBouncer(c Sender, cfg bounce.Config, log *slog.Logger) BounceFunc {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &queue.QMQPBouncer{Config: cfg, Client: c}
	return func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error {
		e := &g.Entries[0]
		n := &queue.Notice{
			Sender: g.Sender, Arrival: g.ModTime(), Size: e.MessageSize(), Reason: reason, TooOld: tooOld, Group: g,
			Open: func() (io.Reader, io.Closer, error) {
				rd, f, err := e.OpenMessage()
				if err != nil {
					return nil, nil, err
				}
				return rd, f, nil
			},
		}
		for _, rcpt := range g.Recipients() {
			n.Failures = append(n.Failures, bounce.Failure{Recipient: rcpt, Diagnostic: reason, TooOld: tooOld, DiagnosticType: "X-QMQP"})
		}
		_, discarded, err := b.Bounce(ctx, n)
		if discarded {
			log.Warn("spool: a double bounce failed; discarded", "recipients", g.Recipients(), "reason", reason)
		}
		return err
	}
}

// FlushQMQP delivers the spool (the messages sel matches; nil: all)
// through c, bouncing permanent failures
// through c as well, with DefaultLifetime. It is the one flush that
// `sendmail -q` and `qbox inject --flush` share; hostname names this host
// in bounces (and postmaster@hostname gets double bounces, and reports of
// malformed files past the lifetime).
func (s *Spool) FlushQMQP(ctx context.Context, c Sender, hostname string, log *slog.Logger, sel *Selection) (FlushResult, error) {
	return s.Flush(ctx, FlushConfig{
		Select:   sel,
		Client:   c,
		Bouncer:  &queue.QMQPBouncer{Config: bounce.Config{Hostname: hostname, Program: "qbox sendmail spool"}, Client: c},
		Lifetime: DefaultLifetime,
		Log:      log,
	})
}
