// Package counting holds the counting helpers that tests of several
// packages share: files in a directory, and a wait for a counter that
// another goroutine raises.
package counting

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// Files returns how many entries dir holds, failing the test when it
// cannot be read (a missing dir too: a count of a directory that is not
// there would pass silently).
func Files(t testing.TB, dir string) int {
	t.Helper()
	names, err := readNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// FilesOrNone is Files for a directory that may not exist yet (a program
// under test creates it): a missing dir holds none.
func FilesOrNone(t testing.TB, dir string) int {
	t.Helper()
	names, err := readNames(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// readNames reads the names only: no Lstat per entry, so a directory of
// many files counts quickly.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// Guard bounds WaitAtLeast: a guard for a busy machine, not a measure.
const Guard = 20 * time.Second

// WaitAtLeast waits until n reaches want and reports whether it did
// within Guard. n is raised by a server's handler in another goroutine;
// it offers no event, so this polls every 10ms.
func WaitAtLeast(n *atomic.Int32, want int32) bool {
	deadline := time.Now().Add(Guard)
	for n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return n.Load() >= want
}

// WaitExactly waits, as WaitAtLeast, until n reaches want, then fails the
// test unless it is exactly want (a counter raised past it counted
// something that should not have happened); what names the count.
func WaitExactly(t testing.TB, n *atomic.Int32, want int32, what string) {
	t.Helper()
	WaitAtLeast(n, want)
	if got := n.Load(); got != want {
		t.Fatalf("%d %s, want %d", got, what, want)
	}
}
