// Package queue runs a queue: it delivers the mail stored in a
// maildir-shaped queue directory (serialmail's maildir of outgoing mail,
// the sendmail spool) through a transport (QMQP, QMTP, SMTP) and acts on
// each recipient's reply. It is the one engine behind flush-maildir,
// maildirqmtp, sendmail -q and inject --flush.
//
// One run locks the directory (a second run fails at once with
// ErrLocked), scans it, groups identical messages when asked, hands the
// packages to the transport and then, per recipient file:
//
//   - K: the file is removed (the scanned file only, see
//     maildir.Entry.Remove); the directories are fsync'd in batches and at
//     the end, so a crash can bring a delivered file back (sent twice)
//     but never lose one;
//   - Z: the file stays with its last error, until it is older than the
//     lifetime: then it counts as D;
//   - D: an RFC 3464 bounce is sent (Bouncer), and only once it is
//     accepted is the file removed.
//
// Guarantees carried from the transports and proto/store/maildir: the file
// sent is the file scanned (a file replaced since the scan is reported
// as malformed, never sent); a reply counts only for a package sent in
// full; when proto.StopStarting(ctx) closes no further package is
// started, the replies owed are read and acted on, and the run says it
// was interrupted. A file whose envelope cannot be read, or that is not
// a regular file, is reported on every run; past the lifetime it is
// reported to the postmaster and removed.
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/queue/bounce"
	"qbox/proto/store/maildir"
)

// DefaultLifetime is how long a message may be deferred before it is
// bounced: serialmail's 1209600 seconds.
const DefaultLifetime = 14 * 24 * time.Hour

// DefaultRounds is how many sessions one run may use: after a session
// that ended early (connection lost) but made progress, the messages
// that got no reply are tried again at once, as maildirserial does.
const DefaultRounds = 5

// Statuses of an Outcome.
const (
	Succeeded = "succeeded"
	Deferred  = "deferred"
	Failed    = "failed"
	Bounced   = "bounced"
	Discarded = "discarded"
	Malformed = "malformed"
)

// Config is one run over one queue directory.
type Config struct {
	Dir    string
	Prefix string // maildir.ScanOptions.Prefix

	Transport Transport
	Rounds    int  // at most this many sessions; 0: DefaultRounds
	Group     bool // one package per group of identical messages

	// Lifetime: a Z for a file older than this counts as D, and a
	// malformed file older than this is reported and removed. 0: never.
	Lifetime time.Duration
	// ExpireUnanswered applies Lifetime also to a Z the transport made
	// up (no server reached): a spool whose only relay is gone for good
	// must bounce in the end. Without it only a server's Z expires
	// (serialmail's rule: an unreachable server never causes a bounce).
	ExpireUnanswered bool

	// Bouncer reports permanent failures; nil keeps them, reported,
	// with KeepNote ("kept (KeepNote)").
	Bouncer  Bouncer
	KeepNote string

	// Select, when set, limits the run to the files it accepts (an
	// operator's `sendmail -qR...` or `qbox queue flush ID`): the rest,
	// and malformed files, are left untouched and uncounted.
	Select func(*maildir.Entry) bool

	Events Events
	Now    func() time.Time
}

// Events are how a run reports; every field may be nil. They are called
// from the goroutine that called Run, never concurrently.
type Events struct {
	// Outcome is a file's final outcome in this run.
	Outcome func(Outcome)
	// Scanned is each scan's result.
	Scanned func(*maildir.ScanResult)
	// Session says a session starts with this many packages and bytes.
	Session func(packages int, bytes int64)
	// Answered says a package got all its replies (bytes: its size).
	Answered func(bytes int64)
}

// Outcome is what happened to one file.
type Outcome struct {
	File      string `json:"file"`
	Sender    string `json:"sender"`
	Recipient string `json:"recipient"`
	// Status is succeeded, deferred, failed, bounced, discarded or
	// malformed.
	Status   string `json:"status"`
	Reply    string `json:"reply,omitempty"`    // the server's reply, status byte first
	Server   string `json:"server,omitempty"`   // who said it
	Protocol string `json:"protocol,omitempty"` // what carried it: QMTP, QMQP or SMTP
	Note     string `json:"note,omitempty"`     // what qbox did or could not do

	// For callers that keep their own records (the spool's err/ files).
	Entry      *maildir.Entry     `json:"-"` // the file, when its envelope was read
	Group      *maildir.Group     `json:"-"` // the package it travelled in, when it did
	Bad        *maildir.Malformed `json:"-"` // the file, when it is malformed
	NotStarted bool               `json:"-"` // deferred without being offered to a server (interrupted)
	Reason     string             `json:"-"` // the last error in words (deferred, failed)
}

