//go:build peers

package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// needRoot fails a test that must give files to another user (or own a
// directory as root) when not run as root: make test runs as root, and a
// skipped test would report untested code as passing.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to give a directory to another user: run make test as root, as CI does")
	}
}

func TestOpenRefusesSpoolOwnedByAnotherUser(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, dir, dir, "owned by uid 65534")
}

func TestOpenRefusesSpoolInsideAnotherUsersDirectory(t *testing.T) {
	needRoot(t)
	theirs := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(theirs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(theirs, "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, dir, theirs, "owned by uid 65534")
}

// A subdirectory owned by another user (giving it away needs root).
func TestOpenRefusesSubdirectoriesOwnedByAnotherUser(t *testing.T) {
	needRoot(t)
	for _, sub := range []string{"new", "err"} {
		t.Run(sub, func(t *testing.T) {
			s := openSpool(t)
			p := filepath.Join(s.Dir, sub)
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			wantUnsafe(t, s.Dir, p, "owned by uid 65534")
		})
	}
}

// nobody is a uid that is not this process's.
const nobody = 65534
