//go:build peers

package benchmarks

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// writeFile writes content to a new file in dir and returns its path.
func writeFile(b *testing.B, dir, name string, content []byte) string {
	b.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, 0600); err != nil {
		b.Fatal(err)
	}
	return p
}

// removePostfixMail removes from the shared test mailbox, as Postfix
// delivers them, the n messages carrying token (within the first 4 KB,
// where the Subject is), and fails when two minutes pass without one
// arriving before all n are there, so none lands after the benchmark. Files are removed as they
// come rather than all at the end: other tests search this mailbox by
// reading every file, and 10,000 more would slow each of their polls.
func removePostfixMail(b *testing.B, pf *testpeer.Postfix, token string, n int) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	others := map[string]bool{} // files already read that are not ours
	head := make([]byte, 4096)
	removed := 0
	for {
		for _, sub := range []string{"new", "cur"} {
			entries, _ := os.ReadDir(filepath.Join(pf.Maildir, sub))
			for _, e := range entries {
				p := filepath.Join(pf.Maildir, sub, e.Name())
				if others[p] {
					continue
				}
				f, err := os.Open(p)
				if err != nil {
					continue
				}
				k, _ := io.ReadFull(f, head)
				f.Close()
				if !bytes.Contains(head[:k], []byte(token)) {
					others[p] = true
				} else if os.Remove(p) == nil {
					removed++
					deadline = time.Now().Add(2 * time.Minute)
				}
			}
		}
		if removed >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("Postfix delivered %d messages containing %q, then none for 2m; want %d", removed, token, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
