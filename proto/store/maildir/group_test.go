package maildir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"qbox/proto"
)

// syncer is an injected fsync of new/: each call reports how many names
// new/ holds and waits until the test lets it return (with err).
type syncer struct {
	t     *testing.T
	calls chan int   // names in new/ at each call
	ret   chan error // what the call returns
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
	return SyncDir(dir)
}

// groupStore is a Store whose fsync of new/ is y, and whose group
// reports on queued each delivery that joined its queue.
func groupStore(t *testing.T, y *syncer) (*Store, chan int) {
	s := testStore(t, t.TempDir())
	s.syncDir = y.sync
	queued := make(chan int, 1000)
	s.group.onQueue = func(n int) { queued <- n }
	return s, queued
}

// commitAsync delivers a one-recipient message in a goroutine; its
// replies arrive on the returned channel.
func commitAsync(t *testing.T, s *Store, i int) chan []proto.Reply {
	out := make(chan []proto.Reply, 1)
	go func() {
		msg := []byte(fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i))
		env := proto.Envelope{Sender: "s@example.test", Recipients: []string{fmt.Sprintf("r%d@example.test", i)}}
		d, err := s.Begin(t.Context(), testPeer, int64(len(msg)))
		if err != nil {
			out <- []proto.Reply{proto.Z(err.Error())}
			return
		}
		d.Write(msg)
		out <- d.Commit(t.Context(), env)
	}()
	return out
}

func countNew(t *testing.T, s *Store) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// No K before the fsync of new/ has returned: while the (injected) fsync
// is held, the message's name is in new/ and its Commit has not
// returned; once it returns, K.
func TestGroupNoKBeforeDirSync(t *testing.T) {
	y := newSyncer(t)
	s, _ := groupStore(t, y)
	replies := commitAsync(t, s, 1)
	if n := <-y.calls; n != 1 {
		t.Fatalf("fsync of new/ with %d names in it, want 1", n)
	}
	select {
	case r := <-replies:
		t.Fatalf("replies %v before the fsync of new/ returned", r)
	default:
	}
	y.ret <- nil
	wantAll(t, <-replies, 1, proto.OK)
	if n := countNew(t, s); n != 1 {
		t.Fatalf("%d files in new/, want 1", n)
	}
}

// The group commit: deliveries that arrive while an fsync of new/ runs
// wait for it and then share one fsync, all of them named in new/ before
// it; none gets K before it returns. Groups hold at most MaxGroup
// messages.
func TestGroupSharesOneDirSync(t *testing.T) {
	y := newSyncer(t)
	s, queued := groupStore(t, y)
	first := commitAsync(t, s, 0)
	<-y.calls // the first delivery's fsync, held
	<-queued
	const more = MaxGroup + 6
	var waiting []chan []proto.Reply
	for i := 1; i <= more; i++ {
		waiting = append(waiting, commitAsync(t, s, i))
	}
	for n := 0; n != more; {
		n = <-queued
	}
	y.ret <- nil
	wantAll(t, <-first, 1, proto.OK)
	// The next group: MaxGroup messages linked, one fsync, no reply yet.
	if n := <-y.calls; n != 1+MaxGroup {
		t.Fatalf("second fsync of new/ with %d names in it, want %d", n, 1+MaxGroup)
	}
	for i, w := range waiting {
		select {
		case r := <-w:
			t.Fatalf("delivery %d replied %v before its fsync of new/ returned", i+1, r)
		default:
		}
	}
	y.ret <- nil
	if n := <-y.calls; n != 1+more {
		t.Fatalf("third fsync of new/ with %d names in it, want %d", n, 1+more)
	}
	y.ret <- nil
	for _, w := range waiting {
		wantAll(t, <-w, 1, proto.OK)
	}
	if n := countNew(t, s); n != 1+more {
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
	first := commitAsync(t, s, 0)
	<-y.calls
	<-queued
	const more = 5
	var waiting []chan []proto.Reply
	for i := 1; i <= more; i++ {
		waiting = append(waiting, commitAsync(t, s, i))
	}
	for n := 0; n != more; {
		n = <-queued
	}
	y.ret <- nil
	wantAll(t, <-first, 1, proto.OK)
	if n := <-y.calls; n != 1+more {
		t.Fatalf("second fsync of new/ with %d names in it, want %d", n, 1+more)
	}
	y.ret <- errors.New("injected fsync failure")
	for _, w := range waiting {
		wantAll(t, <-w, 1, proto.Temporary)
	}
	if n := countNew(t, s); n != 1 {
		t.Fatalf("%d files in new/ after the failed group, want the first one only", n)
	}
	again := commitAsync(t, s, 99)
	<-y.calls
	y.ret <- nil
	wantAll(t, <-again, 1, proto.OK)
	if n := countNew(t, s); n != 2 {
		t.Fatalf("%d files in new/, want 2", n)
	}
}

// Many concurrent deliveries through the real fsync: every one K, every
// file whole in new/ (run with -race: the group's hand-over between
// goroutines).
func TestGroupConcurrentDeliveries(t *testing.T) {
	s := testStore(t, t.TempDir())
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wantAll(t, <-commitAsync(t, s, i), 1, proto.OK)
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
