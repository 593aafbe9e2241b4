package maildir

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
)

// put writes a file into dir/sub with the given mtime.
func put(t *testing.T, dir, sub, name, content string, mtime time.Time) string {
	t.Helper()
	p := filepath.Join(dir, sub, name)
	if err := os.WriteFile(p, []byte(content), 0600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

func newMaildir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestScanSelectsOrdersAndParses(t *testing.T) {
	dir := newMaildir(t)
	base := time.Now().Add(-time.Hour)
	put(t, dir, "new", "b", "Return-Path: <a@x.test>\nDelivered-To: ppp-bob@y.test\nSubject: 2\n\nbody2\n", base.Add(2*time.Second))
	put(t, dir, "cur", "a:2,S", "Return-Path: <>\nDelivered-To: ppp-alice@y.test\nSubject: 1\n\nbody1\n", base)
	put(t, dir, "new", "other", "Return-Path: <a@x.test>\nDelivered-To: alice@y.test\n\nnot ours\n", base)
	put(t, dir, "new", ".hidden", "Return-Path: <a@x.test>\nDelivered-To: ppp-c@y.test\n\n", base)
	put(t, dir, "new", "badrp", "Return-Path: a@x.test\nDelivered-To: ppp-d@y.test\n\nx\n", base.Add(time.Second))
	put(t, dir, "new", "trunc", "Return-Path: <a@x.test>\nDelivered-To: ppp-e@y", base.Add(3*time.Second))
	// Written this very second: serialmail would skip it, we do not.
	put(t, dir, "new", "now", "Return-Path: <n@x.test>\nDelivered-To: ppp-now@y.test\n\nnow\n", time.Now())

	res, err := Scan(dir, ScanOptions{Prefix: "ppp-"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range res.Entries {
		names = append(names, e.Name)
	}
	want := []string{"cur/a:2,S", "new/b", "new/now"}
	if len(names) != len(want) {
		t.Fatalf("entries %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %v, want %v", names, want)
		}
	}
	a := res.Entries[0]
	if a.Sender != "" || a.Recipient != "alice@y.test" {
		t.Errorf("envelope %q -> %q", a.Sender, a.Recipient)
	}
	r, f, err := a.OpenMessage()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r)
	f.Close()
	if string(body) != "Subject: 1\n\nbody1\n" || int64(len(body)) != a.MessageSize() {
		t.Errorf("message %q (size %d)", body, a.MessageSize())
	}
	if len(res.Skipped) != 1 || res.Skipped[0] != "new/other" {
		t.Errorf("skipped %v", res.Skipped)
	}
	if len(res.Malformed) != 2 || res.Malformed[0].Name != "new/badrp" || res.Malformed[1].Name != "new/trunc" {
		t.Errorf("malformed %v", res.Malformed)
	}
	// Nothing was touched.
	for _, n := range []string{"new/other", "new/badrp", "new/trunc", "new/.hidden"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}

func TestScanEmptyPrefixSelectsAll(t *testing.T) {
	dir := newMaildir(t)
	put(t, dir, "new", "x", "Return-Path: <s@x>\nDelivered-To: r@y\n\n", time.Now())
	res, err := Scan(dir, ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != 1 || res.Entries[0].Recipient != "r@y" || res.Entries[0].Sender != "s@x" {
		t.Fatalf("%+v", res)
	}
}

func TestScanRemovesStaleTmp(t *testing.T) {
	dir := newMaildir(t)
	now := time.Now()
	put(t, dir, "tmp", "old", "x", now.Add(-37*time.Hour))
	put(t, dir, "tmp", "young", "x", now.Add(-35*time.Hour))
	res, err := Scan(dir, ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TmpRemoved) != 1 || res.TmpRemoved[0] != "tmp/old" {
		t.Errorf("removed %v", res.TmpRemoved)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "old")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tmp/old still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "young")); err != nil {
		t.Errorf("tmp/young removed: %v", err)
	}
}

func TestScanMissingDirFails(t *testing.T) {
	if _, err := Scan(filepath.Join(t.TempDir(), "nope"), ScanOptions{}); err == nil {
		t.Fatal("scan of a missing maildir succeeded")
	}
}

func TestGroupEntries(t *testing.T) {
	dir := newMaildir(t)
	base := time.Now().Add(-time.Minute)
	msg := "Subject: hi\n\nsame body\n"
	put(t, dir, "new", "1", "Return-Path: <s@x>\nDelivered-To: p-a@y\n"+msg, base)
	put(t, dir, "new", "2", "Return-Path: <s@x>\nDelivered-To: p-bb@y\n"+msg, base.Add(time.Second))
	put(t, dir, "new", "3", "Return-Path: <t@x>\nDelivered-To: p-c@y\n"+msg, base.Add(2*time.Second))                       // other sender
	put(t, dir, "new", "4", "Return-Path: <s@x>\nDelivered-To: p-d@y\nSubject: hX\n\nsame body\n", base.Add(3*time.Second)) // same size, other bytes
	put(t, dir, "new", "5", "Return-Path: <s@x>\nDelivered-To: p-e@y\n"+msg, base.Add(4*time.Second))
	res, err := Scan(dir, ScanOptions{Prefix: "p-"})
	if err != nil {
		t.Fatal(err)
	}
	groups := GroupEntries(res.Entries)
	var got [][]string
	for _, g := range groups {
		got = append(got, g.Recipients())
	}
	want := [][]string{{"a@y", "bb@y", "e@y"}, {"c@y"}, {"d@y"}}
	if len(got) != len(want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("groups %v, want %v", got, want)
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("groups %v, want %v", got, want)
			}
		}
	}
	if !groups[0].ModTime().Equal(res.Entries[0].ModTime) {
		t.Errorf("group mtime %v", groups[0].ModTime())
	}
}

