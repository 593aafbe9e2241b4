package maildir

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"qbox/proto"
	"qbox/proto/testkit/counting"
)

// syncer is an injected fsync of new/: each call reports how many names
// new/ holds and waits until the test lets it return (with err).
type syncer struct {
	t        *testing.T
	calls    chan int     // names in new/ at each call
	ret      chan error   // what the call returns
	returned atomic.Int32 // calls that returned success
}

func newSyncer(t *testing.T) *syncer {
	return &syncer{t: t, calls: make(chan int, 100), ret: make(chan error, 100)}
}

func (y *syncer) sync(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	y.calls <- len(entries)
	if err := <-y.ret; err != nil {
		return err
	}
	if err := SyncDir(dir); err != nil {
		return err
	}
	y.returned.Add(1)
	return nil
}

// groupStore is a Store committing per file whose fsync of new/ is y,
// and whose group reports on queued each delivery that joined its queue.
func groupStore(t *testing.T, y *syncer) (*Store, chan int) {
	s := testStore(t, t.TempDir())
	s.PerFile = true
	s.syncDir = y.sync
	s.Logger = slog.New(slog.DiscardHandler)
	queued := make(chan int, 1000)
	s.group.onQueue = func(n int) { queued <- n }
	return s, queued
}

// committed is what commitAsync's Commit returned, and how many fsyncs
// of new/ had returned by then (y's; 0 without y).
type committed struct {
	replies []proto.Reply
	synced  int32
}

// commitAsync delivers a one-recipient message in a goroutine; the
// outcome arrives on the returned channel.
func commitAsync(t *testing.T, s *Store, y *syncer, i int) chan committed {
	out := make(chan committed, 1)
	go func() {
		msg := []byte(fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i))
		env := proto.Envelope{Sender: "s@example.test", Recipients: []string{fmt.Sprintf("r%d@example.test", i)}}
		d, err := s.Begin(t.Context(), testPeer, int64(len(msg)))
		if err != nil {
			out <- committed{replies: []proto.Reply{proto.Z(err.Error())}}
			return
		}
		d.Write(msg)
		r := d.Commit(t.Context(), env)
		c := committed{replies: r}
		if y != nil {
			c.synced = y.returned.Load()
		}
		out <- c
	}()
	return out
}

// No K before the fsync of new/ has returned: the fsync is called with
// the message's name in new/, and Commit returns K only after that fsync
// has returned (checked when Commit returns, so a K given early is
// caught whatever the goroutines' timing).
func TestGroupNoKBeforeDirSync(t *testing.T) {
	y := newSyncer(t)
	s, _ := groupStore(t, y)
	out := make(chan int32, 1)
	go func() {
		msg := []byte("Subject: 1\n\nbody\n")
		d, err := s.Begin(t.Context(), testPeer, int64(len(msg)))
		if err != nil {
			t.Error(err)
			out <- -1
			return
		}
		d.Write(msg)
		replies := d.Commit(t.Context(), proto.Envelope{Sender: "s@example.test", Recipients: []string{"r1@example.test"}})
		synced := y.returned.Load() // first, before anything else can run
		wantAll(t, replies, 1, proto.OK)
		out <- synced
	}()
	if n := <-y.calls; n != 1 {
		t.Fatalf("fsync of new/ with %d names in it, want 1", n)
	}
	y.ret <- nil
	if synced := <-out; synced != 1 {
		t.Fatalf("Commit returned K when %d fsyncs of new/ had returned, want 1", synced)
	}
	if n := counting.Files(t, filepath.Join(s.Dir, "new")); n != 1 {
		t.Fatalf("%d files in new/, want 1", n)
	}
}

// The group commit: deliveries that arrive while an fsync of new/ runs
// name their files and wait for it, then share the next fsync; none gets
// K before the fsync that started after its names returns. Groups hold
// at most MaxGroup messages.
func TestGroupSharesOneDirSync(t *testing.T) {
	y := newSyncer(t)
	s, queued := groupStore(t, y)
	first := commitAsync(t, s, y, 0)
	<-y.calls // the first delivery's fsync, held: it commits alone
	const more = MaxGroup + 6
	waiting := queue(t, s, y, queued, 1, more)
	y.ret <- nil
	if c := <-first; c.synced != 1 {
		t.Fatalf("first delivery: %v after %d fsyncs of new/, want 1", c.replies, c.synced)
	}
	// Every delivery names its files before it joins a group: the next
	// fsync (MaxGroup of them) and the one after (the rest) find all.
	if n := <-y.calls; n != 1+more {
		t.Fatalf("second fsync of new/ with %d names in it, want %d", n, 1+more)
	}
	y.ret <- nil
	if n := <-y.calls; n != 1+more {
		t.Fatalf("third fsync of new/ with %d names in it, want %d", n, 1+more)
	}
	y.ret <- nil
	early := releasedBySecondSync(t, waiting) // at most MaxGroup
	if early > MaxGroup {
		t.Errorf("%d deliveries released by one fsync of new/, want at most %d", early, MaxGroup)
	}
	if n := counting.Files(t, filepath.Join(s.Dir, "new")); n != 1+more {
		t.Fatalf("%d files in new/, want %d", n, 1+more)
	}
	if got := len(filesByRecipient(t, s.Dir, "s@example.test", wantReceived)); got != 1+more {
		t.Fatalf("%d distinct recipients in new/, want %d", got, 1+more)
	}
}

