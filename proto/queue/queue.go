// Package queue runs a queue: it delivers the mail a Source stores
// (serialmail's maildir of outgoing mail through Maildir, the sendmail
// spool through proto/queue/spool) through a transport (QMQP, QMTP, SMTP)
// and acts on each recipient's reply. It is the one engine behind
// flush-maildir, maildirqmtp, maildirsmtp, sendmail -q, inject --flush and
// qbox queue flush: each calls Run and renders its outcomes (Printer,
// Logger, or its own words).
//
// One run locks the source (a second run fails at once with ErrLocked),
// scans it, hands its messages to the transport and then, per recipient:
//
//   - K: the source forgets it (Source.Done: a maildir removes the
//     scanned file only, see maildir.Entry.Remove); the removals are made
//     durable in batches and at the end (Source.Sync), so a crash can
//     bring a delivered recipient back (sent twice) but never lose one;
//   - Z: it stays with its last error (Source.Defer), until it is older
//     than the lifetime: then it counts as D;
//   - D: an RFC 3464 bounce is sent (Bouncer), and only once it is
//     accepted does the source forget it.
//
// Guarantees carried from the transports and the sources: what is sent is
// what was scanned (an item changed since the scan is reported as
// malformed, never sent); a reply counts only for a package sent in full;
// when proto.StopStarting(ctx) closes no further package is started, the
// replies owed are read and acted on, and the run says it was
// interrupted. An item that cannot be sent (Broken) is reported on every
// run; past the lifetime it is reported to the postmaster and removed.
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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

// Config is one run over one queue.
type Config struct {
	Source    Source
	Transport Transport
	Rounds    int // at most this many sessions; 0: DefaultRounds

	// Lifetime: a Z for a recipient queued longer than this counts as
	// D, and a broken item older than this is reported and removed. 0:
	// never.
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

	Events Events
	Now    func() time.Time
}

// Events are how a run reports; every field may be nil. They are called
// from the goroutine that called Run, never concurrently.
type Events struct {
	// Outcome is a recipient's (or a broken item's) final outcome in
	// this run.
	Outcome func(Outcome)
	// Session says a session starts with this many packages and bytes.
	Session func(packages int, bytes int64)
	// Answered says a package got all its replies (bytes: its size).
	Answered func(bytes int64)
}

// Outcome is what happened to one recipient (or one broken item).
type Outcome struct {
	File      string `json:"file"` // the Entry's (or Broken's) name in the store
	Sender    string `json:"sender"`
	Recipient string `json:"recipient"`
	// Status is succeeded, deferred, failed, bounced, discarded or
	// malformed.
	Status   string `json:"status"`
	Reply    string `json:"reply,omitempty"`    // the server's reply, status byte first
	Server   string `json:"server,omitempty"`   // who said it
	Protocol string `json:"protocol,omitempty"` // what carried it: QMTP, QMQP or SMTP
	Note     string `json:"note,omitempty"`     // what qbox did or could not do

	// Stored and Index are the message and its recipient the outcome is
	// for (nil for a broken item); Bad the broken item.
	Stored     *Stored `json:"-"`
	Index      int     `json:"-"`
	Bad        *Broken `json:"-"`
	NotStarted bool    `json:"-"` // deferred without being offered to a server (interrupted)
	Reason     string  `json:"-"` // the last error in words (deferred, failed)
}

