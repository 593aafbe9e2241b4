package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// A message to 10,000 recipients (the default --max-recipients) is stored
// by a serve that may open only 64 files: the store holds a constant
// number of files open, not one per recipient until the commit. (Before,
// 300 recipients under `ulimit -n 256` were deferred for ever.)
func TestTenThousandRecipientsUnderUlimit64(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 fsync'd files")
	}
	dir := t.TempDir()
	s := startServeUnder(t, "ulimit -n 64", "--maildir", dir)
	env := proto.Envelope{Sender: "many@example.test"}
	for i := range 10000 {
		env.Recipients = append(env.Recipients, fmt.Sprintf("r%05d@example.test", i))
	}
	// 10,000 fsync'd files take a while on a busy disk: a patient client.
	msg := []byte("Subject: to ten thousand\n\nbody\n")
	c := &qmqp.Client{Servers: []string{s.qmqp}, Timeout: 5 * time.Minute}
	r, err := c.Send(context.Background(), env, bytes.NewReader(msg), int64(len(msg)))
	if err != nil || r.Status != proto.OK {
		t.Fatalf("reply %q %v, want K", r.String(), err)
	}
	if n := counting.Files(t, filepath.Join(dir, "new")); n != 10000 {
		t.Fatalf("%d files in new/, want 10000", n)
	}
	if n := counting.Files(t, filepath.Join(dir, "tmp")); n != 0 {
		t.Fatalf("%d files left in tmp/", n)
	}
}

// --envelope-memory is the memory all sessions' envelopes share: a QMQP
// envelope beyond it gets Z and nothing is stored, QMTP recipients beyond
// it get Z and come again, and what fits is stored.
func TestEnvelopeMemoryFlag(t *testing.T) {
	dir := t.TempDir()
	// Room for three recipients of 15 bytes (each counts 128 more).
	s := startServe(t, "--maildir", dir, "--envelope-memory", strconv.Itoa(3*(15+128)))
	rcpts := []string{"r1@example.test", "r2@example.test", "r3@example.test", "r4@example.test"}
	msg := []byte("Subject: budget\n\nbody\n")
	r, err := sendQMQP(t, s.qmqp, proto.Envelope{Sender: "a@example.test", Recipients: rcpts}, msg)
	if err != nil || r.Status != proto.Temporary {
		t.Fatalf("QMQP with 4 recipients: reply %q %v, want Z", r.String(), err)
	}
	mustK(t, s.qmqp, proto.Envelope{Sender: "a@example.test", Recipients: rcpts[:3]}, msg)
	rs := qmtpRaw(t, s.qmtp, 4, qmtpPackage(msg, false, "a@example.test", rcpts...))
	if rs[0].Status != proto.OK || rs[2].Status != proto.OK || rs[3].Status != proto.Temporary {
		t.Fatalf("QMTP with 4 recipients: replies %s, want K K K Z", fmtReplies(rs))
	}
	if n := counting.Files(t, filepath.Join(dir, "new")); n != 6 {
		t.Fatalf("%d files in new/, want 6", n)
	}
}

