//go:build peers

package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

func systemQueue(t *testing.T) SystemQueue {
	t.Helper()
	q := SystemQueue{Root: filepath.Join(t.TempDir(), "sys")}
	if err := q.Create(); err != nil {
		t.Fatal(err)
	}
	return q
}

// A drop directory anyone could tamper with is not written into.
func TestDropRefusesUnsafeDropDir(t *testing.T) {
	needRoot(t)
	env := proto.Envelope{Sender: "a@x.test", Recipients: []string{"b@y.test"}}
	msg := strings.NewReader("x\n")
	q := systemQueue(t)
	os.Chmod(q.DropDir(), 0o733) // no sticky bit
	if _, err := Drop(q.DropDir(), env, msg, 2, ""); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "sticky") {
		t.Errorf("without the sticky bit: %v", err)
	}
	os.Chmod(q.DropDir(), 0o733|os.ModeSticky)
	os.Chown(q.DropDir(), 65534, 65534)
	if _, err := Drop(q.DropDir(), env, msg, 2, ""); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "not root") {
		t.Errorf("owned by nobody: %v", err)
	}
	link := filepath.Join(t.TempDir(), "maildrop")
	os.Symlink(q.DropDir(), link)
	if _, err := Drop(link, env, msg, 2, ""); !errors.Is(err, ErrUnsafe) {
		t.Errorf("a symlink: %v", err)
	}
	if names, _ := os.ReadDir(q.DropDir()); len(names) != 0 {
		t.Errorf("%d files written into unsafe drop directories", len(names))
	}
}

// Many long recipients travel in several drop files; PickUp queues each
// once (one file per drop, not per recipient), the message byte for byte
// behind a Received line naming the uid, and keeps the reason it was
// queued and the time it was submitted.
func TestDropAndPickUpManyRecipients(t *testing.T) {
	needRoot(t)
	q := systemQueue(t)
	var rcpts []string
	for i := 0; i < 300; i++ {
		rcpts = append(rcpts, fmt.Sprintf("%04d%s@example.test", i, strings.Repeat("r", 3900)))
	}
	msg := "Subject: many\n\nbody\x00 8bit \xff\n"
	paths, err := Drop(q.DropDir(), proto.Envelope{Sender: "s@example.test", Recipients: rcpts}, strings.NewReader(msg), int64(len(msg)), "hub down")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 2 {
		t.Errorf("%d drop files for a %d-byte envelope, want several", len(paths), 300*3920)
	}
	res, err := PickUp(q, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Picked) != len(paths) || len(res.Refused) != 0 {
		t.Fatalf("picked %d, refused %v", len(res.Picked), res.Refused)
	}
	sp := &Spool{Dir: q.QueueDir()}
	list, _, err := sp.Queued()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 300 {
		t.Fatalf("%d queued recipients, want 300", len(list))
	}
	files, _ := os.ReadDir(filepath.Join(q.QueueDir(), "msg"))
	if len(files) != len(paths) {
		t.Errorf("%d queue files for %d drop files", len(files), len(paths))
	}
	b, err := list[0].Copy()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("Received: (qbox invoked by uid %d); ", os.Geteuid())
	_, body, _ := bytes.Cut(b, []byte("\n"))
	_, body, _ = bytes.Cut(body, []byte("\n"))
	if !bytes.HasPrefix(body, []byte(want)) || !bytes.HasSuffix(body, []byte("-0000\n"+msg)) {
		t.Errorf("queued message:\n%q", body)
	}
	if text := list[0].LastError; text != "hub down" {
		t.Errorf("last error %q", text)
	}
}

