// Package interrupt stops a flush in two steps. The first SIGINT, SIGTERM
// or SIGHUP asks it to start no new message but to finish the ones under
// way: the QMTP packages already sent are answered and their files removed
// on K, the QMQP message being sent gets its reply. A flush killed there
// instead would leave files the server already accepted, and the next run
// would deliver them a second time. The second signal cancels the context:
// the flush stops waiting at once (replies still owed are lost, so those
// messages may be delivered twice), prints its summary and exits.
package interrupt

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"qbox/proto"
)

// Signals are the signals a flush handles.
var Signals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// Flush is a flush's signal handling, installed by Catch.
type Flush struct {
	// Context carries the stop-starting channel (proto.StopStarting)
	// closed at the first signal, and is cancelled at the second.
	Context context.Context

	signals     chan os.Signal
	cancel      context.CancelFunc
	done        chan struct{}
	interrupted atomic.Bool
}

// Catch installs the handler; name prefixes the one line it writes to
// stderr on each signal. Call Release when the flush is over.
func Catch(parent context.Context, stderr io.Writer, name string) *Flush {
	stop := make(chan struct{})
	ctx, cancel := context.WithCancel(parent)
	f := &Flush{
		Context: proto.WithStopStarting(ctx, stop),
		signals: make(chan os.Signal, 2),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	signal.Notify(f.signals, Signals...)
	// A caller that already carries a stop (a queue runner that caught
	// the signal before this flush began) stops this flush too.
	outer := proto.StopStarting(parent)
	go func() {
		select {
		case sig := <-f.signals:
			f.interrupted.Store(true)
			fmt.Fprintf(stderr, "%s: %v: starting no new message, finishing those under way (a second signal stops at once)\n", name, sig)
			close(stop)
		case <-outer:
			f.interrupted.Store(true)
			close(stop)
		case <-f.done:
			return
		}
		select {
		case sig := <-f.signals:
			fmt.Fprintf(stderr, "%s: %v: stopping now\n", name, sig)
			cancel()
		case <-f.done:
		}
	}()
	return f
}

// Interrupted reports whether a signal came.
func (f *Flush) Interrupted() bool { return f.interrupted.Load() }

// Release restores the default handling of the signals.
func (f *Flush) Release() {
	signal.Stop(f.signals)
	close(f.done)
	f.cancel()
}
