package flush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/bounce"
	"qbox/proto/maildir"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
)

// DefaultLifetime is how long a message may be deferred before it is
// bounced: serialmail's 1209600 seconds.
const DefaultLifetime = 14 * 24 * time.Hour

// DefaultRounds is how many sessions one run may use: after a session
// that ended early (connection lost) but made progress, the messages
// that got no reply are tried again at once, as maildirserial does.
const DefaultRounds = 5

// Config is one flush of one maildir.
type Config struct {
	Dir    string
	Prefix string
	// Connect opens the QMTP connection and names the server it reached;
	// an error means nothing was sent.
	Connect func(ctx context.Context) (net.Conn, string, error)

	Lifetime time.Duration // 0: DefaultLifetime
	Rounds   int           // 0: DefaultRounds
	Group    bool          // one package per group of identical messages
	NoBounce bool          // keep D messages instead of bouncing them

	// BounceServers are QMQP servers for bounces; none means D messages
	// stay (and are reported) until one is configured.
	BounceServers []string
	Bounce        bounce.Config

	Client qmtp.Client // timeouts; Dial is not used (Connect is)

	Out      io.Writer // one line per message and a summary, or JSON
	JSON     bool
	Progress io.Writer // a terminal for the progress bar, or nil
	Now      func() time.Time
}

// Outcome is what happened to one message file.
type Outcome struct {
	File      string `json:"file"`
	Sender    string `json:"sender"`
	Recipient string `json:"recipient"`
	// Status is succeeded, deferred, failed, bounced, discarded or
	// malformed.
	Status string `json:"status"`
	Reply  string `json:"reply,omitempty"` // the server's reply, status byte first
	Server string `json:"server,omitempty"`
	Note   string `json:"note,omitempty"` // what qbox did or could not do
}