// Summary counts a run's outcomes.
type Summary struct {
	Succeeded int     `json:"succeeded"`
	Deferred  int     `json:"deferred"`
	Failed    int     `json:"failed"`
	Bounced   int     `json:"bounced"`
	Discarded int     `json:"discarded"`
	Malformed int     `json:"malformed"`
	Remaining int     `json:"remaining"` // files left in the queue for the next run
	Sessions  int     `json:"sessions"`
	BytesSent int64   `json:"bytes_sent"`
	Seconds   float64 `json:"seconds"`
	// Unreachable is set when no session could be opened.
	Unreachable string `json:"unreachable,omitempty"`
	// Interrupted is set when a signal stopped the run: no package was
	// started after it, the replies owed were read (a second signal cuts
	// that short), and what is left stays for the next run.
	Interrupted bool `json:"interrupted,omitempty"`
}

// ErrLocked means another run holds the queue.
var ErrLocked = maildir.ErrLocked

// ErrRemaining means the run finished but files are left.
var ErrRemaining = errors.New("messages remain in the maildir")

// Run runs the queue once. It returns the summary and nil when nothing is
// left; ErrRemaining when files stay for a later run; an
// *UnreachableError when no server could be reached; an error wrapping
// ErrLocked when another run holds the queue; an error wrapping
// proto.ErrInterrupted when ctx's stop-starting channel closed; the
// transport's error wrapping ErrViolation (or qmtp.ErrRemoteViolation)
// when a server broke its protocol.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = DefaultRounds
	}
	lock, err := maildir.TryLock(cfg.Dir)
	if err != nil {
		return Summary{}, err
	}
	defer lock.Unlock()

	r := &runner{cfg: cfg, dead: map[string]bool{}, provisional: map[string]Outcome{}}
	runErr := r.run(ctx)
	r.syncDirs()
	for _, name := range r.provisionalOrder {
		if out, ok := r.provisional[name]; ok {
			delete(r.provisional, name)
			r.sum.Deferred++
			out.Status = Deferred
			r.emit(out)
		}
	}
	if proto.StoppedStarting(ctx) {
		r.sum.Interrupted = true
		if runErr == nil {
			runErr = fmt.Errorf("flush: %w", proto.ErrInterrupted)
		}
	}
	r.sum.Seconds = time.Since(start).Seconds()
	if res, err := maildir.Scan(cfg.Dir, maildir.ScanOptions{Prefix: cfg.Prefix, TmpMaxAge: -1}); err == nil {
		r.sum.Remaining = len(res.Entries) + len(res.Malformed)
	}
	if runErr != nil {
		return r.sum, runErr
	}
	if r.sum.Remaining > 0 {
		return r.sum, ErrRemaining
	}
	return r.sum, nil
}

type runner struct {
	cfg Config
	sum Summary
	// dead holds files that got a result this run (or failed to unlink
	// after K): they are never offered again in this run, so nothing is
	// sent twice.
	dead map[string]bool
	// provisional holds files that got no reply in a session; they are
	// reported as deferred only if no later round settles them.
	provisional      map[string]Outcome
	provisionalOrder []string
	unlinked         int
}

