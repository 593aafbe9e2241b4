//go:build peers && linux

package flush

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"qbox/proto"
	"qbox/proto/qmtp"
	"qbox/proto/store/maildir"
	"qbox/proto/testkit/crashfs"
)

// kRecorder is a QMTP backend that answers K to everything and notes, per
// recipient, the crash file system's operation count when it committed
// (just before the K is sent): the flush may remove that message's file
// only after this point.
type kRecorder struct {
	mu     sync.Mutex
	fsys   *crashfs.FS
	at     map[string]int
	resent int // messages received a second time
}

type kDelivery struct{ r *kRecorder }

func (r *kRecorder) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return kDelivery{r}, nil
}
func (d kDelivery) Write(p []byte) (int, error) { return len(p), nil }
func (d kDelivery) Abort()                      {}
func (d kDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	n := d.r.fsys.Ops()
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	for _, rc := range env.Recipients {
		if _, ok := d.r.at[rc]; ok {
			d.r.resent++
			continue
		}
		d.r.at[rc] = n
	}
	return proto.Repeat(len(env.Recipients), proto.K("ok"))
}

// flush-maildir (the real binary) empties a queue on a crash file system
// into a QMTP server. At every cut, under each model, a message missing
// from the queue was K'd before the cut: a file is removed only after its
// K, so a power cut never loses one. A message still queued that was
// already K'd will be sent again by the next run: the window the
// protocol cannot close (the K comes before the unlink, and the unlinks
// are fsync'd once per run); the test counts those images.
func TestPowerCutFlushRemovesOnlyAfterK(t *testing.T) {
	backing := t.TempDir()
	src := filepath.Join(backing, "Q")
	if err := maildir.Init(src); err != nil {
		t.Fatal(err)
	}
	msgs := fill(t, src, 30, "powercut")
	fsys := crashfs.Mount(t, backing) // the queue is the durable base

	rec := &kRecorder{fsys: fsys, at: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &qmtp.Server{Backend: rec}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", filepath.Join(fsys.Dir, "Q"), "ppp-", l.Addr().String())
	if code != 0 {
		t.Fatalf("flush-maildir exit %d\n%s\n%s", code, stdout, stderr)
	}
	if len(rec.at) != len(msgs) {
		t.Fatalf("%d of %d messages K'd", len(rec.at), len(msgs))
	}
	log, err := fsys.Log()
	if err != nil {
		t.Fatal(err)
	}
	pts := log.AllPoints()
	if os.Getenv("QBOX_CRASH_ALL") == "" {
		set := map[int]bool{}
		for _, k := range log.SyncPoints() {
			set[k] = true
		}
		for _, k := range rec.at {
			set[k] = true
		}
		for k := 0; k <= log.Len(); k += 3 {
			set[k] = true
		}
		pts = pts[:0]
		for k := range set {
			pts = append(pts, k)
		}
		sort.Ints(pts)
	}
	dupImages, maxDup := 0, 0
	err = log.Images(pts, crashfs.Models, func(k int, img *crashfs.Image) error {
		present := map[string]bool{}
		for _, sub := range []string{"Q/new", "Q/cur"} {
			names, err := img.ReadDir(sub)
			if err != nil {
				return err
			}
			for _, n := range names {
				base, _, _ := strings.Cut(n, ":")
				present[base] = true
			}
		}
		dup := 0
		for _, q := range msgs {
			at, kd := rec.at[q.rcpt]
			switch {
			case !present[q.name] && (!kd || at > k):
				return fmt.Errorf("%s (for %s) is gone from the queue, its K not sent yet (K at %d)", q.name, q.rcpt, at)
			case present[q.name] && kd && at <= k:
				dup++
			}
		}
		if dup > 0 {
			dupImages++
			maxDup = max(maxDup, dup)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages, %d operations (%s); %d cut points under %d models; %d images hold messages already K'd (at most %d), sent again by the next run",
		len(msgs), log.Len(), log.Summary(), len(pts), len(crashfs.Models), dupImages, maxDup)
}
