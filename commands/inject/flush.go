package inject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"qbox/commands/exitcode"
	"qbox/commands/interrupt"
	"qbox/proto"
	"qbox/proto/queue"
	"qbox/proto/queue/spool"
	"qbox/proto/relay"
)

// FlushConfig is one `qbox inject --flush`: deliver the sendmail spool to
// these servers.
type FlushConfig struct {
	SpoolDir       string
	Servers        []string
	ConnectTimeout time.Duration
	Timeout        time.Duration
	Hostname       string // names this host in bounces
	TLS            relay.TLSOptions
}

// Flush delivers what the sendmail personality queued while the relay was
// down, as `sendmail -q` does (queue.Run over the spool, queue.QMQPRelay),
// but to the servers given here. log gets one
// line per message (malformed files included); stderr one summary line. The error
// is nil when nothing is left queued; otherwise it carries 111 (mail
// remains, another run holds the lock, the spool is unreadable) or 100 (no
// server configured).
//
// The first SIGINT, SIGTERM or SIGHUP lets the message under way get its
// reply (and its file removed on K) and starts no other; the summary is
// printed and the exit status is 111. A second signal stops at once.
func Flush(ctx context.Context, cfg FlushConfig, stderr io.Writer, log *slog.Logger) error {
	sig := interrupt.Catch(ctx, stderr, "inject")
	defer sig.Release()
	return flushSpool(sig.Context, cfg, stderr, log)
}

func flushSpool(ctx context.Context, cfg FlushConfig, stderr io.Writer, log *slog.Logger) error {
	if len(cfg.Servers) == 0 {
		return ErrNoServers
	}
	if _, err := os.Stat(filepath.Join(cfg.SpoolDir, "new")); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "inject: spool %s is empty\n", cfg.SpoolDir)
		return nil
	}
	sp, err := spool.Open(cfg.SpoolDir)
	if err != nil {
		return exitcode.Temp(err)
	}
	client, err := relayClient(cfg.Servers, cfg.ConnectTimeout, cfg.Timeout, cfg.TLS, os.Getenv)
	if err != nil {
		return exitcode.Configuration(err)
	}
	qc := queue.QMQPRelay(sp.Source(nil), client, cfg.Hostname)
	lg := &queue.Logger{Log: log}
	qc.Events.Outcome = lg.Outcome
	res, err := queue.Run(ctx, qc)
	lg.Done(res)
	switch {
	case errors.Is(err, spool.ErrLocked):
		return exitcode.Temp(fmt.Errorf("another run is delivering %s; not starting a second one", cfg.SpoolDir))
	case err != nil && !errors.Is(err, queue.ErrRemaining) && !errors.Is(err, proto.ErrInterrupted):
		return exitcode.Temp(err)
	}
	interrupted := ""
	if res.Interrupted {
		interrupted = " (interrupted)"
	}
	fmt.Fprintf(stderr, "inject: %d delivered, %d bounced, %d still queued in %s%s\n",
		res.Succeeded, res.Bounced+res.Discarded, res.Unsettled(), cfg.SpoolDir, interrupted)
	if res.Interrupted {
		return exitcode.Temp(fmt.Errorf("%w; %d files remain in %s", proto.ErrInterrupted, res.Unsettled(), cfg.SpoolDir))
	}
	if res.Unsettled() > 0 {
		return exitcode.Temp(fmt.Errorf("%d files remain in %s", res.Unsettled(), cfg.SpoolDir))
	}
	return nil
}
