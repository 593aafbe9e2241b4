package maildir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLinkBatch(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	b := newFileBatch(dir)
	if _, ok := b.(*linkBatch); !ok {
		t.Fatalf("newFileBatch on %s gave %T; this file system has O_TMPFILE", dir, b)
	}
	for _, s := range []string{"one", "two"} {
		f, err := b.Create()
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
	}
	// Nothing is visible before Commit.
	if n, _ := os.ReadDir(filepath.Join(dir, "new")); len(n) != 0 {
		t.Fatalf("%d names in new/ before Commit", len(n))
	}
	paths, err := b.Commit()
	if err != nil || len(paths) != 2 {
		t.Fatalf("Commit = %v, %v", paths, err)
	}
	for i, want := range []string{"one", "two"} {
		if got, _ := os.ReadFile(paths[i]); string(got) != want {
			t.Errorf("%s = %q, want %q", paths[i], got, want)
		}
	}
	if _, err := b.Commit(); err == nil {
		t.Error("second Commit succeeded")
	}
	// Abort leaves no name anywhere.
	b = newFileBatch(dir)
	f, _ := b.Create()
	f.WriteString("gone")
	b.Abort()
	for _, sub := range []string{"new", "tmp"} {
		entries, _ := os.ReadDir(filepath.Join(dir, sub))
		if sub == "new" && len(entries) != 2 || sub == "tmp" && len(entries) != 0 {
			t.Errorf("%s/ holds %d entries after Abort", sub, len(entries))
		}
	}
}