func TestTryLock(t *testing.T) {
	dir := newMaildir(t)
	l, err := TryLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLock(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := TryLock(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

// FuzzScanEnvelope: whatever a queued file holds, the scan either
// selects it with a sane envelope (the file starts with exactly the lines
// it reports, and the addresses pass the entry checks), reports it
// malformed, or leaves it alone. It fuzzes the parser on a bytes.Reader,
// as Scan calls it on an open file, so it runs hundreds of thousands of
// inputs a minute; the tests above cover the files themselves.
func FuzzScanEnvelope(f *testing.F) {
	for _, s := range []string{
		"Return-Path: <a@b>\nDelivered-To: p-c@d\n\nbody\n",
		"Return-Path: <>\nDelivered-To: p-x\n",
		"Return-Path: <a@b\nDelivered-To: p-c@d\n",
		"Return-Path: <a@b>\nDelivered-To: other\n",
		"Return-Path: <a@b>\n",
		"",
		"\n\n",
		"Return-Path: <<>>\nDelivered-To: p-\n",
		"Return-Path: <a\rb>\nDelivered-To: p-c\n",
		"Return-Path: <a>\nDelivered-To: p-c\x00d\n",
		"Return-Path: <" + strings.Repeat("a", maxHeaderLine) + ">\nDelivered-To: p-c\n",
	} {
		f.Add([]byte(s))
	}
	buf := make([]byte, headSize)
	f.Fuzz(func(t *testing.T, content []byte) {
		env, err := parseEnvelope(content[:min(len(content), len(buf))], "p-")
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a reason")
			}
			return
		}
		if env.offset > int64(len(content)) {
			t.Fatalf("offset %d beyond size %d", env.offset, len(content))
		}
		if string(content[:env.offset]) != "Return-Path: <"+env.sender+">\nDelivered-To: p-"+env.recipient+"\n" {
			t.Fatalf("envelope %q %q does not match the file", env.sender, env.recipient)
		}
		if proto.CheckSender(env.sender) != nil || proto.CheckRecipient(env.recipient) != nil {
			t.Fatalf("envelope %q %q passed a file but not the address checks", env.sender, env.recipient)
		}
	})
}

// readEnvelope reads the head of the file with pread, whatever the size
// fstat gave: a file that grew or shrank since then, or one longer than
// the head, is read as far as the head or the file's end goes.
func TestReadEnvelopeSizes(t *testing.T) {
	env := "Return-Path: <s@example.test>\nDelivered-To: p-r@example.test\n"
	long := env + strings.Repeat("x", 3*headSize)
	for _, c := range []struct {
		name    string
		content string
		size    int64 // what fstat said
	}{
		{"as fstat said", env + "body\n", int64(len(env) + 5)},
		{"grew since fstat", env + "body\n", 10},
		{"shrank since fstat", env, int64(len(env) + 100)},
		{"longer than the head", long, int64(len(long))},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(path, []byte(c.content), 0600); err != nil {
				t.Fatal(err)
			}
			fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(fd)
			got, err := readEnvelope(fd, c.size, "p-", make([]byte, headSize))
			if err != nil {
				t.Fatal(err)
			}
			if got.sender != "s@example.test" || got.recipient != "r@example.test" || got.offset != int64(len(env)) {
				t.Fatalf("got %+v", got)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "short")
	os.WriteFile(path, []byte("Return-Path: <s@example.test>\nDeliv"), 0600)
	fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if _, err := readEnvelope(fd, 1000, "p-", make([]byte, headSize)); err == nil || !strings.Contains(err.Error(), "ends inside envelope line 2") {
		t.Fatalf("a file ending inside line 2: %v", err)
	}
}

// A message file reads with pread to the file's end, says io.EOF only
// there, and closes once: a second Close does nothing, a read after it
// fails.
func TestMessageFileReadAndClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m")
	if err := os.WriteFile(path, []byte("0123456789"), 0600); err != nil {
		t.Fatal(err)
	}
	f, st, err := openMessageFile(path)
	if err != nil || st.size != 10 {
		t.Fatalf("open: %v, size %d", err, st.size)
	}
	p := make([]byte, 4)
	if n, err := f.ReadAt(p, 3); n != 4 || err != nil || string(p) != "3456" {
		t.Fatalf("ReadAt(4 at 3) = %d %v %q", n, err, p[:n])
	}
	if n, err := f.ReadAt(p, 8); n != 2 || err != io.EOF || string(p[:n]) != "89" {
		t.Fatalf("ReadAt(4 at 8) = %d %v %q, want 2, io.EOF", n, err, p[:n])
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := f.ReadAt(p, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("ReadAt after Close: %v, want os.ErrClosed", err)
	}
}

// Reads racing Close never read another file through a reused
// descriptor number: each read gets the file's own bytes or
// os.ErrClosed (run with -race).
func TestMessageFileCloseRacesReads(t *testing.T) {
	dir := t.TempDir()
	mine, other := filepath.Join(dir, "mine"), filepath.Join(dir, "other")
	os.WriteFile(mine, []byte("mine"), 0600)
	os.WriteFile(other, []byte("XXXX"), 0600)
	for range 50 {
		f, _, err := openMessageFile(mine)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, 4)
				for range 200 {
					n, err := f.ReadAt(p, 0)
					if errors.Is(err, os.ErrClosed) {
						return
					}
					if string(p[:n]) != "mine" {
						t.Errorf("read %q through a closed file's descriptor", p[:n])
						return
					}
				}
			}()
		}
		f.Close()
		// Reuse the descriptor number at once.
		g, err := os.Open(other)
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		g.Close()
	}
}
