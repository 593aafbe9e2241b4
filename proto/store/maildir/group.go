package maildir

import (
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// MaxGroup is the most messages one group commit covers: a message
// finding the next group full joins (or starts) the one after it.
const MaxGroup = 64

// group is a Store's group commit: concurrent deliveries into one maildir
// share their syncs.
//
// A delivery that finds no commit running commits alone, at once, the
// way a single delivery always has: its files fsync'd, named in new/,
// new/ fsync'd. Deliveries that arrive meanwhile queue up, and when the
// running commit returns, the queue (up to MaxGroup deliveries) is
// committed as one group, in a goroutine of its own, while the next group
// forms behind it. No timer: a lone client waits for nothing more than
// its own syncs.
//
// A group is committed in one of two ways, chosen once per Store (see
// Store.prepare):
//
//   - syncfs: the deliveries of the group only wrote their files. One
//     syncfs(2), and an fsync for the cache flush it leaves out on a file
//     system without a journal (syncThenFlush), makes the data and inodes
//     of all of them durable at once; only then
//     are their names given in new/ (so no name is ever there before its
//     data is on disk), and one fsync of new/ makes the names durable.
//     Used where syncfs(2) is known to be a full, error-reporting sync:
//     Linux 5.8 or later on ext4, XFS, btrfs (and tmpfs, which keeps
//     nothing anyway).
//   - per file, everywhere else (FUSE, NFS, older kernels): each delivery
//     fsyncs its own files and names them before it queues (concurrent
//     fsyncs join one journal commit on ext4 and XFS), and the group
//     shares the fsync of new/.
//
// Every delivery of a group is released only when the fsync of new/ that
// covers its names has returned: no K before it. If a sync fails, every
// delivery it covered removes its names again and gets the error, so Z,
// never K.
//
// Memory: a group is one small struct and its members; each member holds
// only its batch (at most MaxOpenFiles descriptors), and their number is
// bounded by the deliveries running at once, which the server bounds
// (serve's --max-conns, QMTP's Parallel per session).
type group struct {
	mu      sync.Mutex
	running bool          // a commit (alone or a group's) is running
	next    []*generation // groups not started yet, in order

	// onQueue, when set, is called (under mu) with the number of
	// deliveries waiting for a commit not yet started, each time one
	// joins a group (tests).
	onQueue func(waiting int)
}

// groupSync is how a Store's groups are made durable.
type groupSync struct {
	dir     string             // the maildir
	syncDir func(string) error // the fsync of new/
	// syncFS makes every file written so far durable (syncfs(2)) and
	// returns what it reported; nil means per-file fsyncs.
	syncFS func() error
	// failures counts syncFS's failures: a delivery whose files were
	// written before a failure that a group it was not in saw gets Z
	// (its pages may be the ones that failed, and syncfs reports a
	// write-back error once).
	failures *atomic.Uint64
}

// member is one delivery in a group.
type member struct {
	b        fileBatch
	failures uint64 // syncFS failures seen before its first file was created
	linked   bool   // its names are in new/
	paths    []string
	err      error
}

// generation is one group: the deliveries one commit covers.
type generation struct {
	members []*member
	done    chan struct{} // closed once the commit returned
}

// errEarlierWriteback is a delivery's error when a syncfs(2) that ran
// after its files were written reported a write-back error to another
// group: the failed pages may have been its own.
var errEarlierWriteback = errors.New("maildir: syncfs reported a write-back error while the message was being written")

// commit makes b, already written, durable in new/ and returns its paths
// there. failures is gs.failures' count taken before b's first file was
// created.
func (g *group) commit(b fileBatch, failures uint64, gs *groupSync) ([]string, error) {
	m := &member{b: b, failures: failures}
	if gs.syncFS == nil {
		if err := b.Sync(); err != nil {
			return nil, err
		}
		paths, err := b.Link()
		if err != nil {
			return nil, err // Link left none of its names behind
		}
		m.paths, m.linked = paths, true
	} else if err := b.Written(); err != nil {
		return nil, err
	}
	g.mu.Lock()
	if g.running {
		gen := g.join(m)
		g.mu.Unlock()
		<-gen.done
		return m.paths, m.err
	}
	g.running = true
	g.mu.Unlock()
	// Nothing runs: this delivery commits alone, at once, with its own
	// fsyncs (a syncfs would also wait for whatever else the file system
	// holds unwritten).
	if !m.linked {
		if err := b.Sync(); err != nil {
			m.err = err
		} else if m.paths, m.err = b.Link(); m.err == nil {
			m.linked = true
		}
	}
	if m.linked {
		if err := gs.syncDir(filepath.Join(gs.dir, "new")); err != nil {
			b.Unlink()
			m.paths, m.err = nil, err
		}
	}
	g.startNext(gs)
	return m.paths, m.err
}

// join adds m to the first group not yet started with room, or to a new
// one, and returns that group. Called under mu.
func (g *group) join(m *member) *generation {
	var gen *generation
	for _, x := range g.next {
		if len(x.members) < MaxGroup {
			gen = x
			break
		}
	}
	if gen == nil {
		gen = &generation{done: make(chan struct{})}
		g.next = append(g.next, gen)
	}
	gen.members = append(gen.members, m)
	if g.onQueue != nil {
		waiting := 0
		for _, x := range g.next {
			waiting += len(x.members)
		}
		g.onQueue(waiting)
	}
	return gen
}

// startNext starts the commit of the next group, in a goroutine of its
// own so the caller answers its client at once, or notes that none runs.
func (g *group) startNext(gs *groupSync) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.next) == 0 {
		g.running = false
		return
	}
	gen := g.next[0]
	n := copy(g.next, g.next[1:])
	g.next[n] = nil
	g.next = g.next[:n]
	go g.run(gen, gs)
}

// run commits gen, every member of which joined before it started: one
// syncfs for the data of those that only wrote their files, then their
// names, then one fsync of new/ for all.
func (g *group) run(gen *generation, gs *groupSync) {
	var syncErr error
	var failures uint64
	if gs.syncFS != nil {
		if syncErr = gs.syncFS(); syncErr != nil {
			gs.failures.Add(1)
		}
		failures = gs.failures.Load()
	}
	linked := 0
	for _, m := range gen.members {
		if !m.linked {
			switch {
			case syncErr != nil:
				m.err = syncErr
			case m.failures != failures:
				m.err = errEarlierWriteback
			default:
				m.paths, m.err = m.b.Link()
				m.linked = m.err == nil
			}
			if m.err != nil {
				m.b.Abort()
				continue
			}
		}
		linked++
	}
	if linked > 0 {
		if err := gs.syncDir(filepath.Join(gs.dir, "new")); err != nil {
			for _, m := range gen.members {
				if m.linked {
					m.b.Unlink()
					m.paths, m.err = nil, err
				}
			}
		}
	}
	close(gen.done)
	g.startNext(gs)
}
