package maildir

import (
	"path/filepath"
	"sync"
)

// MaxGroup is the most messages one group commit covers: one fsync of
// new/ for up to this many messages' names. A message joining a full
// group waits for the next one, which starts as soon as the current
// group's fsync returns.
const MaxGroup = 64

// group is a Store's group commit: concurrent deliveries into one maildir
// share the fsync of new/.
//
// Each delivery first makes its own files durable (Sync, in its own
// goroutine: concurrent fsyncs on ext4 and XFS join the same journal
// commit, so they are already shared by the file system, and each file's
// data is on disk before any name of it is), then queues for a group.
// A committer takes everything queued (up to MaxGroup messages), gives
// every file its name in new/ (linkat or rename), fsyncs new/ once and
// only then releases the waiters, each with its paths: no K is given
// before the fsync of new/ that covers its names has returned. A failure
// of that fsync (or of any link in the group) fails every message of the
// group: each message's names are removed again and each gets the error,
// so Z, never K.
//
// No timer: a delivery that finds no commit running commits its own
// message at once, in its own goroutine (a lone client waits for nothing
// more than before). Deliveries that arrive while a commit runs queue and
// go together in the next one, which a goroutine of its own runs when
// the delivery that started the previous commit goes back to its client.
// Batching thus takes exactly what arrived during the previous fsync.
//
// Memory: the queue holds one small entry per waiting delivery (its
// batch's open files were opened, and are bounded, before it queues), and
// each delivery waits while it is queued, so the queue never holds more
// than the number of deliveries running at once, which the server bounds
// (serve's --max-conns, QMTP's Parallel per session).
type group struct {
	mu      sync.Mutex
	queue   []*pending
	running bool // a committer is taking groups from queue

	// onQueue, when set, is called (under mu) with the queue's length
	// each time a delivery joins it (tests).
	onQueue func(queued int)
}

// pending is one delivery waiting in the group.
type pending struct {
	b     fileBatch
	paths []string
	err   error
	done  chan struct{} // closed once paths or err is set
}

// commit makes b, already written, durable in new/ through the group and
// returns its paths in new/. syncDir is the fsync of a directory.
func (g *group) commit(b fileBatch, dir string, syncDir func(string) error) ([]string, error) {
	if err := b.Sync(); err != nil {
		return nil, err
	}
	p := &pending{b: b, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.onQueue != nil {
		g.onQueue(len(g.queue))
	}
	if g.running {
		g.mu.Unlock()
		<-p.done
		return p.paths, p.err
	}
	g.running = true
	g.mu.Unlock()
	// Nobody commits: this delivery does, now (its entry is first in the
	// queue, so in the first group), and hands the committer's role to a
	// goroutine of its own if more arrived meanwhile.
	g.run(p, dir, syncDir)
	return p.paths, p.err
}

// run commits groups from the queue until it is empty, or, for the
// delivery own that started it, until own is done: the rest is handed on.
func (g *group) run(own *pending, dir string, syncDir func(string) error) {
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		if own != nil && isDone(own) {
			g.mu.Unlock()
			go g.run(nil, dir, syncDir)
			return
		}
		n := min(len(g.queue), MaxGroup)
		batch := make([]*pending, n)
		copy(batch, g.queue)
		rest := copy(g.queue, g.queue[n:])
		clear(g.queue[rest:]) // hold no finished delivery
		g.queue = g.queue[:rest]
		g.mu.Unlock()
		commitGroup(batch, dir, syncDir)
	}
}

func isDone(p *pending) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// commitGroup links every message of batch into new/, fsyncs new/ once,
// and releases each: with its paths, or with the first error, then for
// every message of batch and with its names removed.
func commitGroup(batch []*pending, dir string, syncDir func(string) error) {
	var err error
	linked := 0
	for _, p := range batch {
		if p.paths, err = p.b.Link(); err != nil {
			break // Link left none of its own names behind
		}
		linked++
	}
	if err == nil {
		err = syncDir(filepath.Join(dir, "new"))
	}
	if err != nil {
		for _, p := range batch[:linked] {
			p.b.Unlink()
		}
		for _, p := range batch[linked:] {
			p.b.Abort()
		}
		for _, p := range batch {
			p.paths, p.err = nil, err
		}
	}
	for _, p := range batch {
		close(p.done)
	}
}
