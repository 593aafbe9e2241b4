package spool

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/queue"
	"qbox/proto/store/maildir"
)

// Sender sends one message to a QMQP server (a *qmqp.Client is one).
type Sender = queue.QMQPSender

// BounceFunc returns a permanently failed group to its sender; tooOld
// says the message expired in the spool rather than being refused. It
// returns nil once the bounce has been accepted (or deliberately dropped,
// for a bounce of a bounce); only then are the group's files removed.
type BounceFunc func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error

// FlushConfig is how Flush delivers.
type FlushConfig struct {
	Client Sender
	Bounce BounceFunc
	// Bouncer, when set, is used instead of Bounce.
	Bouncer queue.Bouncer
	// Lifetime is how long a message may stay queued; once it is older
	// a temporary failure is treated as permanent and the message
	// bounces (a malformed file is reported to the postmaster and
	// removed). 0 keeps messages forever.
	Lifetime time.Duration
	Log      *slog.Logger // nil discards
	Now      func() time.Time
	// Select limits the flush to the messages it matches (nil: all).
	Select *Selection
}

// FlushResult counts files (one per recipient) by outcome.
type FlushResult struct {
	Delivered int
	Bounced   int
	Deferred  int
	Malformed []maildir.Malformed
	// NotStarted counts the files left untried because the flush was
	// asked to stop starting messages (Interrupted).
	NotStarted  int
	Interrupted bool
}

// Remaining is how many files are still queued after the run.
func (r FlushResult) Remaining() int { return r.Deferred + r.NotStarted + len(r.Malformed) }

// ErrLocked is wrapped when another process is flushing the spool.
var ErrLocked = maildir.ErrLocked

// Flush delivers everything queued, over QMQP through the queue engine
// (proto/queue). Files with the same sender and byte-identical content
// travel as one QMQP message with all their recipients. A file is removed
// only after the server said K (and the removal is fsync'd), or after a D
// (or expiry) once its bounce was accepted; on Z or any transport failure
// it stays, with the error recorded for mailq. An exclusive lock on the
// spool makes a second concurrent Flush fail with ErrLocked instead of
// sending the same files.
//
// When ctx's stop-starting channel closes (proto.WithStopStarting), the
// message being sent still gets its reply and its outcome; no further one
// is started, and the result says Interrupted.
func (s *Spool) Flush(ctx context.Context, cfg FlushConfig) (FlushResult, error) {
	var res FlushResult
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	qc := queue.Config{
		Dir:              s.Dir,
		Transport:        &queue.QMQP{Client: cfg.Client},
		Rounds:           1,
		Group:            true,
		Lifetime:         cfg.Lifetime,
		ExpireUnanswered: true,
		Bouncer:          cfg.Bouncer,
		KeepNote:         "no bounce configured",
		Now:              cfg.Now,
	}
	if cfg.Select != nil {
		qc.Select = cfg.Select.Match
	}
	if qc.Bouncer == nil && cfg.Bounce != nil {
		qc.Bouncer = funcBouncer(cfg.Bounce)
	}
	// The engine reports files; the log says what happened to each
	// message (a group of files travelling together) once.
	var line struct {
		group *maildir.Group
		o     queue.Outcome
		rcpts []string
	}
	flushLine := func() {
		if line.rcpts == nil {
			return
		}
		o, rcpts := line.o, strings.Join(line.rcpts, ",")
		switch o.Status {
		case queue.Succeeded:
			log.Info("spool: delivered", "sender", o.Sender, "recipients", rcpts, "reply", proto.Printable(o.Reply, 200))
		case queue.Bounced, queue.Discarded:
			log.Info("spool: bounced", "sender", o.Sender, "recipients", rcpts, "note", o.Note)
		case queue.Deferred:
			log.Warn("spool: deferred", "sender", o.Sender, "recipients", rcpts, "err", o.Reason)
		case queue.Failed:
			log.Warn("spool: bounce failed, message kept", "sender", o.Sender, "recipients", rcpts, "err", o.Reason)
		}
		line.rcpts = nil
	}
	logOutcome := func(o queue.Outcome) {
		if o.Group == nil || o.Group != line.group || o.Status != line.o.Status || o.NotStarted {
			flushLine()
		}
		if o.Group == nil || o.NotStarted {
			return
		}
		line.group, line.o = o.Group, o
		line.rcpts = append(line.rcpts, o.Recipient)
	}
	qc.Events.Scanned = func(scan *maildir.ScanResult) {
		live := map[string]bool{}
		for _, e := range scan.Entries {
			live[filepath.Base(e.Name)] = true
		}
		s.cleanErrors(live)
	}
	qc.Events.Outcome = func(o queue.Outcome) {
		logOutcome(o)
		key := filepath.Base(o.File)
		switch o.Status {
		case queue.Succeeded:
			res.Delivered++
			if o.Note != "" {
				// The server has the message; this file would send it again.
				log.Error("spool: cannot remove a delivered file: it will be delivered twice", "file", o.File, "err", o.Note)
				s.setError(key, o.Note)
			} else {
				s.clearError(key)
			}
		case queue.Bounced, queue.Discarded:
			res.Bounced++
			s.clearError(key)
		case queue.Malformed:
			if o.Bad != nil {
				res.Malformed = append(res.Malformed, *o.Bad)
			}
			log.Warn("spool: malformed file left in place", "file", o.File, "reason", o.Note)
		case queue.Deferred:
			if o.NotStarted {
				res.NotStarted++
				return
			}
			res.Deferred++
			s.setError(key, o.Reason)
		default: // failed: kept
			res.Deferred++
			s.setError(key, o.Reason)
		}
	}
	_, err := queue.Run(ctx, qc)
	flushLine()
	switch {
	case errors.Is(err, proto.ErrInterrupted):
		res.Interrupted = true
		log.Warn("spool: interrupted; the rest stays queued", "messages", res.NotStarted)
		return res, nil
	case err == nil, errors.Is(err, queue.ErrRemaining):
		return res, nil
	}
	return res, err
}

// funcBouncer makes a BounceFunc a queue.Bouncer.
type funcBouncer BounceFunc

func (f funcBouncer) Bounce(ctx context.Context, n *queue.Notice) (string, bool, error) {
	if n.Group == nil {
		return "", false, errors.New("a malformed file has no envelope to return it with")
	}
	if err := f(ctx, n.Group, n.Reason, n.TooOld); err != nil {
		return "", false, errors.New("bounce not sent: " + err.Error())
	}
	return "bounce accepted for " + strings.Join(n.Group.Recipients(), ","), false, nil
}