func (r *runner) run(ctx context.Context) error {
	for round := 0; round < r.cfg.Rounds; round++ {
		if proto.StoppedStarting(ctx) {
			return fmt.Errorf("flush: %w", proto.ErrInterrupted)
		}
		res, err := maildir.Scan(r.cfg.Dir, maildir.ScanOptions{Prefix: r.cfg.Prefix, Now: r.cfg.Now()})
		if err != nil {
			return err
		}
		if r.cfg.Events.Scanned != nil {
			r.cfg.Events.Scanned(res)
		}
		if round == 0 && r.cfg.Select == nil {
			for i := range res.Malformed {
				r.malformed(ctx, &res.Malformed[i])
			}
		}
		var entries []maildir.Entry
		for _, e := range res.Entries {
			if !r.dead[e.Name] && (r.cfg.Select == nil || r.cfg.Select(&e)) {
				entries = append(entries, e)
			}
		}
		if len(entries) == 0 {
			return nil
		}
		var groups []maildir.Group
		if r.cfg.Group {
			groups = maildir.GroupEntries(entries)
		} else {
			groups = make([]maildir.Group, len(entries))
			for i, e := range entries {
				groups[i] = maildir.Group{Sender: e.Sender, Entries: []maildir.Entry{e}}
			}
		}
		replies, err := r.session(ctx, groups)
		var ue *UnreachableError
		if errors.As(err, &ue) {
			// Nothing was sent, nothing is touched.
			r.sum.Unreachable = ue.Err.Error()
			return err
		}
		if errors.Is(err, proto.ErrInterrupted) || isViolation(err) {
			// A server that answers what it cannot have received gets
			// no second session in this run.
			return err
		}
		if err == nil || replies == 0 || ctx.Err() != nil {
			// Done, or a session that made no progress: a rerun now
			// would fare no better.
			return nil
		}
	}
	return nil
}

// pending is a recipient file to bounce after the session.
type pending struct {
	pkg     int
	entry   maildir.Entry
	outcome Outcome
	tooOld  bool
}

// session hands groups to the transport once and acts on the replies.
// It returns the number of server replies.
func (r *runner) session(ctx context.Context, groups []maildir.Group) (int, error) {
	pkgs := make([]Package, len(groups))
	openErr := make([]error, len(groups))
	sizes := make([]int64, len(groups))
	ws, _ := r.cfg.Transport.(wireSizer)
	var total int64
	for i := range groups {
		g := &groups[i]
		e := g.Entries[0]
		pkgs[i] = Package{
			Sender:     g.Sender,
			Recipients: g.Recipients(),
			Size:       e.MessageSize(),
			Open: func() (io.ReadCloser, error) {
				rd, f, err := e.OpenMessage()
				if err != nil {
					openErr[i] = err
					return nil, err
				}
				return struct {
					io.Reader
					io.Closer
				}{rd, f}, nil
			},
		}
		sizes[i] = pkgs[i].Size
		if ws != nil {
			sizes[i] = ws.WireSize(&pkgs[i])
		}
		total += sizes[i]
	}
	var failed []pending
	started := false
	stats, err := r.cfg.Transport.Deliver(ctx, pkgs, func(res Result) {
		if !started {
			started = true
			if r.cfg.Events.Session != nil {
				r.cfg.Events.Session(len(pkgs), total)
			}
		}
		g := &groups[res.Package]
		e := &g.Entries[res.Recipient]
		r.result(res, g, e, openErr[res.Package], &failed)
		if res.Recipient == len(g.Entries)-1 && r.cfg.Events.Answered != nil {
			r.cfg.Events.Answered(sizes[res.Package])
		}
	})
	r.sum.Sessions += stats.Sessions
	r.sum.BytesSent += stats.BytesOut
	r.bounceAll(ctx, failed)
	return stats.Replies, err
}

