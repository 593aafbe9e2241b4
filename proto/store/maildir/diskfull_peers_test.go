//go:build peers

package maildir

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto"
)

// mountTmpfs mounts a tmpfs of size bytes and returns its path. Needs
// root, as CI runs.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (the disk-full test needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func TestStoreDiskFull(t *testing.T) {
	fs := mountTmpfs(t, "1m")
	dir := filepath.Join(fs, "Maildir")
	s := testStore(t, dir)
	s.SpoolInMemory = 4096
	cases := []struct {
		name  string
		size  int
		rcpts int
	}{
		{"spool overflows", 2 << 20, 1},         // the spool file itself hits ENOSPC
		{"copies overflow", 300 << 10, 5},       // spool fits, the third copy does not
		{"small copies overflow", 30 << 10, 60}, // in-memory message, many recipients
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := bytes.Repeat([]byte("0123456789abcde\n"), c.size/16)
			env := proto.Envelope{Sender: "a@b"}
			for i := range c.rcpts {
				env.Recipients = append(env.Recipients, "r"+string(rune('a'+i%26))+"@x")
			}
			replies := deliver(t, s, testPeer, msg, 32<<10, env)
			wantAll(t, replies, c.rcpts, proto.Temporary)
			if !strings.Contains(replies[0].Text, "full") {
				t.Errorf("Z text %q does not say the store is full", replies[0].Text)
			}
			for _, sub := range []string{"new", "tmp"} {
				if left := dirFiles(t, filepath.Join(dir, sub)); len(left) != 0 {
					t.Fatalf("%s/ holds %d files after disk full", sub, len(left))
				}
			}
		})
	}
	// The store works again once there is room.
	wantAll(t, deliver(t, s, testPeer, []byte("small\n"), 100, proto.Envelope{Recipients: []string{"a@b"}}), 1, proto.OK)
	if n := len(dirFiles(t, filepath.Join(dir, "new"))); n != 1 {
		t.Fatalf("%d files in new/, want 1", n)
	}
}
