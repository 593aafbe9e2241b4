package sendmail

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"time"

	"qbox/commands/interrupt"
	"qbox/proto"
	"qbox/proto/spool"
)

// pickUp moves the system queue's drop files into its spool before a
// flush, when this process is root, delivers the system queue (no
// $QBOX_SPOOL) and the system queue exists. What it refused (a planted
// symlink, a FIFO, garbage) is a matter for a person: it goes to stderr
// (cron mails it) and to the mail log.
func pickUp(p *Process) {
	if os.Geteuid() != 0 || p.Getenv("QBOX_SPOOL") != "" {
		return
	}
	q := spool.System(p.Getenv)
	if n, err := spool.AdoptLegacy(q); err != nil {
		p.errorf("mail in the old spool %s: %v", q.Root, err)
	} else if n > 0 {
		p.note(false, "moved %d file(s) from the old spool %s into %s", n, q.Root, q.QueueDir())
	}
	if !q.Exists() {
		return
	}
	res, err := spool.PickUp(q, p.now())
	for _, r := range res.Refused {
		msg := "pickup: " + q.DropDir() + "/" + r.Name + ": " + r.Reason
		if p.MailLog != nil {
			p.MailLog(proto.Printable(msg, 2000))
		}
		p.errorf("%s", msg)
	}
	if len(res.Picked) > 0 {
		p.note(false, "picked up %d message(s) from %s", len(res.Picked), q.DropDir())
	}
	if err != nil && !errors.Is(err, spool.ErrLocked) {
		p.errorf("pickup: %v", err) // the flush still delivers what is queued
	}
}

// runQueue is sendmail -q30m (and -bd -q30m): a queue runner in the
// foreground, for a systemd service. It picks up and flushes at once,
// then every interval. SIGTERM, SIGINT or SIGHUP stop it: during a flush
// the flush's own handling finishes the message under way (see package
// interrupt), then the runner exits 0; between flushes it exits at once.
func runQueue(ctx context.Context, p *Process, o *Options) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, interrupt.Signals...)
	defer signal.Stop(stop)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		select {
		case <-stop:
			return exOK
		default:
		}
		pickUp(p)
		flushSpool(ctx, p, o.Verbose, nil)
		timer := time.NewTimer(o.QueueInterval)
		select {
		case <-stop:
			timer.Stop()
			return exOK
		case <-ctx.Done():
			timer.Stop()
			return exOK
		case <-timer.C:
		}
	}
}
