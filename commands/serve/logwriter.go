package serve

import (
	"io"
	"runtime"
	"sync"
)

// logWriterMax bounds the log lines waiting to go out: beyond it a
// session's log call waits for the output, as a direct write would.
const logWriterMax = 1 << 20

// logWriter is serve's log output. The log handler writes each line
// under its lock, one write(2) each, and every message logs two (the
// store's and the protocol's): a tenth of a QMQP session's system calls.
// logWriter adds a line to those waiting and returns, and a goroutine of
// its own writes them in order, each time all that came meanwhile in one
// write: the lines of sessions that end at the same time go out together,
// and a session no longer waits for the log before its reply. Nothing is
// dropped or reordered; a line is out within one write(2) of being
// logged. Flush waits until every line logged so far is out (serve's
// end); a kill -9 can lose the lines of that one write.
type logWriter struct {
	w     io.Writer
	mu    sync.Mutex
	cond  sync.Cond // broadcast when the lines are taken, and written
	buf   []byte    // lines waiting
	spare []byte    // the buffer of the write before
	busy  bool      // drain is running
}

func newLogWriter(w io.Writer) *logWriter {
	l := &logWriter{w: w}
	l.cond.L = &l.mu
	return l
}

// Write queues p (one log line) and returns.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.buf) > 0 && len(l.buf)+len(p) > logWriterMax {
		l.cond.Wait()
	}
	l.buf = append(l.buf, p...)
	if !l.busy {
		l.busy = true
		go l.drain()
	}
	return len(p), nil
}

// drain writes the waiting lines until there are none. A failed write
// loses its lines, as it would have written directly (the handler
// ignores the error).
func (l *logWriter) drain() {
	// Let the sessions that can run log their lines first: under load
	// more go out in the one write; idle, this returns at once.
	runtime.Gosched()
	l.mu.Lock()
	for len(l.buf) > 0 {
		b := l.buf
		l.buf = l.spare[:0]
		l.cond.Broadcast() // room for more
		l.mu.Unlock()
		l.w.Write(b)
		l.mu.Lock()
		if cap(b) <= 64<<10 {
			l.spare = b
		} else {
			l.spare = nil // a burst's buffer is not kept
		}
		l.cond.Broadcast()
	}
	l.busy = false
	l.cond.Broadcast()
	l.mu.Unlock()
}

// Flush waits until every line written so far is out.
func (l *logWriter) Flush() {
	l.mu.Lock()
	for l.busy {
		l.cond.Wait()
	}
	l.mu.Unlock()
}