// Point 2 of issue 25: what serve holds for its clients is bounded by its
// own numbers, never by how many clients come. 1,000 idle connections
// against --max-conns 20 (and the default waiting room, 5 x 20): serve
// runs under `ulimit -n` of exactly its bound (its own dozen descriptors,
// 2 x --max-conns + --max-waiting + 1 for clients), so one descriptor more
// would fail an accept, which it logs; it logs none, refuses the surplus
// at once, and its peak RSS stays under the documented bound. Once the
// idle clients go, a good client is served.
func TestIdleFloodWithinBounds(t *testing.T) {
	const max, waiting, clients = 20, 5 * 20, 1000
	const fixed = 16 // stdio, 3 listeners, epoll, eventfd, and spare
	bound := fixed + 2*max + waiting + 1
	dir := t.TempDir()
	s := startServeUnder(t, "ulimit -n "+strconv.Itoa(bound), "--maildir", dir, "--smtp", "127.0.0.1:0",
		"--max-conns", strconv.Itoa(max), "--timeout", "10m")
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range clients {
		addr := s.qmqp
		if i%2 == 1 {
			addr = s.smtp // the limit is shared: SMTP's idle clients count as well
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// The surplus is refused at once (the waiting ones only after their
	// 10 s): wait for the log lines of those beyond the bound.
	refused := clients - max - waiting
	if !waitLogFor(t, s, time.Minute, func(log string) bool {
		return strings.Count(log, `msg="connection refused: too many connections"`) >= refused
	}) {
		t.Fatalf("fewer than %d refusals logged:\n%s", refused, tail(s.log.String(), 3000))
	}
	if strings.Contains(s.log.String(), "accept failed") {
		t.Fatalf("serve needed more than %d descriptors:\n%s", bound, tail(s.log.String(), 3000))
	}
	rss := peakRSS(t, s.cmd.Process.Pid)
	if limit := rssBound(max, waiting); rss > limit {
		t.Fatalf("peak RSS %.1f MiB, bound %.1f MiB", rss, limit)
	}
	t.Logf("1,000 idle clients against --max-conns %d: peak RSS %.1f MiB, descriptors within %d", max, rss, bound)
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// Every connection ends in one log line: refused, or its session's.
	ended := regexp.MustCompile(`msg=("connection|connection )`)
	if !waitLogFor(t, s, time.Minute, func(log string) bool { return len(ended.FindAllStringIndex(log, -1)) >= clients }) {
		t.Fatalf("not every connection ended:\n%s", tail(s.log.String(), 3000))
	}
	mustK(t, s.qmqp, proto.Envelope{Sender: "good@example.test", Recipients: []string{"r@example.test"}},
		[]byte("Subject: after the flood\n\nserved\n"))
}

// rssBound is the peak RSS serve may reach with every slot and waiting
// place held by idle clients, as README documents it: 24 MiB, plus 16 KiB
// per connection held (measured: 11 MiB and 9 KiB).
func rssBound(max, waiting int) float64 {
	return 24 + float64(2*max+waiting)*16/1024
}

// Point 3 of issue 25, QMTP: 100 flush-maildir runs at once against
// --max-conns 20 (and its waiting room of 100): the connections beyond
// the slots wait their turn, every run delivers all its messages and
// serve refuses none.
func TestParallelFlushMaildirBurst(t *testing.T) {
	const runs, each = 100, 3
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir, "--max-conns", "20")
	bin := testpeer.Binary(t)
	srcs := make([]string, runs)
	for i := range srcs {
		srcs[i] = t.TempDir()
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.Mkdir(filepath.Join(srcs[i], sub), 0700); err != nil {
				t.Fatal(err)
			}
		}
		for j := range each {
			msg := fmt.Sprintf("Return-Path: <flush@example.test>\nDelivered-To: ppp-r%03d.%d@example.test\n"+
				"Subject: burst %d.%d\n\nbody\n", i, j, i, j)
			if err := os.WriteFile(filepath.Join(srcs[i], "new", fmt.Sprintf("1700000000.r%03d_%d.burst", i, j)), []byte(msg), 0600); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, runs)
	for _, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command(bin, "flush-maildir", src, "ppp-", s.qmtp).CombinedOutput()
			left, _ := os.ReadDir(filepath.Join(src, "new"))
			if err != nil || len(left) != 0 {
				errs <- fmt.Sprintf("%s: %v, %d left\n%s", src, err, len(left), tail(string(out), 500))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := counting.Files(t, filepath.Join(dir, "new")); n != runs*each {
		t.Fatalf("%d files stored, want %d", n, runs*each)
	}
	if strings.Contains(s.log.String(), "too many connections") {
		t.Fatalf("serve refused a connection:\n%s", tail(s.log.String(), 3000))
	}
}
