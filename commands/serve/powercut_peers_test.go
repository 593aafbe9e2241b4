//go:build peers && linux

package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/crashfs"
	"qbox/proto/testkit/testpeer"
)

// crashAll, from `make crashtest`, cuts at every recorded operation
// instead of at every sync and a sample of the rest.
var crashAll = os.Getenv("QBOX_CRASH_ALL") != ""

// delivered is one file a K or 250 promised: a message (named by its
// token, see crashMessage) for one recipient.
type delivered struct{ token, rcpt string }

// ackLog notes, for every promised file, the number of file system
// operations recorded when the client read the reply: every operation
// serve finished before replying is counted, so a power cut at or after
// that point must keep the file.
type ackLog struct {
	mu   sync.Mutex
	fsys *crashfs.FS
	at   map[delivered]int
	sent map[delivered]bool // every file a client asked for, K or not
	msgs map[string][]byte  // token -> message, for the checks
}

// message is crashMessage(token), made once.
func (a *ackLog) message(token string) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, ok := a.msgs[token]
	if !ok {
		m = crashMessage(token)
		a.msgs[token] = m
	}
	return m
}

func (a *ackLog) send(token string, rcpts []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range rcpts {
		a.sent[delivered{token, r}] = true
	}
}

func (a *ackLog) ack(token, rcpt string) {
	n := a.fsys.Ops() // first: the reply is already read
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at[delivered{token, rcpt}] = n
}

// crashRcpts are the recipients of a message: token.0@... to token.n-1@...
func crashRcpts(token string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s.%d@example.test", token, i)
	}
	return out
}

// tokenOf is the token of a recipient made by crashRcpts.
func tokenOf(rcpt string) string {
	local, _, _ := strings.Cut(rcpt, "@")
	if i := strings.LastIndexByte(local, '.'); i > 0 {
		return local[:i]
	}
	return local
}

