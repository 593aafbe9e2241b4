package sendmail

import (
	"context"
	"os"
	"os/signal"
	"time"

	"qbox/commands/interrupt"
	"qbox/proto"
	"qbox/proto/queue/spool"
)

// pickUp moves the system queue's drop files into its spool before a
// flush (spool.PickUpForFlush: when this process is root and delivers
// the system queue). What it refused (a planted symlink, a FIFO,
// garbage) is a matter for a person: it goes to stderr (cron mails it)
// and to the mail log. A pickup that failed leaves the drops where they
// were and returns a *spool.PickupError; sendmail -q exits 75 on it
// (exitcode.Temp), after the flush of what was queued.
func pickUp(p *Process) error {
	res, err := spool.PickUpForFlush(p.Getenv, p.now())
	q := res.Queue
	if res.Adopted > 0 {
		p.note(false, "moved %d file(s) from the old spool %s into %s", res.Adopted, q.Root, q.QueueDir())
	}
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
	if err != nil && p.MailLog != nil {
		p.MailLog(proto.Printable(err.Error(), 2000))
	}
	return err
}

// runQueue is sendmail -q30m (and -bd -q30m): a queue runner in the
// foreground, for a systemd service. It picks up and flushes at once,
// then every interval (the retries); a drop arriving in the system
// queue's maildrop wakes it at once (watchDrops), without moving the next
// retry. SIGTERM, SIGINT or SIGHUP stop it: during a flush the flush's own
// handling finishes the message under way (see package interrupt), then
// the runner exits 0; between flushes it exits at once.
func runQueue(ctx context.Context, p *Process, o *Options) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, interrupt.Signals...)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A signal at any moment, also during the pickup or before the
	// flush has installed its own handler, reaches the flush as its
	// first step (start nothing new): none is lost to a window.
	stopped := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			close(stopped)
		case <-ctx.Done():
		}
	}()
	ctx = proto.WithStopStarting(ctx, stopped)
	// Watching starts before the first pickup, so no drop falls between
	// them.
	var wake <-chan struct{}
	watching := ""
	if q, ok := pickupQueue(p); ok {
		if w, err := watchDrops(q.DropDir()); err != nil {
			p.errorf("warning: %v; drops wait for the next run", err)
		} else {
			defer w.Close()
			wake, watching = w.C, q.DropDir()
		}
	}
	next := time.Now() // the first round is a retry round
	for !proto.StoppedStarting(ctx) {
		if !time.Now().Before(next) {
			next = time.Now().Add(o.QueueInterval)
		}
		if err := pickUp(p); err != nil {
			p.errorf("%v", err) // the runner goes on: the next round tries again
		}
		if proto.StoppedStarting(ctx) {
			break
		}
		flushSpool(ctx, p, o.Verbose, nil)
		if o.Verbose && watching != "" {
			p.errorf("waiting for a drop into %s; the next retry in %s", watching, time.Until(next).Round(time.Second))
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-stopped:
		case <-ctx.Done():
		case <-timer.C:
		case <-wake:
		}
		timer.Stop()
		if ctx.Err() != nil {
			break
		}
	}
}

// pickupQueue is the system queue a pickup (pickUp) takes drops from,
// and whether there is one for this process.
func pickupQueue(p *Process) (spool.SystemQueue, bool) {
	if os.Geteuid() != 0 || p.Getenv("QBOX_SPOOL") != "" {
		return spool.SystemQueue{}, false
	}
	q := spool.System(p.Getenv)
	return q, q.Exists()
}
