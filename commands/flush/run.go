package flush

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/queue"
	"qbox/proto/queue/bounce"
)

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

	Lifetime time.Duration // 0: queue.DefaultLifetime
	Rounds   int           // 0: queue.DefaultRounds
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

// Run flushes the maildir through the queue engine (proto/queue) and
// renders its outcomes (queue.Printer) as text lines, JSON or a progress
// bar. It returns the summary and nil when nothing is left;
// queue.ErrRemaining when files stay
// for a later run; an error wrapping the connect error (a
// *proto.ConnectError, or the Connect function's) when no server could be
// reached; an error wrapping queue.ErrLocked when another flush runs; an error
// wrapping proto.ErrInterrupted when ctx's stop-starting channel (see
// proto.WithStopStarting) closed during the run.
func Run(ctx context.Context, cfg Config) (queue.Summary, error) {
	pr := &queue.Printer{Out: cfg.Out, JSON: cfg.JSON, Quiet: cfg.Quiet, Progress: cfg.Progress}
	qc := queue.Config{
		Source:    &queue.Maildir{Dir: cfg.Dir, Prefix: cfg.Prefix, Group: cfg.Group},
		Transport: cfg.Transport,
		Rounds:    cfg.Rounds,
		Lifetime:  cfg.Lifetime,
		Now:       cfg.Now,
		Events:    pr.Events(),
	}
	if qc.Transport == nil {
		qc.Transport = &queue.QMTP{Client: cfg.Client, Connect: cfg.Connect}
	}
	if qc.Lifetime <= 0 {
		qc.Lifetime = queue.DefaultLifetime
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
	if errors.Is(err, queue.ErrLocked) {
		return sum, err // another flush runs: it reports
	}
	pr.Report(sum)
	return sum, err
}