// result acts on one recipient's reply.
func (r *runner) result(res Result, g *maildir.Group, e *maildir.Entry, openErr error, failed *[]pending) {
	out := Outcome{File: e.Name, Sender: e.Sender, Recipient: e.Recipient, Reply: res.Reply.String(),
		Server: res.Server, Protocol: res.Protocol, Entry: e, Group: g}
	delete(r.provisional, e.Name)
	var bad maildir.Malformed
	if !res.FromServer && res.Recipient == 0 && errors.As(openErr, &bad) {
		// The file the scan saw is gone or changed: nothing of it was
		// sent, and it is reported as what it now is.
		r.dead[e.Name] = true
		r.sum.Malformed++
		out.Status, out.Note, out.Bad, out.Reply, out.Server, out.Protocol = Malformed, bad.Reason, &bad, "", "", ""
		r.emit(out)
		return
	}
	expired := r.cfg.Lifetime > 0 && r.cfg.Now().Sub(e.ModTime) > r.cfg.Lifetime
	// A permanent failure the transport decided itself (a message over
	// the server's SIZE) is as final as the server's own D: no later run
	// changes it, so it bounces now rather than waiting for ever.
	if !res.FromServer && res.Reply.Status != proto.Permanent {
		out.Server = ""
		out.Reason = res.Reply.Text
		if expired && r.cfg.ExpireUnanswered && !res.NotStarted {
			r.dead[e.Name] = true
			*failed = append(*failed, pending{pkg: res.Package, entry: *e, outcome: out, tooOld: true})
			return
		}
		// No reply: the file may be offered again in the next round; it
		// is reported as deferred only if it ends the run so.
		out.NotStarted = res.NotStarted
		if _, seen := r.provisional[e.Name]; !seen {
			r.provisionalOrder = append(r.provisionalOrder, e.Name)
		}
		r.provisional[e.Name] = out
		return
	}
	r.dead[e.Name] = true
	switch res.Reply.Status {
	case proto.OK:
		r.sum.Succeeded++
		out.Status = Succeeded
		if err := e.Remove(); err != nil {
			out.Note = "delivered, but the file could not be removed (it will be sent again next run): " + err.Error()
		} else {
			r.unlinked++
			if r.unlinked%256 == 0 {
				r.syncDirs()
			}
		}
		r.emit(out)
	case proto.Permanent:
		*failed = append(*failed, pending{pkg: res.Package, entry: *e, outcome: out})
	default:
		out.Reason = (&proto.Error{Reply: res.Reply}).Error()
		if expired {
			*failed = append(*failed, pending{pkg: res.Package, entry: *e, outcome: out, tooOld: true})
			return
		}
		r.sum.Deferred++
		out.Status = Deferred
		r.emit(out)
	}
}

// bounceAll reports permanent failures: one notice per package (listing
// every failed recipient of it); the files are removed only once the
// bounce was accepted.
func (r *runner) bounceAll(ctx context.Context, failed []pending) {
	for start := 0; start < len(failed); {
		end := start + 1
		for end < len(failed) && failed[end].pkg == failed[start].pkg {
			end++
		}
		r.bounceOne(ctx, failed[start:end])
		start = end
	}
}

func diagnosticType(protocol string) string {
	switch protocol {
	case "SMTP":
		return "smtp"
	case "QMQP":
		return "X-QMQP"
	}
	return "" // X-QMTP
}

func (r *runner) bounceOne(ctx context.Context, items []pending) {
	first := items[0]
	reason := proto.Printable(first.outcome.Reply, 2000)
	if len(reason) > 1 {
		reason = reason[1:]
	}
	if first.tooOld {
		reason = fmt.Sprintf("queued %s ago; last error: %s", r.cfg.Now().Sub(first.entry.ModTime).Round(time.Second), reason)
	}
	finish := func(status, note string) {
		for _, it := range items {
			out := it.outcome
			out.Status = status
			out.Note = note
			if status == Failed {
				out.Reason = "permanent failure: " + reason + "; " + note
			}
			switch status {
			case Bounced:
				r.sum.Bounced++
			case Discarded:
				r.sum.Discarded++
			default:
				r.sum.Failed++
			}
			r.emit(out)
		}
	}
	if r.cfg.Bouncer == nil {
		note := "kept (" + r.cfg.KeepNote + ")"
		if first.tooOld {
			note = "too old; " + note
		}
		finish(Failed, note)
		return
	}
	g := &maildir.Group{Sender: first.entry.Sender}
	n := &Notice{Sender: first.entry.Sender, Arrival: first.entry.ModTime, Size: first.entry.MessageSize(),
		Reason: reason, TooOld: first.tooOld, Group: g}
	e := first.entry
	n.Open = func() (io.Reader, io.Closer, error) {
		rd, f, err := e.OpenMessage()
		if err != nil {
			return nil, nil, err
		}
		return rd, f, nil
	}
	for _, it := range items {
		g.Entries = append(g.Entries, it.entry)
		if it.entry.ModTime.Before(n.Arrival) {
			n.Arrival = it.entry.ModTime
		}
		f := bounce.Failure{Recipient: it.entry.Recipient, TooOld: it.tooOld, DiagnosticType: diagnosticType(it.outcome.Protocol)}
		if it.outcome.Server != "" {
			f.RemoteMTA = it.outcome.Server
		}
		if len(it.outcome.Reply) > 1 {
			f.Diagnostic = it.outcome.Reply[1:]
		}
		n.Failures = append(n.Failures, f)
	}
	note, discarded, err := r.cfg.Bouncer.Bounce(ctx, n)
	if err != nil {
		finish(Failed, "kept: "+err.Error())
		return
	}
	var kept []string
	for _, it := range items {
		if err := it.entry.Remove(); err == nil {
			r.unlinked++
		} else if !errors.Is(err, os.ErrNotExist) {
			kept = append(kept, err.Error())
		}
	}
	r.syncDirs()
	if len(kept) > 0 {
		// The bounce went out, but a file that stays would bounce again
		// on every run: say so, loudly, on the outcome.
		note += "; but the file could not be removed (it will bounce again next run): " + strings.Join(kept, "; ")
	}
	if discarded {
		finish(Discarded, note)
		return
	}
	finish(Bounced, note)
}

