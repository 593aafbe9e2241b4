package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/store/maildir"
	"qbox/proto/testkit/testpeer"
)

func openSpool(t *testing.T) *Spool {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func client(servers ...string) *qmqp.Client {
	return &qmqp.Client{Servers: servers, ConnectTimeout: 3 * time.Second, Timeout: 20 * time.Second}
}

// closedAddr is a loopback port nobody listens on: connecting is refused.
func closedAddr(t *testing.T) string {
	return testpeer.ClosedAddr(t)
}

func enqueue(t *testing.T, s *Spool, sender string, msg string, rcpts ...string) []string {
	t.Helper()
	paths, err := s.Enqueue(proto.Envelope{Sender: sender, Recipients: rcpts}, strings.NewReader(msg), int64(len(msg)), "")
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// enqueueAt queues a message submitted at when (to test expiry).
func enqueueAt(t *testing.T, s *Spool, when time.Time, sender string, msg string, rcpts ...string) []string {
	t.Helper()
	paths, err := s.EnqueueAt(proto.Envelope{Sender: sender, Recipients: rcpts}, when, strings.NewReader(msg), int64(len(msg)), "")
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// queuedRcpt is one recipient still queued (not held), in either layout.
type queuedRcpt struct {
	Name, Sender, Recipient, LastError string
	Size                               int64
}

func (q queuedRcpt) MessageSize() int64 { return q.Size }

func queued(t *testing.T, s *Spool) []queuedRcpt {
	t.Helper()
	l, err := s.Messages()
	if err != nil {
		t.Fatal(err)
	}
	var out []queuedRcpt
	for _, m := range l.Messages {
		if m.Held {
			continue
		}
		if m.Stored {
			for _, rs := range m.States {
				if rs.Code == StateDelivered || rs.Code == StateBounced {
					continue
				}
				text := rs.Text
				if text == "" {
					text = m.LastError
				}
				out = append(out, queuedRcpt{Name: m.ID, Sender: m.Sender, Recipient: rs.Recipient, LastError: text, Size: m.Size})
			}
			continue
		}
		for _, e := range m.Entries {
			text, _ := s.LastError(filepath.Base(e.Name))
			out = append(out, queuedRcpt{Name: e.Name, Sender: e.Sender, Recipient: e.Recipient, LastError: text, Size: e.MessageSize()})
		}
	}
	return out
}

// A message is stored once, whatever its recipients: one file holding
// the envelope (sender, submission time, reason it was queued,
// recipients) and the message.
func TestEnqueueLayout(t *testing.T) {
	s := openSpool(t)
	msg := "Subject: hi\n\nbody \xff 8-bit\n"
	submitted := time.Unix(1700000000, 5)
	paths, err := s.EnqueueAt(proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test", "c@example.test"}},
		submitted, strings.NewReader(msg), int64(len(msg)), "temporary failure: relay down")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 {
		t.Fatalf("%d files, want 1", len(paths))
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	want := "qbox-queue 1\nFa@example.test\nS1700000000000000005\nEtemporary failure: relay down\nTb@example.test\nTc@example.test\n\n" + msg
	if string(b) != want {
		t.Errorf("file = %q, want %q", b, want)
	}
	st, _ := os.Stat(paths[0])
	if st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", st.Mode().Perm())
	}
	for _, d := range []string{"", "new", "tmp", "cur", "err", "msg", "state"} {
		st, err := os.Stat(filepath.Join(s.Dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s/%s has mode %v: others can read the spool", s.Dir, d, st.Mode().Perm())
		}
	}
	entries := queued(t, s)
	if len(entries) != 2 || entries[0].Sender != "a@example.test" || entries[0].MessageSize() != int64(len(msg)) ||
		entries[0].LastError != "temporary failure: relay down" {
		t.Fatalf("listed %+v", entries)
	}
	l, err := s.Messages()
	if err != nil || len(l.Messages) != 1 || !l.Messages[0].Queued.Equal(submitted) {
		t.Fatalf("listing %+v %v, want one message queued at %v", l, err, submitted)
	}
}

func TestEnqueueNullSenderAndBadAddresses(t *testing.T) {
	s := openSpool(t)
	enqueue(t, s, "", "x\n", "b@example.test")
	if e := queued(t, s); len(e) != 1 || e[0].Sender != "" {
		t.Fatalf("null sender queued as %+v", e)
	}
	for _, env := range []proto.Envelope{
		{Sender: "a\n@x", Recipients: []string{"b"}},
		{Sender: "a", Recipients: []string{"b\r\nDelivered-To: evil"}},
		{Sender: "a", Recipients: []string{"b\x00"}},
		{Sender: "a"},
	} {
		if _, err := s.Enqueue(env, strings.NewReader("x\n"), 2, ""); err == nil {
			t.Errorf("Enqueue(%q) succeeded", env)
		}
	}
	if e := queued(t, s); len(e) != 1 {
		t.Fatalf("%d files queued after refused envelopes, want 1", len(e))
	}
	tmp, _ := os.ReadDir(filepath.Join(s.Dir, "tmp"))
	if len(tmp) != 0 {
		t.Fatalf("tmp/ left with %d files", len(tmp))
	}
}

func TestLocate(t *testing.T) {
	env := map[string]string{"QBOX_SPOOL": "/x/y", "HOME": "/home/u"}
	get := func(k string) string { return env[k] }
	if d, _ := Locate(get); d != "/x/y" {
		t.Errorf("with QBOX_SPOOL: %s", d)
	}
	delete(env, "QBOX_SPOOL")
	d, err := Locate(get)
	if err != nil {
		t.Fatal(err)
	}
	// Root delivers the system queue; anyone else their own spool.
	if os.Geteuid() == 0 {
		if d != filepath.Join(SystemDir, "queue") {
			t.Errorf("root: system queue not chosen: %s", d)
		}
	} else if d != "/home/u/.qbox/spool" {
		t.Errorf("fallback %s", d)
	}
}

// Server down: everything stays, each file with the reason; the first
// connection failure stops the run instead of waiting once per message.
func TestFlushServerDown(t *testing.T) {
	s := openSpool(t)
	enqueue(t, s, "a@example.test", "one\n", "x@example.test")
	enqueue(t, s, "a@example.test", "two\n", "y@example.test")
	var log bytes.Buffer
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(closedAddr(t)), Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deferred != 2 || res.Delivered != 0 || res.Remaining() != 2 {
		t.Fatalf("result %+v", res)
	}
	// The reason is logged under "err", the key every log line uses.
	if strings.Count(log.String(), "spool: deferred") != 2 || strings.Count(log.String(), " err=") != 2 {
		t.Errorf("log %q: want two deferrals with err=", log.String())
	}
	for _, e := range queued(t, s) {
		text := e.LastError
		if !strings.Contains(text, "refused") {
			t.Errorf("%s: last error %q does not say the connection was refused", e.Name, text)
		}
	}
}

func TestFlushLocked(t *testing.T) {
	s := openSpool(t)
	enqueue(t, s, "a@example.test", "x\n", "b@example.test")
	lock, err := maildir.TryLock(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	// Nothing listens there: a flush that ignored the lock would fail
	// to connect, not return ErrLocked.
	_, err = s.Flush(context.Background(), FlushConfig{Client: client(closedAddr(t))})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second flush: %v, want ErrLocked", err)
	}
	if n := len(queued(t, s)); n != 1 {
		t.Fatalf("%d files, want 1 untouched", n)
	}
}

func TestWriteListing(t *testing.T) {
	s := openSpool(t)
	var out bytes.Buffer
	if n, err := s.WriteListing(&out, time.Now()); err != nil || n != 0 || !strings.Contains(out.String(), "empty") {
		t.Fatalf("empty listing: %d %v %q", n, err, out.String())
	}
	old := time.Now().Add(-2 * time.Hour)
	if _, err := s.EnqueueAt(proto.Envelope{Sender: "from@example.test", Recipients: []string{"to@example.test"}},
		old, strings.NewReader("12345\n"), 6, "temporary failure: try later"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	n, err := s.WriteListing(&out, time.Now())
	if err != nil || n != 1 {
		t.Fatalf("listing: %d %v", n, err)
	}
	for _, want := range []string{"-Queue ID-", " from@example.test\n", " to@example.test\n", " 6 ", "(last error", "try later", "1 Request"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("listing lacks %q:\n%s", want, out.String())
		}
	}
}

// legacyEnqueue writes a message in the layout qbox used before the
// stored one (one maildir file per recipient in new/, the reason it was
// queued in err/), as mail queued before an upgrade sits in the spool.
func legacyEnqueue(t *testing.T, dir string, env proto.Envelope, msg, lastErr string) []string {
	t.Helper()
	b := maildir.NewBatch(dir)
	for _, rcpt := range env.Recipients {
		f, err := b.Create()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("Return-Path: <" + env.Sender + ">\nDelivered-To: " + rcpt + "\n" + msg); err != nil {
			t.Fatal(err)
		}
	}
	paths, err := b.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if lastErr != "" {
		os.MkdirAll(filepath.Join(dir, "err"), 0o700)
		for _, p := range paths {
			os.WriteFile(filepath.Join(dir, "err", filepath.Base(p)), []byte(lastErr+"\n"), 0o600)
		}
	}
	return paths
}

// Mail queued in the old layout before an upgrade is listed and
// delivered (grouped as before) next to stored messages.
func TestLegacyLayoutDelivered(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	legacyEnqueue(t, s.Dir, proto.Envelope{Sender: "old@example.test", Recipients: []string{"o1@example.test", "o2@example.test"}}, "Subject: old\n\nold\n", "hub down")
	enqueue(t, s, "new@example.test", "Subject: new\n\nnew\n", "n1@example.test", "n2@example.test")
	q := queued(t, s)
	if len(q) != 4 {
		t.Fatalf("%d recipients listed, want 4: %+v", len(q), q)
	}
	l, err := s.Messages()
	if err != nil || len(l.Messages) != 2 {
		t.Fatalf("%d messages listed (%v), want 2", len(l.Messages), err)
	}
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(srv.addr)})
	if err != nil || res.Delivered != 4 || res.Remaining() != 0 {
		t.Fatalf("flush: %+v %v", res, err)
	}
	got := map[string]string{}
	for _, r := range srv.messages() {
		rcpts := slices.Clone(r.env.Recipients)
		slices.Sort(rcpts) // the old layout's files come in their names' order
		got[strings.Join(rcpts, ",")] = r.msg
	}
	if len(got) != 2 || !strings.HasSuffix(got["o1@example.test,o2@example.test"], "\nold\n") || !strings.HasSuffix(got["n1@example.test,n2@example.test"], "\nnew\n") {
		t.Fatalf("server got %q", got)
	}
	if n := len(queued(t, s)); n != 0 {
		t.Fatalf("%d left", n)
	}
}
