package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mattn/go-isatty"

	"qbox/commands/exitcode"
	"qbox/commands/interrupt"
	"qbox/proto"
	"qbox/proto/qmail/control"
	"qbox/proto/qmail/message"
	"qbox/proto/qmqp"
	"qbox/proto/queue"
	"qbox/proto/queue/spool"
)

// Flush is `qbox queue flush [ID...]`: for root the system queue's drops
// are picked up first (spool.PickUpForFlush), then the queue (dir) is
// delivered over QMQP as sendmail -q delivers it (queue.QMQPRelay over
// the spool's Source; the IDs, when given, select the messages), and the
// run is printed as every flush prints it (queue.Printer): one line per
// recipient, then the summary. Any failure is temporary (111); so is mail
// left in the queue.
func Flush(ctx context.Context, stdout, stderr io.Writer, getenv func(string) string, dir string, ids []string) error {
	var specs []string
	for _, id := range ids {
		specs = append(specs, "I"+id) // several: any of them
	}
	sel, err := spool.ParseSelection(specs)
	if err != nil {
		return exitcode.Usage("%v", err)
	}
	pick, perr := spool.PickUpForFlush(getenv, time.Now())
	for _, r := range pick.Refused {
		fmt.Fprintf(stderr, "qbox queue flush: pickup: %s/%s: %s\n", pick.Queue.DropDir(), r.Name, r.Reason)
	}
	if n := len(pick.Picked); n > 0 {
		fmt.Fprintf(stdout, "picked up %d message(s) from %s\n", n, pick.Queue.DropDir())
	}
	if perr != nil {
		// The flush still delivers what is queued; the exit says 111.
		fmt.Fprintf(stderr, "qbox queue flush: %v\n", perr)
	}
	err = flush(ctx, stdout, stderr, getenv, dir, sel)
	if err == nil && perr != nil {
		return exitcode.Reported(exitcode.Temporary)
	}
	return err
}

func flush(ctx context.Context, stdout, stderr io.Writer, getenv func(string) string, dir string, sel *spool.Selection) error {
	pr := &queue.Printer{Out: stdout, Always: true}
	if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		pr.Progress = f
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); errors.Is(err, os.ErrNotExist) {
		pr.Report(queue.Summary{}) // nothing was ever queued
		return nil
	}
	sp, err := spool.Open(dir)
	if err != nil {
		return exitcode.Temp(err)
	}
	servers, err := control.QMQPServers(nil, getenv, control.FileStrict)
	if errors.Is(err, control.ErrNoServers) {
		err = fmt.Errorf("no QMQP server configured: set $QMQPSERVERS or list the servers in %s", control.QMQPServersPath(getenv))
	}
	if err != nil {
		return exitcode.Temp(err) // the mail waits until one is configured
	}
	mcfg, err := message.ConfigFromEnv(getenv)
	if err != nil {
		return exitcode.Temp(err)
	}
	c := &qmqp.Client{Servers: servers, ConnectTimeout: 10 * time.Second, Timeout: 60 * time.Second}
	qc := queue.QMQPRelay(sp.SourceForce(sel, true), c, mcfg.DefaultHost) // an operator asked: backoff or not
	qc.Events = pr.Events()
	sig := interrupt.Catch(ctx, stderr, "qbox queue flush")
	defer sig.Release()
	sum, err := queue.Run(sig.Context, qc)
	if errors.Is(err, spool.ErrLocked) {
		return exitcode.Temp(fmt.Errorf("another run is delivering %s; not starting a second one", dir))
	}
	pr.Report(sum)
	if sum.Succeeded > 0 {
		sp.Record(spool.StampDelivery, time.Now()) // for qbox queue check and metrics; advisory
	}
	switch {
	case err != nil && !errors.Is(err, queue.ErrRemaining) && !errors.Is(err, proto.ErrInterrupted):
		return exitcode.Temp(err)
	case sum.Interrupted || sum.Unsettled() > 0:
		return exitcode.Reported(exitcode.Temporary) // the summary says what is left
	}
	return nil
}