// Files a user could plant as drop files are refused and removed: a bad
// address, a missing envelope, an unfinished file long abandoned. A
// drop file being written (a fresh dot file) is left alone.
func TestPickUpRefusesBadDropFiles(t *testing.T) {
	needRoot(t)
	q := systemQueue(t)
	write := func(name, content string, age time.Duration) {
		p := filepath.Join(q.DropDir(), name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		os.Chtimes(p, when, when)
	}
	write("cr-address", dropMagic+"Fa@x.test\nTb@y.test\rX: y\n\nmsg\n", 0)
	write("no-header", "Fa@x.test\nTb@y.test\n\nmsg\n", 0)
	write("no-recipient", dropMagic+"Fa@x.test\n\nmsg\n", 0)
	write("endless", dropMagic+"Fa@x.test\n"+strings.Repeat("Tb@y.test\n", maxDropEnvelope/10+1), 0)
	write(".abandoned", dropMagic+"Fa@x.test\nTb@y.test\n\nmsg\n", 48*time.Hour)
	write(".being-written", dropMagic+"Fa@x.test\n", 0)
	res, err := PickUp(q, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Picked) != 0 {
		t.Errorf("picked %+v", res.Picked)
	}
	refused := map[string]string{}
	for _, r := range res.Refused {
		refused[r.Name] = r.Reason
	}
	for _, name := range []string{"cr-address", "no-header", "no-recipient", "endless", ".abandoned"} {
		if !strings.HasSuffix(refused[name], "; removed") {
			t.Errorf("%s: %q", name, refused[name])
		}
	}
	left, _ := os.ReadDir(q.DropDir())
	if len(left) != 1 || left[0].Name() != ".being-written" {
		t.Errorf("left in the drop directory: %v", left)
	}
	if list, bad, err := (&Spool{Dir: q.QueueDir()}).Queued(); err != nil || len(list)+len(bad) != 0 {
		t.Errorf("queued: %v %v %v", list, bad, err)
	}
}

// Root's spool used to be the system queue's root itself: mail queued
// there before an upgrade moves into the queue, with its last error.
func TestAdoptLegacy(t *testing.T) {
	needRoot(t)
	q := systemQueue(t)
	if _, err := Open(q.Root); err != nil {
		t.Fatal(err)
	}
	paths := legacyEnqueue(t, q.Root, proto.Envelope{Sender: "a@x.test", Recipients: []string{"b@y.test", "c@y.test"}}, "x\n", "hub down")
	n, err := AdoptLegacy(q)
	if err != nil || n != 2 {
		t.Fatalf("AdoptLegacy: %d, %v", n, err)
	}
	sp := &Spool{Dir: q.QueueDir()}
	list, err := sp.List()
	if err != nil || len(list.Entries) != 2 {
		t.Fatalf("queue: %v %v", list, err)
	}
	if text, _ := sp.LastError(filepath.Base(paths[0])); text != "hub down" {
		t.Errorf("last error %q", text)
	}
	if _, err := os.Stat(filepath.Join(q.Root, "new")); err == nil {
		t.Errorf("the old new/ is still there")
	}
	if n, err := AdoptLegacy(q); n != 0 || err != nil {
		t.Errorf("second AdoptLegacy: %d, %v", n, err)
	}
}

// The time the user handed a message over travels in the drop and is
// kept by the pickup: the queue lists it as queued then, not when root
// picked it up; a drop of an older sendmail (no S line) counts from its
// mtime.
func TestDroppedMessageAgeSurvivesPickup(t *testing.T) {
	needRoot(t)
	q := systemQueue(t)
	before := time.Now()
	if _, err := Drop(q.DropDir(), proto.Envelope{Sender: "a@x.test", Recipients: []string{"b@y.test"}}, strings.NewReader("Subject: new\n\nx\n"), 16, ""); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	old := filepath.Join(q.DropDir(), "oldsendmail")
	if err := os.WriteFile(old, []byte(dropMagic+"Fa@x.test\nTc@y.test\n\nSubject: old\n\nx\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldTime := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	os.Chtimes(old, oldTime, oldTime)
	// The pickup runs an hour later.
	if res, err := PickUp(q, time.Now().Add(time.Hour)); err != nil || len(res.Picked) != 2 {
		t.Fatalf("pickup: %+v %v", res, err)
	}
	l, err := (&Spool{Dir: q.QueueDir()}).Messages()
	if err != nil || len(l.Messages) != 2 {
		t.Fatalf("listing %+v %v", l, err)
	}
	for _, m := range l.Messages {
		switch m.Recipients[0] {
		case "b@y.test":
			if m.Queued.Before(before) || m.Queued.After(after) {
				t.Errorf("queued %v, want the drop's time (between %v and %v)", m.Queued, before, after)
			}
		case "c@y.test":
			if !m.Queued.Equal(oldTime) {
				t.Errorf("old drop queued %v, want its mtime %v", m.Queued, oldTime)
			}
		}
	}
}
