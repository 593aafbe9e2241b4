package server

import "sync/atomic"

// Go runs f in a goroutine: one that ran an earlier f and now waits for
// work, when there is one, else a new one. A goroutine starts with a
// small stack and grows it by copying (a session's parsing, the store's
// commit and fsync, the log line go deep); one per connection or package
// paid that copying every time, a few percent of serve's CPU. One that is
// used again keeps the stack it grew (until the collector shrinks a stack
// left mostly unused).
//
// At most MaxIdleWorkers goroutines wait; one more that finishes ends.
// Waiting, a goroutine holds only its stack.
func Go(f func()) {
	select {
	case work <- f:
	default:
		go worker(f)
	}
}

// MaxIdleWorkers bounds the goroutines that wait for work (Go).
const MaxIdleWorkers = 64

var (
	work        = make(chan func()) // unbuffered: a send succeeds only into a waiting worker
	idleWorkers atomic.Int32
)

func worker(f func()) {
	for {
		f()
		f = nil // nothing of the last job stays reachable while waiting
		if idleWorkers.Add(1) > MaxIdleWorkers {
			idleWorkers.Add(-1)
			return
		}
		f = <-work
		idleWorkers.Add(-1)
	}
}