// A failed fsync of new/ fails every message of its group: each gets Z,
// none is left in new/; the group before it keeps its K, and the store
// goes on committing afterwards.
func TestGroupFailureFailsWholeGroup(t *testing.T) {
	y := newSyncer(t)
	s, queued := groupStore(t, y)
	first := commitAsync(t, s, y, 0)
	<-y.calls
	const more = 5
	waiting := queue(t, s, y, queued, 1, more)
	y.ret <- nil
	wantAll(t, (<-first).replies, 1, proto.OK)
	if n := <-y.calls; n != 1+more {
		t.Fatalf("second fsync of new/ with %d names in it, want %d", n, 1+more)
	}
	y.ret <- errors.New("injected fsync failure")
	for _, w := range waiting {
		wantAll(t, (<-w).replies, 1, proto.Temporary)
	}
	commitsAgain(t, s, y)
}

// Many concurrent deliveries through the real syncs, by syncfs(2) where
// this machine's file system allows it and per file: every one K, every
// file whole in new/ (run with -race: the group's hand-over between
// goroutines).
func TestGroupConcurrentDeliveries(t *testing.T) {
	t.Run("syncfs", func(t *testing.T) { concurrentDeliveries(t, false) })
	t.Run("per-file", func(t *testing.T) { concurrentDeliveries(t, true) })
}

func concurrentDeliveries(t *testing.T, perFile bool) {
	s := testStore(t, t.TempDir())
	s.PerFile = perFile
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wantAll(t, (<-commitAsync(t, s, nil, i)).replies, 1, proto.OK)
		}()
	}
	wg.Wait()
	files := filesByRecipient(t, s.Dir, "s@example.test", wantReceived)
	if len(files) != n {
		t.Fatalf("%d files in new/, want %d", len(files), n)
	}
	for i := range n {
		want := fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i)
		if got := string(files[fmt.Sprintf("r%d@example.test", i)]); got != want {
			t.Errorf("r%d: %q, want %q", i, got, want)
		}
	}
}

// fsSyncer is an injected syncfs(2): each call reports how many names
// new/ holds and returns what the test sends.
type fsSyncer struct {
	calls chan int
	ret   chan error
}

// syncfsStore is groupStore committing groups by syncfs, which is f.
func syncfsStore(t *testing.T, y *syncer) (*Store, chan int, *fsSyncer) {
	s, queued := groupStore(t, y)
	s.PerFile = false
	f := &fsSyncer{calls: make(chan int, 100), ret: make(chan error, 100)}
	s.syncFS = func() error {
		entries, err := os.ReadDir(filepath.Join(s.Dir, "new"))
		if err != nil {
			return err
		}
		f.calls <- len(entries)
		return <-f.ret
	}
	return s, queued, f
}

// queue starts n deliveries (numbered from first) while the store's
// commit is held and waits until all have joined a group.
func queue(t *testing.T, s *Store, y *syncer, queued chan int, first, n int) []chan committed {
	var waiting []chan committed
	for i := first; i < first+n; i++ {
		waiting = append(waiting, commitAsync(t, s, y, i))
	}
	for got := 0; got != n; {
		got = <-queued
	}
	return waiting
}

// releasedBySecondSync waits for every queued delivery, checks that each
// got K after the second or third fsync of new/ (the first was the lone
// delivery's), and returns how many the second released.
func releasedBySecondSync(t *testing.T, waiting []chan committed) int {
	t.Helper()
	early := 0
	for i, w := range waiting {
		c := <-w
		wantAll(t, c.replies, 1, proto.OK)
		if c.synced < 2 {
			t.Errorf("delivery %d: K after %d fsyncs of new/, want 2 or 3", i+1, c.synced)
		}
		if c.synced == 2 {
			early++
		}
	}
	return early
}

// commitsAgain checks what a failed group leaves: only the first
// delivery's file in new/, and a store that still commits (one more
// delivery, alone, gets K and is the second file).
func commitsAgain(t *testing.T, s *Store, y *syncer) {
	t.Helper()
	if n := counting.Files(t, filepath.Join(s.Dir, "new")); n != 1 {
		t.Fatalf("%d files in new/ after the failed group, want the first one only", n)
	}
	again := commitAsync(t, s, y, 99)
	<-y.calls
	y.ret <- nil
	wantAll(t, (<-again).replies, 1, proto.OK)
	if n := counting.Files(t, filepath.Join(s.Dir, "new")); n != 2 {
		t.Fatalf("%d files in new/, want 2", n)
	}
}

