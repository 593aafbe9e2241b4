//go:build peers

package testpeer

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Nobody is the uid and gid AsNobody runs commands as.
const Nobody = 65534

// AsNobody makes cmd run as uid and gid 65534 (nobody), as an unprivileged
// user meets qbox: from a copy of its program (and a link of the same
// name, for a personality) in a directory every user may enter, since
// the test binary's own directory is 0700; in that directory unless
// cmd.Dir is set. It needs root, and fails the test without.
func AsNobody(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	RequireRoot(t, "to run a command as another user")
	dir, err := os.MkdirTemp("", "qbox-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(cmd.Path)
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, filepath.Base(real))
	copyExecutable(t, real, prog)
	if name := filepath.Base(cmd.Path); name != filepath.Base(real) {
		link := filepath.Join(dir, name)
		if err := os.Symlink(filepath.Base(real), link); err != nil {
			t.Fatal(err)
		}
		prog = link
	}
	cmd.Path = prog
	if len(cmd.Args) > 0 {
		cmd.Args[0] = prog
	}
	if cmd.Dir == "" {
		cmd.Dir = dir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody, Groups: []uint32{}}}
}

func copyExecutable(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
