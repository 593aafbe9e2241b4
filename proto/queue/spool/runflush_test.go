package spool

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/queue"
	"qbox/proto/store/maildir"
)

// The spool delivers nothing itself (queue.Run over Spool.Source does);
// these helpers let its tests run the engine over a spool and count the
// files by outcome, as they did when the spool had a Flush of its own.

// BounceFunc returns a permanently failed message to its sender (g holds
// the sender); nil once the bounce is accepted.
type BounceFunc func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error

// FlushConfig is one test run over the spool.
type FlushConfig struct {
	Client   queue.QMQPSender
	Bounce   BounceFunc
	Bouncer  queue.Bouncer // instead of Bounce
	Lifetime time.Duration
	Log      *slog.Logger
	Now      func() time.Time
	Select   *Selection
}

// FlushResult counts files (one per recipient) by outcome.
type FlushResult struct {
	Delivered   int
	Bounced     int
	Deferred    int
	Malformed   []maildir.Malformed
	NotStarted  int
	Interrupted bool
}

// Remaining is how many files are still queued after the run.
func (r FlushResult) Remaining() int { return r.Deferred + r.NotStarted + len(r.Malformed) }

// Flush runs the engine over s with cfg, as the spool's flushes do
// (queue.QMQPRelay), with cfg's bounces and lifetime.
func (s *Spool) Flush(ctx context.Context, cfg FlushConfig) (FlushResult, error) {
	qc := queue.QMQPRelay(s.Source(cfg.Select), cfg.Client, "")
	qc.Lifetime, qc.Now, qc.Bouncer = cfg.Lifetime, cfg.Now, cfg.Bouncer
	if qc.Bouncer == nil && cfg.Bounce != nil {
		qc.Bouncer = funcBouncer(cfg.Bounce)
	}
	return run(ctx, qc, cfg.Log)
}

// FlushQMQP runs the engine over s exactly as sendmail -q does.
func (s *Spool) FlushQMQP(ctx context.Context, c queue.QMQPSender, hostname string, log *slog.Logger, sel *Selection) (FlushResult, error) {
	return run(ctx, queue.QMQPRelay(s.Source(sel), c, hostname), log)
}

func run(ctx context.Context, qc queue.Config, log *slog.Logger) (FlushResult, error) {
	var res FlushResult
	lg := &queue.Logger{Log: log}
	qc.Events.Outcome = func(o queue.Outcome) {
		lg.Outcome(o)
		switch o.Status {
		case queue.Succeeded:
			res.Delivered++
		case queue.Bounced, queue.Discarded:
			res.Bounced++
		case queue.Malformed:
			if bad, ok := o.Bad.Sys.(*maildir.Malformed); ok {
				res.Malformed = append(res.Malformed, *bad)
			}
		case queue.Deferred:
			if o.NotStarted {
				res.NotStarted++
			} else {
				res.Deferred++
			}
		default:
			res.Deferred++
		}
	}
	sum, err := queue.Run(ctx, qc)
	lg.Done(sum)
	switch {
	case errors.Is(err, proto.ErrInterrupted):
		res.Interrupted = true
		return res, nil
	case err == nil, errors.Is(err, queue.ErrRemaining):
		return res, nil
	}
	return res, err
}

// funcBouncer makes a BounceFunc a queue.Bouncer.
type funcBouncer BounceFunc

func (f funcBouncer) Bounce(ctx context.Context, n *queue.Notice) (string, bool, error) {
	var rcpts []string
	for _, fl := range n.Failures {
		rcpts = append(rcpts, fl.Recipient)
	}
	if err := f(ctx, &maildir.Group{Sender: n.Sender}, n.Reason, n.TooOld); err != nil {
		return "", false, errors.New("bounce not sent: " + err.Error())
	}
	return "bounce accepted for " + strings.Join(rcpts, ","), false, nil
}
