package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
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

func queued(t *testing.T, s *Spool) []maildir.Entry {
	t.Helper()
	res, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	return res.Entries
}

func TestEnqueueLayout(t *testing.T) {
	s := openSpool(t)
	msg := "Subject: hi\n\nbody \xff 8-bit\n"
	paths, err := s.Enqueue(proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test", "c@example.test"}},
		strings.NewReader(msg), int64(len(msg)), "temporary failure: relay down")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 {
		t.Fatalf("%d files, want 2", len(paths))
	}
	for i, rcpt := range []string{"b@example.test", "c@example.test"} {
		b, err := os.ReadFile(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		want := "Return-Path: <a@example.test>\nDelivered-To: " + rcpt + "\n" + msg
		if string(b) != want {
			t.Errorf("file %d = %q, want %q", i, b, want)
		}
		st, _ := os.Stat(paths[i])
		if st.Mode().Perm() != 0o600 {
			t.Errorf("file mode %v, want 0600", st.Mode().Perm())
		}
		if text, _ := s.LastError(filepath.Base(paths[i])); text != "temporary failure: relay down" {
			t.Errorf("last error %q", text)
		}
	}
	for _, d := range []string{"", "new", "tmp", "cur", "err"} {
		st, err := os.Stat(filepath.Join(s.Dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s/%s has mode %v: others can read the spool", s.Dir, d, st.Mode().Perm())
		}
	}
	entries := queued(t, s)
	if len(entries) != 2 || entries[0].Sender != "a@example.test" || entries[0].MessageSize() != int64(len(msg)) {
		t.Fatalf("listed %+v", entries)
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
		text, _ := s.LastError(filepath.Base(e.Name))
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
	paths, err := s.Enqueue(proto.Envelope{Sender: "from@example.test", Recipients: []string{"to@example.test"}},
		strings.NewReader("12345\n"), 6, "temporary failure: try later")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(paths[0], old, old)
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
