package maildir

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A maildir that less trusted users can write, flushed by root: whatever
// they plant, the bytes of a file they cannot read never leave through
// the scan or OpenMessage, and every planted thing is reported by name.

// secretFile is a file outside the maildir, shaped like a queued message
// to the planter, whose bytes must never be read through the maildir.
func secretFile(t *testing.T) (path, secret string) {
	t.Helper()
	secret = "TOP-SECRET-" + t.Name()
	path = filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(path, []byte("Return-Path: <root@x.test>\nDelivered-To: p-planter@evil.test\n\n"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, secret
}

func malformedNamed(res *ScanResult, name string) (Malformed, bool) {
	for _, m := range res.Malformed {
		if m.Name == name {
			return m, true
		}
	}
	return Malformed{}, false
}

// noSecret fails when the secret appears anywhere the scan reports.
func noSecret(t *testing.T, res *ScanResult, secret string) {
	t.Helper()
	for _, e := range res.Entries {
		if e.Recipient == "planter@evil.test" {
			t.Errorf("%s selected for the planter's recipient", e.Name)
		}
		r, f, err := e.OpenMessage()
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(r)
		f.Close()
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s reads the secret: %q", e.Name, b)
		}
	}
	for _, m := range res.Malformed {
		if strings.Contains(m.Reason, secret) {
			t.Errorf("malformed reason shows the secret: %v", m)
		}
	}
}

func TestScanReportsPlantedSymlinks(t *testing.T) {
	dir := newMaildir(t)
	secret, text := secretFile(t)
	put(t, dir, "new", "ok", "Return-Path: <a@x.test>\nDelivered-To: p-b@y.test\n\nfine\n", time.Now().Add(-time.Hour))
	for _, name := range []string{"new/link", "cur/link:2,S"} {
		if err := os.Symlink(secret, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Scan(dir, ScanOptions{Prefix: "p-"})
	if err != nil {
		t.Fatal(err)
	}
	noSecret(t, res, text)
	if len(res.Entries) != 1 || res.Entries[0].Name != "new/ok" {
		t.Errorf("entries %+v, want new/ok only", res.Entries)
	}
	for _, name := range []string{"new/link", "cur/link:2,S"} {
		m, ok := malformedNamed(res, name)
		if !ok {
			t.Errorf("planted symlink %s not reported: malformed %v, skipped %v", name, res.Malformed, res.Skipped)
			continue
		}
		if !strings.Contains(m.Reason, "symbolic link") || m.ModTime.IsZero() {
			t.Errorf("%s: reason %q, mtime %v", name, m.Reason, m.ModTime)
		}
	}
	// Reported, not removed: a person decides.
	if _, err := os.Lstat(filepath.Join(dir, "new", "link")); err != nil {
		t.Errorf("planted link removed by the scan: %v", err)
	}
}

func TestScanReportsFIFOWithoutBlocking(t *testing.T) {
	dir := newMaildir(t)
	if err := syscall.Mkfifo(filepath.Join(dir, "new", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No writer ever opens it: an open that waited for one would hang
	// the scan (and the test) for ever.
	res, err := Scan(dir, ScanOptions{Prefix: "p-"})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := malformedNamed(res, "new/fifo")
	if !ok || !strings.Contains(m.Reason, "FIFO") {
		t.Fatalf("FIFO not reported: malformed %v, entries %v", res.Malformed, res.Entries)
	}
}

// The scan saw an honest file; before the flush opens it, the planter
// replaces it with a symlink to a file only root can read. That file's
// bytes are never sent: OpenMessage refuses it, naming the file.
func TestOpenMessageRefusesFileSwappedAfterScan(t *testing.T) {
	secret, text := secretFile(t)
	swaps := map[string]func(t *testing.T, path string){
		"symlink": func(t *testing.T, path string) {
			tmp := path + ".swap"
			if err := os.Symlink(secret, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		},
		"FIFO": func(t *testing.T, path string) {
			os.Remove(path)
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"other file of the same size": func(t *testing.T, path string) {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			other := "Return-Path: <root@x.test>\nDelivered-To: p-planter@evil.test\n\n" + text
			other += strings.Repeat("x", int(st.Size())-len(other))
			tmp := path + ".swap"
			if err := os.WriteFile(tmp, []byte(other), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		},
		"same file, envelope rewritten": func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Same length, other recipient: the scan's envelope is no
			// longer the file's.
			if _, err := f.WriteAt([]byte("Return-Path: <a@x.test>\nDelivered-To: p-X@evil.test\n"), 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
		},
	}
	for name, swap := range swaps {
		t.Run(name, func(t *testing.T) {
			dir := newMaildir(t)
			body := "Subject: honest\n\n" + strings.Repeat("honest mail\n", 20)
			put(t, dir, "new", "m", "Return-Path: <a@x.test>\nDelivered-To: p-b@y.test\n"+body, time.Now().Add(-time.Minute))
			res, err := Scan(dir, ScanOptions{Prefix: "p-"})
			if err != nil || len(res.Entries) != 1 {
				t.Fatalf("scan: %v %+v", err, res)
			}
			e := res.Entries[0]
			swap(t, e.Path)
			r, f, err := e.OpenMessage()
			if err == nil {
				b, _ := io.ReadAll(r)
				f.Close()
				t.Fatalf("OpenMessage opened the replaced file: %q", b)
			}
			var m Malformed
			if !errors.As(err, &m) || m.Name != "new/m" || !strings.Contains(err.Error(), "new/m") {
				t.Fatalf("error %v (%T), want a Malformed naming new/m", err, err)
			}
			if strings.Contains(err.Error(), text) {
				t.Fatalf("error shows the secret: %v", err)
			}
			if !m.ModTime.Equal(e.ModTime) {
				t.Errorf("malformed mtime %v, want the scanned %v", m.ModTime, e.ModTime)
			}
			// Grouping reads through OpenMessage too: it never merges
			// or reads the replaced file.
			for _, g := range GroupEntries(res.Entries) {
				if len(g.Entries) != 1 {
					t.Errorf("group %+v", g)
				}
			}
		})
	}
}

// An entry not made by Scan has no identity to check: it is not opened.
func TestOpenMessageNeedsScannedEntry(t *testing.T) {
	dir := newMaildir(t)
	p := put(t, dir, "new", "m", "Return-Path: <a@x.test>\nDelivered-To: b@y.test\n\nx\n", time.Now())
	e := Entry{Path: p, Name: "new/m", Sender: "a@x.test", Recipient: "b@y.test", Size: 50, Offset: 48}
	if _, _, err := e.OpenMessage(); err == nil {
		t.Fatal("opened an entry the scan never saw")
	}
}

func TestScanRefusesSymlinkedSubdir(t *testing.T) {
	dir := newMaildir(t)
	elsewhere := newMaildir(t)
	put(t, elsewhere, "new", "m", "Return-Path: <root@x.test>\nDelivered-To: p-planter@evil.test\n\nsecret\n", time.Now())
	os.Remove(filepath.Join(dir, "new"))
	if err := os.Symlink(filepath.Join(elsewhere, "new"), filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	res, err := Scan(dir, ScanOptions{Prefix: "p-"})
	if err == nil {
		t.Fatalf("scanned through a symlinked new/: %+v", res)
	}
	if !strings.Contains(err.Error(), "new") {
		t.Errorf("error %q does not name new/", err)
	}
}

// Nothing silently stuck: every file in new/ or cur/ that will never be
// sent is reported by name, with its mtime for --lifetime. Only a file
// whose line 2 is another prefix's Delivered-To is left alone unreported.
func TestScanReportsUnsendableFiles(t *testing.T) {
	dir := newMaildir(t)
	mtime := time.Now().Add(-20 * 24 * time.Hour).Truncate(time.Second)
	long := strings.Repeat("a", maxHeaderLine-len("Return-Path: <>")+1) // the line is 4,097 bytes
	files := map[string]string{
		"long-return-path":   "Return-Path: <" + long + ">\nDelivered-To: p-b@y.test\n\nx\n",
		"long-delivered-to":  "Return-Path: <a@x.test>\nDelivered-To: p-" + strings.Repeat("b", maxHeaderLine) + "\n\nx\n",
		"no-envelope":        "Subject: hello\n\nno envelope lines\n",
		"empty":              "",
		"truncated":          "Return-Path: <a@x.test>\nDelivered-To: p-b@y",
		"cr-in-sender":       "Return-Path: <a@x.test\r>\nDelivered-To: p-b@y.test\n\nx\n",
		"nul-in-sender":      "Return-Path: <a\x00@x.test>\nDelivered-To: p-b@y.test\n\nx\n",
		"cr-in-recipient":    "Return-Path: <a@x.test>\nDelivered-To: p-b@y.test\r\n\nx\n",
		"nul-in-recipient":   "Return-Path: <a@x.test>\nDelivered-To: p-b\x00@y.test\n\nx\n",
		"empty-recipient":    "Return-Path: <a@x.test>\nDelivered-To: p-\n\nx\n",
		"line2-not-envelope": "Return-Path: <a@x.test>\nSubject: x\n\nx\n",
	}
	if len("Return-Path: <"+long+">") != maxHeaderLine+1 {
		t.Fatal("test: the long line is not 4,097 bytes")
	}
	for name, content := range files {
		put(t, dir, "new", name, content, mtime)
	}
	put(t, dir, "cur", "foreign", "Return-Path: <a@x.test>\nDelivered-To: q-b@y.test\n\nx\n", mtime)
	for run := 1; run <= 2; run++ {
		res, err := Scan(dir, ScanOptions{Prefix: "p-"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Entries) != 0 {
			t.Errorf("run %d: selected %+v", run, res.Entries)
		}
		for name := range files {
			m, ok := malformedNamed(res, "new/"+name)
			if !ok {
				t.Errorf("run %d: new/%s not reported (skipped: %v)", run, name, res.Skipped)
				continue
			}
			if !m.ModTime.Equal(mtime) || m.Size != int64(len(files[name])) || m.Path != filepath.Join(dir, "new", name) {
				t.Errorf("run %d: %s: mtime %v size %d path %s, want %v %d", run, name, m.ModTime, m.Size, m.Path, mtime, len(files[name]))
			}
		}
		if len(res.Skipped) != 1 || res.Skipped[0] != "cur/foreign" {
			t.Errorf("run %d: skipped %v, want cur/foreign", run, res.Skipped)
		}
	}
	// With no prefix the empty recipient is empty too.
	dir2 := newMaildir(t)
	put(t, dir2, "new", "e", "Return-Path: <a@x.test>\nDelivered-To: \n\nx\n", mtime)
	res, err := Scan(dir2, ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := malformedNamed(res, "new/e"); !ok || len(res.Entries) != 0 {
		t.Errorf("empty Delivered-To: entries %+v, malformed %v", res.Entries, res.Malformed)
	}
}

// A malformed regular file can be read whole (to report it before it
// expires); a planted symlink or FIFO, or a file replaced since the scan,
// cannot.
func TestMalformedOpen(t *testing.T) {
	dir := newMaildir(t)
	secret, text := secretFile(t)
	content := "Subject: no envelope\n\nbody\n"
	put(t, dir, "new", "plain", content, time.Now())
	put(t, dir, "new", "swapped", "no envelope either\n", time.Now())
	if err := os.Symlink(secret, filepath.Join(dir, "new", "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "new", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Scan(dir, ScanOptions{Prefix: "p-"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "new", "link"), filepath.Join(dir, "new", "swapped")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"new/plain", "new/swapped", "new/link", "new/fifo"} {
		m, ok := malformedNamed(res, name)
		if !ok {
			t.Fatalf("%s not reported", name)
		}
		r, f, err := m.Open()
		if name == "new/plain" {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			b, _ := io.ReadAll(r)
			f.Close()
			if string(b) != content {
				t.Errorf("%s read %q", name, b)
			}
			continue
		}
		if err == nil {
			b, _ := io.ReadAll(r)
			f.Close()
			t.Errorf("%s opened: %q", name, b)
		} else if strings.Contains(err.Error(), text) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

// A tmp/ replaced by a symlink to a directory of root's: the stale-file
// clean-up of a root flush does not follow it and delete root's old files.
func TestScanDoesNotCleanThroughSymlinkedTmp(t *testing.T) {
	dir := newMaildir(t)
	victim := t.TempDir()
	old := time.Now().Add(-40 * 24 * time.Hour)
	put(t, victim, "", "precious", "root's old file\n", old)
	os.Remove(filepath.Join(dir, "tmp"))
	if err := os.Symlink(victim, filepath.Join(dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	res, err := Scan(dir, ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(victim, "precious")); err != nil {
		t.Fatalf("the scan deleted a file through the tmp/ symlink (removed %v): %v", res.TmpRemoved, err)
	}
}

// After a K the flush removes the file. If new/ has meanwhile become a
// symlink to /etc (say), removing "new/passwd" must not remove
// /etc/passwd: Entry.Remove unlinks only the file the scan saw.
func TestEntryRemoveOnlyTheScannedFile(t *testing.T) {
	dir := newMaildir(t)
	put(t, dir, "new", "passwd", "Return-Path: <a@x.test>\nDelivered-To: p-b@y.test\n\nx\n", time.Now())
	put(t, dir, "new", "plain", "Return-Path: <a@x.test>\nDelivered-To: p-c@y.test\n\nx\n", time.Now())
	put(t, dir, "new", "other", "Return-Path: <a@x.test>\nDelivered-To: p-d@y.test\n\nx\n", time.Now())
	secret, _ := secretFile(t)
	if err := os.Symlink(secret, filepath.Join(dir, "new", "link")); err != nil {
		t.Fatal(err)
	}
	res, err := Scan(dir, ScanOptions{Prefix: "p-"})
	if err != nil || len(res.Entries) != 3 {
		t.Fatalf("scan: %v %+v", err, res)
	}
	byName := map[string]*Entry{}
	for i := range res.Entries {
		byName[res.Entries[i].Name] = &res.Entries[i]
	}

	// An ordinary removal.
	if err := byName["new/plain"].Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "new", "plain")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("new/plain still there: %v", err)
	}
	if err := byName["new/plain"].Remove(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second removal: %v, want ErrNotExist", err)
	}

	// The name now holds another file: not removed.
	if err := os.Rename(filepath.Join(dir, "new", "other"), filepath.Join(dir, "new", "moved")); err != nil {
		t.Fatal(err)
	}
	put(t, dir, "new", "other", "someone else's\n", time.Now())
	if err := byName["new/other"].Remove(); err == nil {
		t.Error("removed a file put under the scanned name")
	}
	if _, err := os.Stat(filepath.Join(dir, "new", "other")); err != nil {
		t.Errorf("new/other: %v", err)
	}

	// new/ itself is now a symlink to a directory with a file of that name.
	etc := t.TempDir()
	put(t, etc, "", "passwd", "root:x:0:0\n", time.Now())
	if err := os.Rename(filepath.Join(dir, "new"), filepath.Join(dir, "new.moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(etc, filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	if err := byName["new/passwd"].Remove(); err == nil {
		t.Error("Remove followed the new/ symlink")
	}
	if _, err := os.Stat(filepath.Join(etc, "passwd")); err != nil {
		t.Fatalf("the file behind the new/ symlink was removed: %v", err)
	}
	os.Remove(filepath.Join(dir, "new"))
	if err := os.Rename(filepath.Join(dir, "new.moved"), filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}

	// A malformed symlink is removed as a link; its target stays.
	m, ok := malformedNamed(res, "new/link")
	if !ok {
		t.Fatal("new/link not reported")
	}
	if err := m.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "new", "link")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new/link still there: %v", err)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("the symlink's target was removed: %v", err)
	}
}