// Summary counts a run's outcomes.
type Summary struct {
	Succeeded int     `json:"succeeded"`
	Deferred  int     `json:"deferred"`
	Failed    int     `json:"failed"`
	Bounced   int     `json:"bounced"`
	Discarded int     `json:"discarded"`
	Malformed int     `json:"malformed"`
	Remaining int     `json:"remaining"` // left in the queue for the next run (Source.Left)
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

// Unsettled counts the recipients (and broken items) this run left for a
// later one: deferred, failed and malformed. Remaining counts the whole
// store, what the run did not look at (a selection) included.
func (s Summary) Unsettled() int { return s.Deferred + s.Failed + s.Malformed }

// ErrLocked means another run holds the queue.
var ErrLocked = maildir.ErrLocked

// ErrRemaining means the run finished but messages are left.
var ErrRemaining = errors.New("messages remain in the maildir")

// Run runs the queue once. It returns the summary and nil when nothing is
// left; ErrRemaining when messages stay for a later run; an
// *UnreachableError when no server could be reached; an error wrapping
// ErrLocked when another run holds the queue; an error wrapping
// proto.ErrInterrupted when ctx's stop-starting channel closed; the
// transport's error wrapping proto.ErrRemoteViolation when a server broke
// its protocol.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = DefaultRounds
	}
	unlock, err := cfg.Source.Lock()
	if err != nil {
		return Summary{}, err
	}
	defer unlock()

	r := &runner{cfg: cfg, src: cfg.Source, dead: map[string]bool{}, provisional: map[string]Outcome{}}
	runErr := r.run(ctx)
	for _, name := range r.provisionalOrder {
		if out, ok := r.provisional[name]; ok {
			delete(r.provisional, name)
			r.sum.Deferred++
			out.Status = Deferred
			if !out.NotStarted {
				r.src.Defer(out.Stored, out.Index, out.Reason)
			}
			r.emit(out)
		}
	}
	// After the deferrals: a source that keeps them (the spool's state
	// files) writes them with the removals.
	r.src.Sync()
	if proto.StoppedStarting(ctx) {
		r.sum.Interrupted = true
		if runErr == nil {
			runErr = fmt.Errorf("flush: %w", proto.ErrInterrupted)
		}
	}
	r.sum.Seconds = time.Since(start).Seconds()
	if n, err := r.src.Left(); err == nil {
		r.sum.Remaining = n
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
	src Source
	sum Summary
	// dead holds entries that got a result this run (or failed to be
	// removed after K): they are never offered again in this run, so
	// nothing is sent twice.
	dead map[string]bool
	// provisional holds entries that got no reply in a session; they
	// are reported as deferred only if no later round settles them.
	provisional      map[string]Outcome
	provisionalOrder []string
	removed          int
}

// pkgRef is a package of one session: the stored message and, for each
// of the package's recipients, its index in the message.
type pkgRef struct {
	m   *Stored
	idx []int
}