// Summary counts a run's outcomes.
type Summary struct {
	Succeeded int     `json:"succeeded"`
	Deferred  int     `json:"deferred"`
	Failed    int     `json:"failed"`
	Bounced   int     `json:"bounced"`
	Discarded int     `json:"discarded"`
	Malformed int     `json:"malformed"`
	Remaining int     `json:"remaining"` // files left in the maildir for the next run
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

// ErrLocked means another flush holds the maildir.
var ErrLocked = maildir.ErrLocked

// ErrRemaining means the run finished but messages are left.
var ErrRemaining = errors.New("messages remain in the maildir")

// Run flushes the maildir. It returns the summary and nil when nothing is
// left; ErrRemaining when files stay for a later run; a *qmtp.ConnectError
// (or the Connect function's error) when no server could be reached; an
// error wrapping ErrLocked when another flush runs; an error wrapping
// proto.ErrInterrupted when ctx's stop-starting channel (see
// proto.WithStopStarting) closed during the run.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	lock, err := maildir.TryLock(cfg.Dir)
	if err != nil {
		return Summary{}, err
	}
	defer lock.Unlock()

	r := &runner{cfg: cfg, now: now, dead: map[string]bool{}}
	if r.cfg.Lifetime <= 0 {
		r.cfg.Lifetime = DefaultLifetime
	}
	if r.cfg.Rounds <= 0 {
		r.cfg.Rounds = DefaultRounds
	}
	runErr := r.run(ctx)
	r.syncDirs()
	for _, name := range r.provisionalOrder {
		if out, ok := r.provisional[name]; ok {
			delete(r.provisional, name)
			r.sum.Deferred++
			out.Status = "deferred"
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
	r.progressDone()
	r.report()
	if runErr != nil {
		return r.sum, runErr
	}
	if r.sum.Remaining > 0 {
		return r.sum, ErrRemaining
	}
	return r.sum, nil
}

type runner struct {
	cfg      Config
	now      func() time.Time
	sum      Summary
	outcomes []Outcome
	// dead holds files that got a result this run (or failed to unlink
	// after K): they are never offered again in this run, so nothing is
	// sent twice.
	dead map[string]bool
	// provisional holds files that got no reply in a session; they are
	// reported as deferred only if no later round settles them.
	provisional      map[string]Outcome
	provisionalOrder []string
	unlinked         int
	prog             *progress
}

func (r *runner) run(ctx context.Context) error {
	for round := 0; round < r.cfg.Rounds; round++ {
		if proto.StoppedStarting(ctx) {
			return fmt.Errorf("flush: %w", proto.ErrInterrupted)
		}
		res, err := maildir.Scan(r.cfg.Dir, maildir.ScanOptions{Prefix: r.cfg.Prefix, Now: r.now()})
		if err != nil {
			return err
		}
		if round == 0 {
			for _, m := range res.Malformed {
				r.sum.Malformed++
				r.dead[m.Name] = true
				r.emit(Outcome{File: m.Name, Status: "malformed", Note: m.Reason})
			}
		}
		var entries []maildir.Entry
		for _, e := range res.Entries {
			if !r.dead[e.Name] {
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
		if replies < 0 {
			// A failed connect: nothing was sent, nothing is touched.
			r.sum.Unreachable = err.Error()
			return err
		}
		if errors.Is(err, proto.ErrInterrupted) {
			return err
		}
		if errors.Is(err, qmtp.ErrRemoteViolation) {
			// A server that answers what it cannot have received
			// gets no second session in this run.
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

// session delivers groups over one connection. It returns the number of
// server replies, or -1 when it could not connect.
func (r *runner) session(ctx context.Context, groups []maildir.Group) (int, error) {
	conn, server, err := r.cfg.Connect(ctx)
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	r.sum.Sessions++

	pkgs := make([]qmtp.Package, len(groups))
	var total int64
	for i := range groups {
		g := &groups[i]
		e := g.Entries[0]
		pkgs[i] = qmtp.Package{
			Sender:     g.Sender,
			Recipients: g.Recipients(),
			Size:       e.MessageSize(),
			Open: func() (io.ReadCloser, error) {
				rd, f, err := e.OpenMessage()
				if err != nil {
					return nil, err
				}
				return struct {
					io.Reader
					io.Closer
				}{rd, f}, nil
			},
		}
		total += pkgs[i].WireSize()
	}
	r.progressStart(len(groups), total)

	var failedD []pendingBounce // D (or expired Z) to bounce after the session
	stats, err := r.cfg.Client.Send(ctx, conn, pkgs, func(res qmtp.RecipientResult) {
		g := &groups[res.Package]
		e := &g.Entries[res.Recipient]
		out := Outcome{File: e.Name, Sender: e.Sender, Recipient: e.Recipient, Reply: res.Reply.String(), Server: server}
		delete(r.provisional, e.Name)
		if !res.FromServer {
			// No reply: the file may be offered again in the next round;
			// it is reported as deferred only if it ends the run so.
			out.Server = ""
			if r.provisional == nil {
				r.provisional = map[string]Outcome{}
			}
			r.provisional[e.Name] = out
			r.provisionalOrder = append(r.provisionalOrder, e.Name)
			if res.Recipient == len(g.Entries)-1 {
				r.progressStep(pkgs[res.Package].WireSize())
			}
			return
		}
		r.dead[e.Name] = true
		switch res.Reply.Status {
		case proto.OK:
			r.sum.Succeeded++
			out.Status = "succeeded"
			if err := e.Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
				out.Note = "delivered, but the file could not be removed (it will be sent again next run): " + err.Error()
			} else {
				r.unlinked++
				if r.unlinked%256 == 0 {
					r.syncDirs()
				}
			}
			r.emit(out)
		case proto.Permanent:
			failedD = append(failedD, pendingBounce{group: res.Package, entry: *e, outcome: out})
		default:
			if res.FromServer && r.now().Sub(e.ModTime) > r.cfg.Lifetime {
				failedD = append(failedD, pendingBounce{group: res.Package, entry: *e, outcome: out, tooOld: true})
				break
			}
			r.sum.Deferred++
			out.Status = "deferred"
			r.emit(out)
		}
		if res.Recipient == len(g.Entries)-1 {
			r.progressStep(pkgs[res.Package].WireSize())
		}
	})
	r.sum.BytesSent += stats.BytesOut
	r.bounceAll(ctx, groups, failedD, server)
	return stats.Replies, err
}

type pendingBounce struct {
	group   int
	entry   maildir.Entry
	outcome Outcome
	tooOld  bool
}

// bounceAll reports permanent failures: one notification per package
// (listing every failed recipient of it), injected over QMQP; the files
// are removed only once the bounce got K.
func (r *runner) bounceAll(ctx context.Context, groups []maildir.Group, failed []pendingBounce, server string) {
	for start := 0; start < len(failed); {
		end := start + 1
		for end < len(failed) && failed[end].group == failed[start].group {
			end++
		}
		r.bounceOne(ctx, failed[start:end], server)
		start = end
	}
}

func (r *runner) bounceOne(ctx context.Context, items []pendingBounce, server string) {
	finish := func(status, note string) {
		for _, it := range items {
			out := it.outcome
			out.Status = status
			out.Note = note
			switch status {
			case "bounced":
				r.sum.Bounced++
			case "discarded":
				r.sum.Discarded++
			default:
				r.sum.Failed++
			}
			r.emit(out)
		}
	}
	if r.cfg.NoBounce {
		note := "kept (--no-bounce)"
		if items[0].tooOld {
			note = "too old; kept (--no-bounce)"
		}
		finish("failed", note)
		return
	}
	e := items[0].entry
	var failures []bounce.Failure
	for _, it := range items {
		f := bounce.Failure{Recipient: it.entry.Recipient, RemoteMTA: server, TooOld: it.tooOld}
		if len(it.outcome.Reply) > 1 {
			f.Diagnostic = it.outcome.Reply[1:]
		}
		failures = append(failures, f)
	}
	rd, file, err := e.OpenMessage()
	if err != nil {
		finish("failed", "kept: cannot read it to bounce: "+err.Error())
		return
	}
	b, err := bounce.Build(r.cfg.Bounce, bounce.Original{Sender: e.Sender, Arrival: e.ModTime, Message: rd, Size: e.MessageSize()}, failures)
	file.Close()
	if errors.Is(err, bounce.ErrDiscard) {
		r.removeAll(items)
		finish("discarded", "a failed double bounce: discarded")
		return
	}
	if err != nil {
		finish("failed", "kept: "+err.Error())
		return
	}
	if len(r.cfg.BounceServers) == 0 {
		finish("failed", "kept: no QMQP server configured for bounces (--bounce-server or $QMQPSERVERS)")
		return
	}
	qc := qmqp.Client{Servers: r.cfg.BounceServers}
	reply, err := qc.Send(ctx, proto.Envelope{Sender: b.Sender, Recipients: b.Recipients}, bytes.NewReader(b.Message), int64(len(b.Message)))
	if err != nil {
		finish("failed", "kept: bounce not injected: "+err.Error())
		return
	}
	if reply.Status != proto.OK {
		finish("failed", "kept: bounce refused: "+proto.Printable(reply.String(), 500))
		return
	}
	r.removeAll(items)
	to := "<" + b.Recipients[0] + ">"
	finish("bounced", "bounce to "+proto.Printable(to, 300)+" accepted: "+proto.Printable(reply.Text, 200))
}

func (r *runner) removeAll(items []pendingBounce) {
	for _, it := range items {
		if err := it.entry.Remove(); err == nil {
			r.unlinked++
		}
	}
	r.syncDirs()
}

// syncDirs makes the unlinks so far durable. Until then a crash could
// bring a delivered file back (sent twice, never lost).
func (r *runner) syncDirs() {
	for _, sub := range []string{"new", "cur"} {
		maildir.SyncDir(filepath.Join(r.cfg.Dir, sub))
	}
}

func (r *runner) emit(o Outcome) {
	r.outcomes = append(r.outcomes, o)
	if r.cfg.JSON || r.cfg.Out == nil {
		return
	}
	r.progressClear()
	line := o.Status + " " + proto.Printable(o.File, 300)
	if o.Recipient != "" {
		line += " <" + proto.Printable(o.Recipient, 300) + ">"
	}
	if o.Reply != "" {
		said := ""
		if o.Server != "" {
			said = proto.Printable(o.Server, 200) + " said: "
		}
		line += ": " + said + proto.Printable(o.Reply, 2000)
	}
	if o.Note != "" {
		line += " (" + o.Note + ")"
	}
	fmt.Fprintln(r.cfg.Out, line)
}

func (r *runner) report() {
	if r.cfg.Out == nil {
		return
	}
	if r.cfg.JSON {
		outcomes := r.outcomes
		if outcomes == nil {
			outcomes = []Outcome{}
		}
		enc := json.NewEncoder(r.cfg.Out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(struct {
			Messages []Outcome `json:"messages"`
			Summary  Summary   `json:"summary"`
		}{outcomes, r.sum})
		return
	}
	s := r.sum
	var parts []string
	parts = append(parts, fmt.Sprintf("%d succeeded", s.Succeeded), fmt.Sprintf("%d deferred", s.Deferred),
		fmt.Sprintf("%d failed", s.Failed), fmt.Sprintf("%d bounced", s.Bounced))
	if s.Discarded > 0 {
		parts = append(parts, fmt.Sprintf("%d discarded", s.Discarded))
	}
	if s.Malformed > 0 {
		parts = append(parts, fmt.Sprintf("%d malformed", s.Malformed))
	}
	line := "summary: " + strings.Join(parts, ", ")
	line += fmt.Sprintf("; %d bytes sent in %.1fs", s.BytesSent, s.Seconds)
	if s.Unreachable != "" {
		line += "; server unreachable"
	}
	if s.Interrupted {
		line += "; interrupted"
	}
	line += fmt.Sprintf("; %d left", s.Remaining)
	fmt.Fprintln(r.cfg.Out, line)
}