// malformed reports a file that cannot be sent; past the lifetime it is
// reported to the postmaster (with its contents when it is a regular
// file) and removed, unless there is no way to report it.
func (r *runner) malformed(ctx context.Context, m *maildir.Malformed) {
	r.dead[m.Name] = true
	out := Outcome{File: m.Name, Status: Malformed, Note: m.Reason, Bad: m, Reason: "malformed: " + m.Reason}
	age := r.cfg.Now().Sub(m.ModTime)
	if r.cfg.Lifetime <= 0 || m.ModTime.IsZero() || age <= r.cfg.Lifetime {
		r.sum.Malformed++
		r.emit(out)
		return
	}
	if r.cfg.Bouncer == nil {
		r.sum.Malformed++
		out.Note += "; too old; kept (" + r.cfg.KeepNote + ")"
		r.emit(out)
		return
	}
	diag := fmt.Sprintf("the queue file %s in %s cannot be sent (%s); it was queued %s ago and is now removed",
		m.Name, r.cfg.Dir, m.Reason, age.Round(time.Second))
	n := &Notice{
		Sender:   "", // no envelope to trust: the postmaster is told
		Arrival:  m.ModTime,
		Size:     m.Size,
		Reason:   diag,
		TooOld:   true,
		Failures: []bounce.Failure{{Recipient: "unknown (malformed queue file)", Diagnostic: diag}},
	}
	// A regular file goes with the report; a symlink or FIFO is never
	// opened, and the report goes without it.
	if _, f, err := m.Open(); err == nil {
		f.Close()
		n.Open = func() (io.Reader, io.Closer, error) {
			rd, f, err := m.Open()
			if err != nil {
				return nil, nil, err
			}
			return rd, f, nil
		}
	} else {
		n.Size = 0
	}
	note, discarded, err := r.cfg.Bouncer.Bounce(ctx, n)
	if err != nil {
		r.sum.Malformed++
		out.Note += "; too old; kept: " + err.Error()
		r.emit(out)
		return
	}
	if err := m.Remove(); err != nil {
		r.sum.Malformed++
		out.Note += "; too old; reported, but not removed: " + err.Error()
		r.emit(out)
		return
	}
	r.unlinked++
	r.syncDirs()
	out.Note = m.Reason + "; too old: " + note + "; removed"
	out.Status = Bounced
	if discarded {
		out.Status = Discarded
		r.sum.Discarded++
	} else {
		r.sum.Bounced++
	}
	r.emit(out)
}

// syncDirs makes the unlinks so far durable. Until then a crash could
// bring a delivered file back (sent twice, never lost).
func (r *runner) syncDirs() {
	for _, sub := range []string{"new", "cur"} {
		maildir.SyncDir(filepath.Join(r.cfg.Dir, sub))
	}
}

func (r *runner) emit(o Outcome) {
	if r.cfg.Events.Outcome != nil {
		r.cfg.Events.Outcome(o)
	}
}
