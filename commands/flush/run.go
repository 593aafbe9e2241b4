package flush

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/queue"
	"qbox/proto/queue/bounce"
)

// DefaultLifetime is how long a message may be deferred before it is
// bounced: serialmail's 1209600 seconds.
const DefaultLifetime = queue.DefaultLifetime

// DefaultRounds is how many sessions one run may use (see
// queue.DefaultRounds).
const DefaultRounds = queue.DefaultRounds

// Config is one flush of one maildir.
type Config struct {
	Dir    string
	Prefix string
	// Transport carries the messages (QMTP, SMTP, MXPS). Nil: QMTP over
	// Connect with Client.
	Transport queue.Transport
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

	Out  io.Writer // one line per message and a summary, or JSON
	JSON bool
	// Quiet prints only what failed (every outcome but succeeded) and
	// the summary when something did: a cron job's output is mailed, so
	// it says something only when someone must act.
	Quiet    bool
	Progress io.Writer // a terminal for the progress bar, or nil
	Now      func() time.Time
}

// Outcome is what happened to one message file.
type Outcome = queue.Outcome

// Summary counts a run's outcomes.
type Summary = queue.Summary

// ErrLocked means another flush holds the maildir.
var ErrLocked = queue.ErrLocked

// ErrRemaining means the run finished but messages are left.
var ErrRemaining = queue.ErrRemaining

// Run flushes the maildir through the queue engine (proto/queue) and
// renders its outcomes as text lines, JSON or a progress bar. It returns
// the summary and nil when nothing is left; ErrRemaining when files stay
// for a later run; an error wrapping the connect error (a
// *proto.ConnectError, or the Connect function's) when no server could be
// reached; an error wrapping ErrLocked when another flush runs; an error
// wrapping proto.ErrInterrupted when ctx's stop-starting channel (see
// proto.WithStopStarting) closed during the run.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	rd := &renderer{cfg: cfg}
	qc := queue.Config{
		Dir:       cfg.Dir,
		Prefix:    cfg.Prefix,
		Transport: cfg.Transport,
		Rounds:    cfg.Rounds,
		Group:     cfg.Group,
		Lifetime:  cfg.Lifetime,
		Now:       cfg.Now,
		Events: queue.Events{
			Outcome:  rd.outcome,
			Session:  rd.progressStart,
			Answered: rd.progressStep,
		},
	}
	if qc.Transport == nil {
		qc.Transport = &queue.QMTP{Client: cfg.Client, Connect: cfg.Connect}
	}
	if qc.Lifetime <= 0 {
		qc.Lifetime = DefaultLifetime
	}
	if cfg.NoBounce {
		qc.KeepNote = "--no-bounce"
	} else {
		b := &queue.QMQPBouncer{Config: cfg.Bounce, NoClient: "no QMQP server configured for bounces (--bounce-server or $QMQPSERVERS)"}
		if len(cfg.BounceServers) > 0 {
			b.Client = &qmqp.Client{Servers: cfg.BounceServers}
		}
		qc.Bouncer = b
	}
	sum, err := queue.Run(ctx, qc)
	if errors.Is(err, ErrLocked) {
		return sum, err // another flush runs: it reports
	}
	rd.progressDone()
	rd.report(sum)
	return sum, err
}

// renderer prints a run's outcomes: one line each and a summary, or the
// whole run as JSON at the end, with a progress bar on a terminal.
type renderer struct {
	cfg      Config
	outcomes []Outcome
	prog     *progress
}

func (r *renderer) outcome(o Outcome) {
	r.outcomes = append(r.outcomes, o)
	if r.cfg.JSON || r.cfg.Out == nil || (r.cfg.Quiet && o.Status == "succeeded") {
		return
	}
	r.progressClear()
	line := o.Status + " " + proto.Printable(o.File, 300)
	if o.Recipient != "" {
		line += " <" + proto.Printable(o.Recipient, 300) + ">"
	}
	if o.Server != "" && o.Protocol != "" {
		line += " over " + o.Protocol
	}
	if o.Reply != "" {
		said := ""
		if o.Server != "" {
			said = proto.Printable(o.Server, 200) + " said: "
		}
		line += ": " + said + proto.Printable(o.Reply, 2000)
	}
	if o.Note != "" {
		line += " (" + proto.Printable(o.Note, 2000) + ")"
	}
	fmt.Fprintln(r.cfg.Out, line)
}

func (r *renderer) report(s Summary) {
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
		}{outcomes, s})
		return
	}
	// A run that found nothing to do says nothing (cron mails any
	// output); a quiet one says nothing unless something failed.
	failed := s.Unreachable != "" || s.Interrupted
	for _, o := range r.outcomes {
		failed = failed || o.Status != "succeeded"
	}
	if !failed && (len(r.outcomes) == 0 || r.cfg.Quiet) {
		return
	}
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
