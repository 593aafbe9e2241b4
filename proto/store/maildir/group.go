package maildir

import (
	"path/filepath"
	"sync"
)

// MaxGroup is the most messages one fsync of new/ is shared by: a message
// finding the next group full joins (or starts) the one after it.
const MaxGroup = 64

// group is a Store's group commit: concurrent deliveries into one maildir
// share the fsync of new/.
//
// Each delivery makes its own files durable (Sync: concurrent fsyncs on
// ext4 and XFS join one journal commit, so the file system already
// shares them) and only then names them in new/ (Link), so no name is
// there before its data is on disk. Then it joins the next group: the
// deliveries waiting for an fsync of new/ that starts after their names
// were given. At most one fsync of new/ runs at a time; the group that
// formed while it ran (up to MaxGroup deliveries) has its own fsync the
// moment it returns, and every delivery of a group is released only when
// that fsync has returned: no K before the fsync that covers its names.
// If the fsync fails, every delivery of the group removes its names
// again and gets the error, so Z, never K.
//
// No timer: a delivery that finds no fsync running starts one at once,
// in its own goroutine, and a lone client waits for nothing more than
// before. Deliveries name their files as soon as they are durable, so a
// group waits for no one; the next group's fsync runs in a goroutine of
// its own, so the delivery that ran the previous one answers its client
// at once.
//
// Memory: a group is one small struct and a count; its deliveries wait
// on it, each holding only what it held before (its batch), and their
// number is bounded by the deliveries running at once, which the server
// bounds (serve's --max-conns, QMTP's Parallel per session).
type group struct {
	mu      sync.Mutex
	running bool          // an fsync of new/ is running
	next    []*generation // groups whose fsync has not started, in order

	// onQueue, when set, is called (under mu) with the number of
	// deliveries waiting for an fsync not yet started, each time one
	// joins a group (tests).
	onQueue func(waiting int)
}

// generation is one group: the deliveries one fsync of new/ covers.
type generation struct {
	members int
	err     error         // the fsync's, set before done is closed
	done    chan struct{} // closed once the fsync returned
}

// commit makes b, already written, durable in new/ and returns its paths
// there. syncDir is the fsync of a directory.
func (g *group) commit(b fileBatch, dir string, syncDir func(string) error) ([]string, error) {
	if err := b.Sync(); err != nil {
		return nil, err
	}
	paths, err := b.Link()
	if err != nil {
		return nil, err // Link left none of its names behind
	}
	g.mu.Lock()
	gen := g.join()
	if g.running {
		g.mu.Unlock()
		<-gen.done
	} else {
		// No fsync runs, so gen is the only group and this delivery its
		// only member: its fsync starts now, here.
		g.running = true
		g.pop()
		g.mu.Unlock()
		g.sync(gen, dir, syncDir)
	}
	if gen.err != nil {
		b.Unlink()
		return nil, gen.err
	}
	return paths, nil
}

// join adds a delivery to the first group not yet started with room,
// or to a new one, and returns that group. Called under mu.
func (g *group) join() *generation {
	var gen *generation
	for _, x := range g.next {
		if x.members < MaxGroup {
			gen = x
			break
		}
	}
	if gen == nil {
		gen = &generation{done: make(chan struct{})}
		g.next = append(g.next, gen)
	}
	gen.members++
	if g.onQueue != nil {
		waiting := 0
		for _, x := range g.next {
			waiting += x.members
		}
		g.onQueue(waiting)
	}
	return gen
}

// pop removes the first group of next, whose fsync starts. Called under mu.
func (g *group) pop() {
	n := copy(g.next, g.next[1:])
	g.next[n] = nil
	g.next = g.next[:n]
}

// sync fsyncs new/ for gen, every member of which named its files
// before gen was popped, releases them, and starts the next group's
// fsync in a goroutine of its own if one is waiting.
func (g *group) sync(gen *generation, dir string, syncDir func(string) error) {
	gen.err = syncDir(filepath.Join(dir, "new"))
	g.mu.Lock()
	close(gen.done)
	if len(g.next) == 0 {
		g.running = false
		g.mu.Unlock()
		return
	}
	next := g.next[0]
	g.pop()
	g.mu.Unlock()
	go g.sync(next, dir, syncDir)
}
