package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/maildir"
	"qbox/proto/qmqp"
)

// Sender sends one message to a QMQP server (a *qmqp.Client is one).
type Sender interface {
	Send(ctx context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error)
}

// BounceFunc returns a permanently failed group to its sender; tooOld
// says the message expired in the spool rather than being refused. It
// returns nil once the bounce has been accepted (or deliberately dropped,
// for a bounce of a bounce); only then are the group's files removed.
type BounceFunc func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error

// FlushConfig is how Flush delivers.
type FlushConfig struct {
	Client Sender
	Bounce BounceFunc
	// Lifetime is how long a message may stay queued; once it is older
	// a temporary failure is treated as permanent and the message
	// bounces. 0 keeps messages forever.
	Lifetime time.Duration
	Log      *slog.Logger // nil discards
	Now      func() time.Time
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

// Flush delivers everything queued. Files with the same sender and
// byte-identical content travel as one QMQP message with all their
// recipients. A file is removed only after the server said K (and the
// removal is fsync'd), or after a D (or expiry) once its bounce was
// accepted; on Z or any transport failure it stays, with the error
// recorded for mailq. An exclusive lock on the spool makes a second
// concurrent Flush fail with ErrLocked instead of sending the same files.
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
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	lock, err := maildir.TryLock(s.Dir)
	if err != nil {
		return res, err
	}
	defer lock.Unlock()

	scan, err := maildir.Scan(s.Dir, maildir.ScanOptions{})
	if err != nil {
		return res, err
	}
	res.Malformed = scan.Malformed
	for _, m := range scan.Malformed {
		log.Warn("spool: malformed file left in place", "file", m.Name, "reason", m.Reason)
	}
	live := map[string]bool{}
	for _, e := range scan.Entries {
		live[filepath.Base(e.Name)] = true
	}
	s.cleanErrors(live)

	groups := maildir.GroupEntries(scan.Entries)
	var unreachable error
	for gi := range groups {
		g := &groups[gi]
		if proto.StoppedStarting(ctx) {
			res.Interrupted = true
			for _, rest := range groups[gi:] {
				res.NotStarted += len(rest.Entries)
			}
			log.Warn("spool: interrupted; the rest stays queued", "messages", len(groups)-gi)
			break
		}
		if unreachable == nil {
			if err := ctx.Err(); err != nil {
				unreachable = err
			}
		}
		var reply proto.Reply
		var err error
		if unreachable != nil {
			// Every server refused the connection a moment ago: don't
			// wait out connect timeouts once per message.
			err = fmt.Errorf("not attempted: %w", unreachable)
		} else {
			reply, err = s.send(ctx, cfg.Client, g)
		}
		var ce *qmqp.ConnectError
		switch {
		case err == nil && reply.Status == proto.OK:
			s.remove(g, log, &res)
			log.Info("spool: delivered", "sender", g.Sender, "recipients", strings.Join(g.Recipients(), ","), "reply", proto.Printable(reply.Text, 200))
			res.Delivered += len(g.Entries)
			continue
		case err == nil && reply.Status == proto.Permanent:
			s.bounce(ctx, cfg, g, proto.Printable(reply.Text, 2000), false, log, &res)
			continue
		case unreachable == nil && errors.As(err, &ce):
			unreachable = err
		}
		reason := ""
		if err != nil {
			reason = err.Error()
		} else {
			reason = (&proto.Error{Reply: reply}).Error()
		}
		if cfg.Lifetime > 0 && now().Sub(g.ModTime()) > cfg.Lifetime {
			s.bounce(ctx, cfg, g, fmt.Sprintf("queued %s ago; last error: %s",
				now().Sub(g.ModTime()).Round(time.Second), reason), true, log, &res)
			continue
		}
		log.Warn("spool: deferred", "sender", g.Sender, "recipients", strings.Join(g.Recipients(), ","), "error", reason)
		s.deferGroup(g, reason, &res)
	}
	return res, nil
}

func (s *Spool) send(ctx context.Context, c Sender, g *maildir.Group) (proto.Reply, error) {
	if c == nil {
		return proto.Reply{}, errors.New("no QMQP client configured")
	}
	e := &g.Entries[0]
	r, f, err := e.OpenMessage()
	if err != nil {
		return proto.Reply{}, err
	}
	defer f.Close()
	return c.Send(ctx, proto.Envelope{Sender: g.Sender, Recipients: g.Recipients()}, r, e.MessageSize())
}

func (s *Spool) deferGroup(g *maildir.Group, reason string, res *FlushResult) {
	for _, e := range g.Entries {
		s.setError(filepath.Base(e.Name), reason)
	}
	res.Deferred += len(g.Entries)
}

func (s *Spool) bounce(ctx context.Context, cfg FlushConfig, g *maildir.Group, reason string, tooOld bool, log *slog.Logger, res *FlushResult) {
	if cfg.Bounce == nil {
		s.deferGroup(g, "permanent failure: "+reason+"; kept: no bounce configured", res)
		return
	}
	if err := cfg.Bounce(ctx, g, reason, tooOld); err != nil {
		log.Warn("spool: bounce failed, message kept", "sender", g.Sender, "recipients", strings.Join(g.Recipients(), ","), "reason", reason, "error", err)
		s.deferGroup(g, "permanent failure: "+reason+"; bounce not sent: "+err.Error(), res)
		return
	}
	s.remove(g, log, res)
	log.Info("spool: bounced", "sender", g.Sender, "recipients", strings.Join(g.Recipients(), ","), "reason", reason)
	res.Bounced += len(g.Entries)
}

// remove unlinks a delivered group and fsyncs the directories, so a crash
// after the reply cannot resurrect a delivered file.
func (s *Spool) remove(g *maildir.Group, log *slog.Logger, res *FlushResult) {
	dirs := map[string]bool{}
	for _, e := range g.Entries {
		if err := e.Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
			// The server has the message; this file would send it again.
			log.Error("spool: cannot remove a delivered file: it will be delivered twice", "file", e.Path, "error", err)
			s.setError(filepath.Base(e.Name), "delivered, but could not be removed: "+err.Error())
			continue
		}
		dirs[filepath.Dir(e.Path)] = true
		s.clearError(filepath.Base(e.Name))
	}
	for d := range dirs {
		if err := maildir.SyncDir(d); err != nil {
			log.Error("spool: fsync after removal failed", "dir", d, "error", err)
		}
	}
}