// TestPowerCutKeepsEveryK runs qbox serve into a maildir it creates on a
// crash file system while clients send over QMQP (one message per connection),
// pipelined QMTP (one session of many packages) and SMTP (one session),
// messages from 100 bytes to 90 KB (the large ones spill to a spool file)
// to 1 to 6 recipients (more than maildir.MaxOpenFiles parks files in
// tmp/). Then, for every cut at a sync (every operation under `make
// crashtest`) and a sample of the others, under each model of
// crashfs.Models: every file whose K or 250 the client had read is in
// new/, byte-exact; every file in new/ is whole and there once. A few of
// the crashed images are then handed to a fresh serve, which must store
// into them as before.
func TestPowerCutKeepsEveryK(t *testing.T) {
	// serve creates the maildir itself, on the crash file system.
	fsys := crashfs.Mount(t, t.TempDir())
	s := startServe(t, "--maildir", filepath.Join(fsys.Dir, "Maildir"), "--smtp", "127.0.0.1:0")
	acks := &ackLog{fsys: fsys, at: map[delivered]int{}, sent: map[delivered]bool{}, msgs: map[string][]byte{}}
	const perProto = 8
	rcptCount := func(i int) int { return []int{1, 2, 1, 6, 1, 3, 1, 1}[i%8] }

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(3)
	go func() { // QMQP
		defer wg.Done()
		c := &qmqp.Client{Servers: []string{s.qmqp}, Timeout: time.Minute}
		for i := range perProto {
			token := fmt.Sprintf("pc-qmqp-%d-%d", i, i*i%89)
			rcpts := crashRcpts(token, rcptCount(i))
			msg := crashMessage(token)
			acks.send(token, rcpts)
			r, err := c.Send(context.Background(), proto.Envelope{Sender: "cut@example.test", Recipients: rcpts}, bytes.NewReader(msg), int64(len(msg)))
			if err != nil || r.Status != proto.OK {
				errs <- fmt.Errorf("qmqp %s: %v %v", token, r, err)
				return
			}
			for _, rc := range rcpts {
				acks.ack(token, rc)
			}
		}
	}()
	go func() { // QMTP, every package pipelined in one session
		defer wg.Done()
		var pkgs []proto.Message
		var tokens []string
		for i := range perProto {
			token := fmt.Sprintf("pc-qmtp-%d-%d", i, i*i%83)
			msg := crashMessage(token)
			rcpts := crashRcpts(token, rcptCount(i+3))
			acks.send(token, rcpts)
			tokens = append(tokens, token)
			pkgs = append(pkgs, proto.Message{Sender: "cut@example.test", Recipients: rcpts, Size: int64(len(msg)),
				Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil }})
		}
		c := &qmtp.Client{ReadTimeout: time.Minute, WriteTimeout: time.Minute}
		_, err := c.Deliver(context.Background(), []string{s.qmtp}, pkgs, func(r proto.Result) {
			if r.FromServer && r.Reply.Status == proto.OK {
				acks.ack(tokens[r.Message], pkgs[r.Message].Recipients[r.Recipient])
			} else {
				errs <- fmt.Errorf("qmtp %s: %v", tokens[r.Message], r.Reply)
			}
		})
		if err != nil {
			errs <- fmt.Errorf("qmtp session: %v", err)
		}
	}()
	go func() { // SMTP, one session
		defer wg.Done()
		c, err := gosmtp.Dial(s.smtp)
		if err != nil {
			errs <- err
			return
		}
		defer c.Close()
		c.CommandTimeout, c.SubmissionTimeout = time.Minute, time.Minute
		for i := range perProto {
			token := fmt.Sprintf("pc-smtp-%d-%d", i, i*i%79)
			rcpts := crashRcpts(token, rcptCount(i+5))
			msg := bytes.ReplaceAll(crashMessage(token), []byte("\n"), []byte("\r\n"))
			acks.send(token, rcpts)
			if err := c.SendMail("cut@example.test", rcpts, bytes.NewReader(msg)); err != nil {
				errs <- fmt.Errorf("smtp %s: %v", token, err)
				return
			}
			for _, rc := range rcpts {
				acks.ack(token, rc)
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	l, err := fsys.Log()
	if err != nil {
		t.Fatal(err)
	}

	pts := cutPoints(l, acks.at)
	checked := 0
	err = l.Images(pts, crashfs.Models, func(k int, img *crashfs.Image) error {
		checked++
		return checkMaildirImage(img, "Maildir", k, acks)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files promised, %d operations recorded (%s); %d cut points checked under %d models (%d images)",
		len(acks.at), l.Len(), l.Summary(), len(pts), len(crashfs.Models), checked)

	// Recovery: a fresh serve stores into a crashed image (leftovers in
	// tmp/, a half-finished batch) as into a clean maildir.
	for _, k := range []int{pts[len(pts)/3], pts[2*len(pts)/3], l.Len()} {
		img, err := l.Image(k, crashfs.POSIX)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := img.WriteTo(dir); err != nil {
			t.Fatal(err)
		}
		md := filepath.Join(dir, "Maildir")
		before := counting.Files(t, filepath.Join(md, "new"))
		s2 := startServe(t, "--maildir", md)
		mustK(t, s2.qmqp, proto.Envelope{Sender: "after@example.test", Recipients: []string{"after.0@example.test"}}, crashMessage("after"))
		if got := readMaildir(t, md); len(got) != before+1 {
			t.Errorf("cut %d: %d files in new/ after one more delivery, want %d", k, len(got), before+1)
		}
	}
}

// cutPoints are the sync points, the points where a client read a
// reply, and every fifth operation (every operation with QBOX_CRASH_ALL),
// ascending.
func cutPoints(l *crashfs.Log, acks map[delivered]int) []int {
	if crashAll {
		return l.AllPoints()
	}
	set := map[int]bool{}
	for _, k := range l.SyncPoints() {
		set[k] = true
	}
	for _, k := range acks {
		set[k] = true
	}
	for k := 0; k <= l.Len(); k += 5 {
		set[k] = true
	}
	pts := make([]int, 0, len(set))
	for k := range set {
		pts = append(pts, k)
	}
	sort.Ints(pts)
	return pts
}

// checkMaildirImage checks a crashed maildir: every file in new/ is a
// whole message for a recipient a client sent to, there once; every file
// acknowledged at or before the cut k is there.
func checkMaildirImage(img *crashfs.Image, dir string, k int, acks *ackLog) error {
	return checkRelayedImage(img, dir, k, acks, 0)
}

// checkRelayedImage is checkMaildirImage for messages that passed
// through relays (other serve instances) first: each added a Received
// line of its own in front of the message.
func checkRelayedImage(img *crashfs.Image, dir string, k int, acks *ackLog, relays int) error {
	names, err := img.ReadDir(dir + "/new")
	if err != nil {
		// Not yet durable: nothing may have been acknowledged.
		for d, at := range acks.at {
			if at <= k {
				return fmt.Errorf("no %s/new/ (%v), yet the file for %s was acknowledged at operation %d", dir, err, d.rcpt, at)
			}
		}
		return nil
	}
	seen := map[delivered]string{}
	for _, name := range names {
		b, err := img.ReadFile(dir + "/new/" + name)
		if err != nil {
			return err
		}
		lines := bytes.SplitN(b, []byte("\n"), 4)
		if len(lines) != 4 || !bytes.HasPrefix(lines[0], []byte("Return-Path: <cut@example.test>")) ||
			!bytes.HasPrefix(lines[1], []byte("Delivered-To: ")) || !bytes.HasPrefix(lines[2], []byte("Received: from ")) {
			return fmt.Errorf("new/%s is torn: %d bytes, %q...", name, len(b), b[:min(len(b), 80)])
		}
		rcpt := string(lines[1][len("Delivered-To: "):])
		d := delivered{tokenOf(rcpt), rcpt}
		if !acks.sent[d] {
			return fmt.Errorf("new/%s is for %s, never sent", name, rcpt)
		}
		body := lines[3]
		for range relays {
			if !bytes.HasPrefix(body, []byte("Received: from ")) {
				return fmt.Errorf("new/%s (for %s) is torn: no relay's Received line", name, rcpt)
			}
			body = body[bytes.IndexByte(body, '\n')+1:]
		}
		if want := acks.message(d.token); !bytes.Equal(body, want) {
			return fmt.Errorf("new/%s (for %s) is torn: a message of %d bytes, want %d", name, rcpt, len(body), len(want))
		}
		if other, dup := seen[d]; dup {
			return fmt.Errorf("new/%s and new/%s are both for %s", other, name, rcpt)
		}
		seen[d] = name
	}
	for d, at := range acks.at {
		if at <= k {
			if _, ok := seen[d]; !ok {
				return fmt.Errorf("the file for %s, acknowledged at operation %d, is not in new/", d.rcpt, at)
			}
		}
	}
	return nil
}

// serve --queue-program: K only after the program exited 0. A first serve
// hands each message to qmail-qmqpc (qbox's qmail-queue), which passes it
// over QMQP to a second serve storing into a maildir on the crash file
// system; the client of the first notes the operation count at each K.
// At every cut, every K'd message is in new/, whole; nothing torn is.
func TestPowerCutQueueProgramKeepsEveryK(t *testing.T) {
	fsys := crashfs.Mount(t, t.TempDir())
	store := startServe(t, "--maildir", filepath.Join(fsys.Dir, "Maildir"))
	relay := startServeUnder(t, "QMQPSERVERS="+store.qmqp+"; export QMQPSERVERS",
		"--queue-program", testpeer.Personality(t, "qmail-qmqpc"))
	acks := &ackLog{fsys: fsys, at: map[delivered]int{}, sent: map[delivered]bool{}, msgs: map[string][]byte{}}
	c := &qmqp.Client{Servers: []string{relay.qmqp}, Timeout: time.Minute}
	for i := range 8 {
		token := fmt.Sprintf("pc-queue-%d-%d", i, i*i%73)
		rcpts := crashRcpts(token, 1+i%3)
		msg := crashMessage(token)
		acks.send(token, rcpts)
		r, err := c.Send(context.Background(), proto.Envelope{Sender: "cut@example.test", Recipients: rcpts}, bytes.NewReader(msg), int64(len(msg)))
		if err != nil || r.Status != proto.OK {
			t.Fatalf("qmqp %s: %v %v", token, r, err)
		}
		for _, rc := range rcpts {
			acks.ack(token, rc)
		}
	}
	l, err := fsys.Log()
	if err != nil {
		t.Fatal(err)
	}
	pts := cutPoints(l, acks.at)
	err = l.Images(pts, crashfs.Models, func(k int, img *crashfs.Image) error {
		return checkRelayedImage(img, "Maildir", k, acks, 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files promised, %d operations recorded (%s); %d cut points checked under %d models",
		len(acks.at), l.Len(), l.Summary(), len(pts), len(crashfs.Models))
}

// largestGroup is the most names given in one directory (link, or
// rename into it) that a single fsync of it made durable: above 1, one
// fsync of new/ covered several messages (serve's group commit).
func largestGroup(l *crashfs.Log) int {
	since := map[int]int{} // directory -> names given since its last fsync
	largest := 0
	for _, o := range l.Ops {
		switch o.Kind {
		case crashfs.OpLink:
			since[o.Dir]++
		case crashfs.OpRename:
			since[o.Dir2]++
		case crashfs.OpFsyncDir:
			largest = max(largest, since[o.Ino])
			since[o.Ino] = 0
		}
	}
	return largest
}

// The group commit under power cuts: many QMQP clients at once (one
// message per connection) and a QMTP session committing its pipelined
// packages in parallel, so that concurrent deliveries share the fsync of
// new/ (rounds go on until the record shows an fsync of new/ covering
// several messages). Then at every sync point, every reply and a sample
// of the rest (every operation under `make crashtest`), under each
// model: every file whose K the client read is in new/, whole; every file
// in new/ is whole and there once.
func TestPowerCutConcurrentGroupCommit(t *testing.T) {
	fsys := crashfs.Mount(t, t.TempDir())
	s := startServe(t, "--maildir", filepath.Join(fsys.Dir, "Maildir"))
	acks := &ackLog{fsys: fsys, at: map[delivered]int{}, sent: map[delivered]bool{}, msgs: map[string][]byte{}}
	const clients, perClient, qmtpPackages = 10, 2, 10
	rcptCount := func(i int) int { return []int{1, 1, 2, 1, 3}[i%5] }
	round := func(r int) {
		var wg sync.WaitGroup
		errs := make(chan error, clients+1)
		for g := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &qmqp.Client{Servers: []string{s.qmqp}, Timeout: time.Minute}
				for i := range perClient {
					token := fmt.Sprintf("gc-qmqp-%d-%d-%d", r, g, i)
					rcpts := crashRcpts(token, rcptCount(g+i))
					msg := acks.message(token)
					acks.send(token, rcpts)
					reply, err := c.Send(context.Background(), proto.Envelope{Sender: "cut@example.test", Recipients: rcpts}, bytes.NewReader(msg), int64(len(msg)))
					if err != nil || reply.Status != proto.OK {
						errs <- fmt.Errorf("qmqp %s: %v %v", token, reply, err)
						return
					}
					for _, rc := range rcpts {
						acks.ack(token, rc)
					}
				}
			}()
		}
		wg.Add(1)
		go func() { // QMTP: the session commits its packages in parallel
			defer wg.Done()
			var pkgs []proto.Message
			var tokens []string
			for i := range qmtpPackages {
				token := fmt.Sprintf("gc-qmtp-%d-%d", r, i)
				msg := acks.message(token)
				rcpts := crashRcpts(token, rcptCount(i))
				acks.send(token, rcpts)
				tokens = append(tokens, token)
				pkgs = append(pkgs, proto.Message{Sender: "cut@example.test", Recipients: rcpts, Size: int64(len(msg)),
					Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil }})
			}
			c := &qmtp.Client{ReadTimeout: time.Minute, WriteTimeout: time.Minute}
			_, err := c.Deliver(context.Background(), []string{s.qmtp}, pkgs, func(res proto.Result) {
				if res.FromServer && res.Reply.Status == proto.OK {
					acks.ack(tokens[res.Message], pkgs[res.Message].Recipients[res.Recipient])
				} else {
					errs <- fmt.Errorf("qmtp %s: %v", tokens[res.Message], res.Reply)
				}
			})
			if err != nil {
				errs <- fmt.Errorf("qmtp session: %v", err)
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	var l *crashfs.Log
	for r := 0; ; r++ {
		round(r)
		var err error
		if l, err = fsys.Log(); err != nil {
			t.Fatal(err)
		}
		if largestGroup(l) > 1 {
			break
		}
		if r == 9 {
			t.Fatalf("10 rounds of %d concurrent clients and no fsync of new/ covered two messages", clients+1)
		}
	}
	pts := cutPoints(l, acks.at)
	checked := 0
	err := l.Images(pts, crashfs.Models, func(k int, img *crashfs.Image) error {
		checked++
		return checkMaildirImage(img, "Maildir", k, acks)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files promised, %d operations recorded (%s); largest group %d names under one fsync; %d cut points checked under %d models (%d images)",
		len(acks.at), l.Len(), l.Summary(), largestGroup(l), len(pts), len(crashfs.Models), checked)
}
