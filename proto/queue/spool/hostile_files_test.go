package spool

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
)

// recorder is a QMQP server stand-in that keeps what it was sent and
// says K.
type recorder struct {
	envs  []proto.Envelope
	bytes [][]byte
}

func (r *recorder) Send(_ context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	b, err := io.ReadAll(msg)
	if err != nil {
		return proto.Reply{}, err
	}
	r.envs = append(r.envs, env)
	r.bytes = append(r.bytes, b)
	return proto.Reply{Status: proto.OK, Text: "ok"}, nil
}

// Files planted into a spool, or queued files that can no longer be
// read as an envelope, are never sent, and every flush and every mailq
// names them, with their age, instead of leaving them stuck in silence.
func TestFlushReportsPlantedAndUnreadableFiles(t *testing.T) {
	s := openSpool(t)
	secret := "TOP-SECRET-" + t.Name()
	secretPath := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secretPath, []byte("Return-Path: <root@x.test>\nDelivered-To: planter@evil.test\n\n"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, "a@x.test", "Subject: good\n\ngood\n", "b@y.test")
	old := time.Now().Add(-30 * 24 * time.Hour).Truncate(time.Second)
	plant := map[string]string{
		"long-return-path": "Return-Path: <" + strings.Repeat("a", 4096-len("Return-Path: <>")+1) + ">\nDelivered-To: b@y.test\n\nx\n",
		"cr-recipient":     "Return-Path: <a@x.test>\nDelivered-To: b@y.test\r\n\nx\n",
		"nul-sender":       "Return-Path: <a\x00@x.test>\nDelivered-To: b@y.test\n\nx\n",
		"empty-recipient":  "Return-Path: <a@x.test>\nDelivered-To: \n\nx\n",
		"truncated":        "Return-Path: <a@x.test>\nDeliv",
	}
	for name, content := range plant {
		p := filepath.Join(s.Dir, "new", name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	if err := os.Symlink(secretPath, filepath.Join(s.Dir, "new", "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(s.Dir, "new", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	planted := []string{"link", "fifo"}
	for name := range plant {
		planted = append(planted, name)
	}

	for run := 1; run <= 2; run++ {
		rec := &recorder{}
		res, err := s.Flush(context.Background(), FlushConfig{Client: rec, Lifetime: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range rec.bytes {
			if bytes.Contains(b, []byte(secret)) || strings.Contains(strings.Join(rec.envs[i].Recipients, ","), "planter") {
				t.Fatalf("run %d sent the planted secret to %v: %q", run, rec.envs[i], b)
			}
		}
		if run == 1 && (len(rec.envs) != 1 || rec.envs[0].Recipients[0] != "b@y.test") {
			t.Errorf("run %d sent %v, want the good message only", run, rec.envs)
		}
		reported := map[string]bool{}
		for _, m := range res.Malformed {
			reported[filepath.Base(m.Name)] = true
			if m.ModTime.IsZero() {
				t.Errorf("run %d: %s reported without its mtime", run, m.Name)
			}
		}
		for _, name := range planted {
			if !reported[name] {
				t.Errorf("run %d: new/%s not reported: %v", run, name, res.Malformed)
			}
			if _, err := os.Lstat(filepath.Join(s.Dir, "new", name)); err != nil {
				t.Errorf("run %d: new/%s: %v", run, name, err)
			}
		}
		if res.Remaining() != len(planted) {
			t.Errorf("run %d: %d remaining, want %d", run, res.Remaining(), len(planted))
		}
	}
	var out bytes.Buffer
	if _, err := s.WriteListing(&out, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, name := range planted {
		if !strings.Contains(out.String(), "malformed new/"+name+": ") {
			t.Errorf("mailq does not name new/%s:\n%s", name, out.String())
		}
	}
	if strings.Contains(out.String(), secret) {
		t.Errorf("mailq shows the secret:\n%s", out.String())
	}
	if !strings.Contains(out.String(), " 30d0h ") {
		t.Errorf("mailq does not show how old the unreadable files are:\n%s", out.String())
	}
}

// The empty recipient is not an address: it is refused where it enters
// the spool instead of being queued as a file nobody can deliver.
func TestEnqueueRefusesEmptyRecipient(t *testing.T) {
	s := openSpool(t)
	if _, err := s.Enqueue(proto.Envelope{Sender: "a@x.test", Recipients: []string{"b@y.test", ""}}, strings.NewReader("x\n"), 2, ""); err == nil {
		t.Fatal("queued a message to the empty recipient")
	}
	if n := len(queued(t, s)); n != 0 {
		t.Fatalf("%d files queued", n)
	}
}

// An address too long for the envelope line is refused rather than
// queued as a file no flush could read back.
func TestEnqueueRefusesAddressTooLongToReadBack(t *testing.T) {
	s := openSpool(t)
	long := strings.Repeat("a", 4096) + "@y.test"
	for _, env := range []proto.Envelope{
		{Sender: long, Recipients: []string{"b@y.test"}},
		{Sender: "a@x.test", Recipients: []string{"b@y.test", long}},
	} {
		if _, err := s.Enqueue(env, strings.NewReader("x\n"), 2, ""); err == nil {
			t.Errorf("queued an address of %d bytes", len(long))
		}
	}
	res, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries)+len(res.Malformed) != 0 {
		t.Fatalf("queued %+v", res)
	}
	// The longest that fits goes in and comes back out.
	fits := strings.Repeat("a", maxAddress-len("@y.test")) + "@y.test"
	enqueue(t, s, fits, "x\n", fits)
	if e := queued(t, s); len(e) != 1 || e[0].Sender != fits || e[0].Recipient != fits {
		t.Fatalf("the longest address did not come back: %d entries", len(e))
	}
}
