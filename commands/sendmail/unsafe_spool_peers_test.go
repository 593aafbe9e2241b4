//go:build peers

package sendmail

import (
	"os"
	"path/filepath"
	"testing"
)

// A spool owned by another user is refused like the unsafe spools of
// TestUnsafeSpoolRefused. Giving a directory away needs root, which the
// peers run has.
func TestUnsafeSpoolOwnedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to give a directory to another user (make test runs as root)")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	checkUnsafeSpool(t, dir, dir, "owned by uid 65534")
}