// Committing groups by syncfs: a lone delivery commits with its own
// fsyncs (no syncfs); the deliveries queued behind it only write their
// files, and no name of theirs is in new/ until the syncfs that covers
// their data has returned; then one fsync of new/ covers their names,
// and none gets K before it. Groups hold at most MaxGroup messages.
func TestGroupSyncFSBeforeNames(t *testing.T) {
	y := newSyncer(t)
	s, queued, f := syncfsStore(t, y)
	first := commitAsync(t, s, y, 0)
	if n := <-y.calls; n != 1 {
		t.Fatalf("lone delivery: fsync of new/ with %d names, want 1", n)
	}
	const more = MaxGroup + 6
	waiting := queue(t, s, y, queued, 1, more)
	y.ret <- nil
	if c := <-first; c.synced != 1 {
		t.Fatalf("first delivery: %v after %d fsyncs of new/, want 1", c.replies, c.synced)
	}
	for _, want := range []struct{ names, after int }{{1, 1 + MaxGroup}, {1 + MaxGroup, 1 + more}} {
		if n := <-f.calls; n != want.names {
			t.Fatalf("syncfs with %d names in new/, want %d (none of its group's)", n, want.names)
		}
		f.ret <- nil
		if n := <-y.calls; n != want.after {
			t.Fatalf("fsync of new/ with %d names, want %d", n, want.after)
		}
		y.ret <- nil
	}
	early := releasedBySecondSync(t, waiting)
	if early != MaxGroup {
		t.Errorf("%d deliveries released by the first group's fsync of new/, want %d", early, MaxGroup)
	}
	if got := len(filesByRecipient(t, s.Dir, "s@example.test", wantReceived)); got != 1+more {
		t.Fatalf("%d distinct recipients in new/, want %d", got, 1+more)
	}
}

// A failed syncfs fails its whole group: each gets Z, no name of theirs
// reaches new/ and nothing is left in tmp/; new/ is not fsync'd for
// them, and the store goes on committing afterwards.
func TestGroupSyncFSFailureFailsWholeGroup(t *testing.T) {
	y := newSyncer(t)
	s, queued, f := syncfsStore(t, y)
	first := commitAsync(t, s, y, 0)
	<-y.calls
	waiting := queue(t, s, y, queued, 1, 5)
	y.ret <- nil
	wantAll(t, (<-first).replies, 1, proto.OK)
	<-f.calls
	f.ret <- errors.New("injected syncfs failure")
	for _, w := range waiting {
		wantAll(t, (<-w).replies, 1, proto.Temporary)
	}
	if n := counting.Files(t, filepath.Join(s.Dir, "tmp")); n != 0 {
		t.Fatalf("%d files left in tmp/", n)
	}
	commitsAgain(t, s, y)
}

// syncfs reports a write-back error once, to whichever call comes
// first. So a delivery that wrote its files before a syncfs that failed
// for another group gets Z too, though its own group's syncfs succeeds:
// the pages that failed may have been its own. One that started writing
// after the failure gets K.
func TestGroupSyncFSEarlierFailureFailsLaterGroup(t *testing.T) {
	y := newSyncer(t)
	s, queued, f := syncfsStore(t, y)
	first := commitAsync(t, s, y, 0)
	<-y.calls
	// A full group, then one delivery in the group after it: all wrote
	// their files before the first group's syncfs.
	waiting := queue(t, s, y, queued, 1, MaxGroup+1)
	y.ret <- nil
	wantAll(t, (<-first).replies, 1, proto.OK)
	<-f.calls
	f.ret <- errors.New("injected write-back error")
	<-f.calls
	f.ret <- nil                // the later group's own syncfs reports nothing
	for _, w := range waiting { // which one was in the later group is the scheduler's choice
		wantAll(t, (<-w).replies, 1, proto.Temporary)
	}
	commitsAgain(t, s, y)
}

// This machine's temporary directory gets the syncfs group commit where
// its file system is one syncfs is trusted on; a FUSE or NFS one (and
// crashfs, which is FUSE) gets the per-file commit.
func TestFileSystemSyncChosen(t *testing.T) {
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	got := fileSystemSync(dir) != nil
	want := syncfsTrusted(int64(st.Type)) && kernelAtLeast(5, 8)
	if got != want {
		t.Fatalf("file system type %#x: syncfs group commit %v, want %v", st.Type, got, want)
	}
	if got {
		if err := fileSystemSync(dir)(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		release string
		want    bool
	}{{"6.18.44-fc-v1272", true}, {"5.8.0", true}, {"5.7.19", false}, {"5.10-rc1", true}, {"4.19.0", false}, {"junk", false}} {
		if got := releaseAtLeast(c.release, 5, 8); got != c.want {
			t.Errorf("releaseAtLeast(%q, 5, 8) = %v, want %v", c.release, got, c.want)
		}
	}
	if syncfsTrusted(0x65735546) { // FUSE
		t.Error("syncfs trusted on FUSE")
	}
}