func (r *runner) run(ctx context.Context) error {
	for round := 0; round < r.cfg.Rounds; round++ {
		if proto.StoppedStarting(ctx) {
			return fmt.Errorf("flush: %w", proto.ErrInterrupted)
		}
		scan, err := r.src.Scan(r.cfg.Now())
		if err != nil {
			return err
		}
		if round == 0 {
			for _, b := range scan.Broken {
				r.broken(ctx, b)
			}
		}
		var refs []pkgRef
		for _, m := range scan.Messages {
			ref := pkgRef{m: m}
			for i, e := range m.Entries {
				if !r.dead[e.Name] {
					ref.idx = append(ref.idx, i)
				}
			}
			if len(ref.idx) > 0 {
				refs = append(refs, ref)
			}
		}
		if len(refs) == 0 {
			return nil
		}
		replies, err := r.session(ctx, refs)
		var ue *UnreachableError
		if errors.As(err, &ue) {
			// Nothing was sent, nothing is touched.
			r.sum.Unreachable = ue.Err.Error()
			return err
		}
		if errors.Is(err, proto.ErrInterrupted) || errors.Is(err, proto.ErrRemoteViolation) {
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

// pending is a recipient to bounce after the session.
type pending struct {
	pkg     int
	m       *Stored
	index   int
	outcome Outcome
	tooOld  bool
}

// session hands the packages to the transport once and acts on the
// replies. It returns the number of server replies.
func (r *runner) session(ctx context.Context, refs []pkgRef) (int, error) {
	pkgs := make([]proto.Message, len(refs))
	openErr := make([]error, len(refs))
	sizes := make([]int64, len(refs))
	ws, _ := r.cfg.Transport.(wireSizer)
	var total int64
	for i, ref := range refs {
		p := ref.m.Message
		if len(ref.idx) < len(p.Recipients) {
			p.Recipients = make([]string, len(ref.idx))
			for j, k := range ref.idx {
				p.Recipients[j] = ref.m.Message.Recipients[k]
			}
		}
		open := p.Open
		p.Open = func() (io.ReadCloser, error) {
			rc, err := open()
			if err != nil {
				openErr[i] = err
			}
			return rc, err
		}
		pkgs[i] = p
		sizes[i] = p.Size
		if ws != nil {
			sizes[i] = ws.WireSize(&pkgs[i])
		}
		total += sizes[i]
	}
	var failed []pending
	started := false
	stats, err := r.cfg.Transport.Deliver(ctx, pkgs, func(res proto.Result) {
		if !started {
			started = true
			if r.cfg.Events.Session != nil {
				r.cfg.Events.Session(len(pkgs), total)
			}
		}
		ref := &refs[res.Message]
		r.result(res, ref.m, ref.idx[res.Recipient], openErr[res.Message], &failed)
		if res.Recipient == len(ref.idx)-1 && r.cfg.Events.Answered != nil {
			r.cfg.Events.Answered(sizes[res.Message])
		}
	})
	r.sum.Sessions += stats.Sessions
	r.sum.BytesSent += stats.BytesOut
	r.bounceAll(ctx, failed)
	return stats.Replies, err
}

// done has the source forget recipient i of m, and makes the removals
// durable every 256.
func (r *runner) done(m *Stored, i int) error {
	err := r.src.Done(m, i)
	if err == nil {
		r.removed++
		if r.removed%256 == 0 {
			r.src.Sync()
		}
	}
	return err
}

// result acts on one recipient's reply.
func (r *runner) result(res proto.Result, m *Stored, i int, openErr error, failed *[]pending) {
	e := m.Entries[i]
	out := Outcome{File: e.Name, Sender: m.Message.Sender, Recipient: m.Message.Recipients[i], Reply: res.Reply.String(),
		Server: res.Server, Protocol: res.Protocol, Stored: m, Index: i}
	delete(r.provisional, e.Name)
	var bad *Broken
	if !res.FromServer && res.Recipient == 0 && errors.As(openErr, &bad) {
		// The item the scan saw is gone or changed: nothing of it was
		// sent, and it is reported as what it now is.
		r.dead[e.Name] = true
		r.sum.Malformed++
		out.Status, out.Note, out.Bad, out.Reply, out.Server, out.Protocol = Malformed, bad.Reason, bad, "", "", ""
		out.Stored = nil
		r.emit(out)
		return
	}
	expired := r.cfg.Lifetime > 0 && r.cfg.Now().Sub(e.Queued) > r.cfg.Lifetime
	// A permanent failure the transport decided itself (a message over
	// the server's SIZE) is as final as the server's own D: no later run
	// changes it, so it bounces now rather than waiting for ever.
	if !res.FromServer && res.Reply.Status != proto.Permanent {
		out.Server = ""
		out.Reason = res.Reply.Text
		if expired && r.cfg.ExpireUnanswered && !res.NotStarted {
			r.dead[e.Name] = true
			*failed = append(*failed, pending{pkg: res.Message, m: m, index: i, outcome: out, tooOld: true})
			return
		}
		// No reply: it may be offered again in the next round; it is
		// reported as deferred only if it ends the run so.
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
		if err := r.done(m, i); err != nil {
			out.Note = "delivered, but the file could not be removed (it will be sent again next run): " + err.Error()
		}
		r.emit(out)
	case proto.Permanent:
		*failed = append(*failed, pending{pkg: res.Message, m: m, index: i, outcome: out})
	default:
		out.Reason = (&proto.Error{Reply: res.Reply}).Error()
		if expired {
			*failed = append(*failed, pending{pkg: res.Message, m: m, index: i, outcome: out, tooOld: true})
			return
		}
		r.sum.Deferred++
		out.Status = Deferred
		r.src.Defer(m, i, out.Reason)
		if b, ok := r.src.(Backoff); ok {
			b.ServerDeferred(m, i)
		}
		r.emit(out)
	}
}

// bounceAll reports permanent failures: one notice per package (listing
// every failed recipient of it); the recipients are forgotten only once
// the bounce was accepted.
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
	m := first.m
	reason := proto.Printable(first.outcome.Reply, 2000)
	if len(reason) > 1 {
		reason = reason[1:]
	}
	if first.tooOld {
		reason = fmt.Sprintf("queued %s ago; last error: %s", r.cfg.Now().Sub(m.Entries[first.index].Queued).Round(time.Second), reason)
	}
	finish := func(status, note string) {
		for _, it := range items {
			out := it.outcome
			out.Status = status
			out.Note = note
			if status == Failed {
				out.Reason = "permanent failure: " + reason + "; " + note
				r.src.Defer(it.m, it.index, out.Reason)
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
	n := &Notice{Sender: m.Message.Sender, Arrival: m.Entries[first.index].Queued, Size: m.Message.Size,
		Reason: reason, TooOld: first.tooOld, Open: m.Message.Open,
		SizeRefused: strings.HasPrefix(first.outcome.Reply, "D") && bounce.SizeRefusal(first.outcome.Reply)}
	if m.Reopen != nil {
		i := first.index
		n.Open = func() (io.ReadCloser, error) { return m.Reopen(i) }
	}
	for _, it := range items {
		if q := m.Entries[it.index].Queued; q.Before(n.Arrival) {
			n.Arrival = q
		}
		f := bounce.Failure{Recipient: it.outcome.Recipient, TooOld: it.tooOld, DiagnosticType: diagnosticType(it.outcome.Protocol)}
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
	br, _ := r.src.(BounceRecorder)
	for _, it := range items {
		if br != nil {
			br.Bounced(it.m, it.index, note)
		}
		if err := r.src.Done(it.m, it.index); err == nil {
			r.removed++
		} else if !errors.Is(err, os.ErrNotExist) {
			kept = append(kept, err.Error())
		}
	}
	r.src.Sync()
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

// broken reports an item that cannot be sent; past the lifetime it is
// reported to the postmaster (with its contents when it can be read) and
// removed, unless there is no way to report it.
func (r *runner) broken(ctx context.Context, b *Broken) {
	r.dead[b.Name] = true
	out := Outcome{File: b.Name, Status: Malformed, Note: b.Reason, Bad: b, Reason: "malformed: " + b.Reason}
	age := r.cfg.Now().Sub(b.Queued)
	if r.cfg.Lifetime <= 0 || b.Queued.IsZero() || age <= r.cfg.Lifetime {
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
		b.Name, b.Store, b.Reason, age.Round(time.Second))
	n := &Notice{
		Sender:   "", // no envelope to trust: the postmaster is told
		Arrival:  b.Queued,
		Size:     b.Size,
		Reason:   diag,
		TooOld:   true,
		Failures: []bounce.Failure{{Recipient: "unknown (malformed queue file)", Diagnostic: diag}},
	}
	// What can be read goes with the report; a symlink or FIFO is never
	// opened, and the report goes without it.
	if rc, err := b.Open(); err == nil {
		rc.Close()
		n.Open = b.Open
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
	if err := r.src.Remove(b); err != nil {
		r.sum.Malformed++
		out.Note += "; too old; reported, but not removed: " + err.Error()
		r.emit(out)
		return
	}
	r.removed++
	r.src.Sync()
	out.Note = b.Reason + "; too old: " + note + "; removed"
	out.Status = Bounced
	if discarded {
		out.Status = Discarded
		r.sum.Discarded++
	} else {
		r.sum.Bounced++
	}
	r.emit(out)
}

func (r *runner) emit(o Outcome) {
	if r.cfg.Events.Outcome != nil {
		r.cfg.Events.Outcome(o)
	}
}
