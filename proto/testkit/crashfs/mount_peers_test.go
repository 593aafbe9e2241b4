//go:build peers && linux

package crashfs_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"qbox/proto/testkit/crashfs"
)

// The program under test runs in a child process: this test binary
// again, with CRASHFS_HELPER naming what to do in the directory given.
func TestMain(m *testing.M) {
	if what := os.Getenv("CRASHFS_HELPER"); what != "" {
		if err := helper(what, os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper stores two messages the maildir way (one through tmp/ and a
// rename, one as an O_TMPFILE linked into new/), fsyncing the files
// unless what is "nofsync", then leaves an unlinked spool file and an
// unsynced file in tmp/.
func helper(what, dir string) error {
	sync := what != "nofsync"
	f, err := os.OpenFile(filepath.Join(dir, "tmp/m"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("hello "); err != nil {
		return err
	}
	if _, err := f.WriteString("world"); err != nil {
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	f.Close()
	if err := os.Rename(filepath.Join(dir, "tmp/m"), filepath.Join(dir, "new/m")); err != nil {
		return err
	}
	if err := syncDir(filepath.Join(dir, "new")); err != nil {
		return err
	}

	fd, err := unix.Open(filepath.Join(dir, "new"), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0600)
	if err != nil {
		return fmt.Errorf("O_TMPFILE: %w", err)
	}
	t := os.NewFile(uintptr(fd), "tmpfile")
	if _, err := t.WriteString("unnamed"); err != nil {
		return err
	}
	if sync {
		if err := unix.Fdatasync(fd); err != nil {
			return err
		}
	}
	if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, filepath.Join(dir, "new/t"), unix.AT_SYMLINK_FOLLOW); err != nil {
		return fmt.Errorf("linkat: %w", err)
	}
	t.Close()
	if err := syncDir(filepath.Join(dir, "new")); err != nil {
		return err
	}

	s, err := os.OpenFile(filepath.Join(dir, "tmp/spool"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0600)
	if err != nil {
		return err
	}
	os.Remove(s.Name())
	s.WriteString("spooled")
	s.Sync()
	s.Close()
	return os.WriteFile(filepath.Join(dir, "tmp/unsynced"), []byte("x"), 0600)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func run(t *testing.T, what string) *crashfs.Log {
	t.Helper()
	backing := t.TempDir()
	for _, d := range []string{"tmp", "new"} {
		if err := os.Mkdir(filepath.Join(backing, d), 0700); err != nil {
			t.Fatal(err)
		}
	}
	fsys := crashfs.Mount(t, backing)
	cmd := exec.Command(os.Args[0], "-test.run=^$", fsys.Dir)
	cmd.Env = append(os.Environ(), "CRASHFS_HELPER="+what)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if err := fsys.Unmount(); err != nil {
		t.Fatal(err)
	}
	// The pass-through did what the program asked.
	for p, want := range map[string]string{"new/m": "hello world", "new/t": "unnamed", "tmp/unsynced": "x"} {
		if b, err := os.ReadFile(filepath.Join(backing, p)); err != nil || string(b) != want {
			t.Errorf("backing %s = %q, %v; want %q", p, b, err, want)
		}
	}
	l, err := fsys.Log()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// check is the promise of the helper: after its first fsync of new/,
// new/m is there and whole; after the second, new/t too; and nothing
// in new/ is ever partial.
func check(l *crashfs.Log) error {
	dirSyncs := 0
	next := 0
	return l.Images(l.AllPoints(), crashfs.Models, func(k int, img *crashfs.Image) error {
		for ; next < k; next++ {
			if l.Ops[next].Kind == crashfs.OpFsyncDir {
				dirSyncs++
			}
		}
		want := map[string]string{"m": "hello world", "t": "unnamed"}
		names, err := img.ReadDir("new")
		if err != nil {
			return err
		}
		for _, n := range names {
			b, _ := img.ReadFile("new/" + n)
			if string(b) != want[n] {
				return fmt.Errorf("new/%s is %q, want %q", n, b, want[n])
			}
		}
		has := map[string]bool{}
		for _, n := range names {
			has[n] = true
		}
		if dirSyncs >= 1 && !has["m"] {
			return fmt.Errorf("new/m lost after new/ was fsync'd")
		}
		if dirSyncs >= 2 && !has["t"] {
			return fmt.Errorf("new/t lost after new/ was fsync'd")
		}
		return nil
	})
}

func TestRecordsAProgram(t *testing.T) {
	l := run(t, "sync")
	kinds := map[crashfs.Kind]int{}
	for _, o := range l.Ops {
		kinds[o.Kind]++
	}
	t.Logf("%d operations: %v", l.Len(), kinds)
	for _, k := range []crashfs.Kind{crashfs.OpCreate, crashfs.OpWrite, crashfs.OpFsync, crashfs.OpRename,
		crashfs.OpFsyncDir, crashfs.OpTmpfile, crashfs.OpFdatasync, crashfs.OpLink, crashfs.OpUnlink} {
		if kinds[k] == 0 {
			t.Errorf("no %v recorded", k)
		}
	}
	if err := check(l); err != nil {
		t.Fatal(err)
	}
	// The image at the end, written out, is what the program promised.
	img, err := l.Image(l.Len(), crashfs.POSIX)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := img.WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"new/m": "hello world", "new/t": "unnamed"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != want {
			t.Errorf("image %s = %q, %v; want %q", p, b, err, want)
		}
	}
	for _, p := range []string{"tmp/unsynced", "tmp/spool", "tmp/m"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			t.Errorf("image has %s, never made durable", p)
		}
	}
}

// The same program without its file fsyncs is caught: a name in new/
// with its data lost.
func TestCatchesAMissingFsync(t *testing.T) {
	l := run(t, "nofsync")
	err := check(l)
	if err == nil {
		t.Fatal("a program that never fsyncs its files passed the crash check")
	}
	t.Logf("caught: %v", err)
}

// A process that enters a new mount namespace while the file system is
// mounted (another test's unshare -m) holds a copy of the mount, and with
// it the FUSE connection; unmounting ours must still end at once.
func TestUnmountWithACopyInAnotherNamespace(t *testing.T) {
	fsys := crashfs.Mount(t, t.TempDir())
	cmd := exec.Command("unshare", "-m", "sh", "-c", "echo ready; exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make([]byte, 6)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("unshare: %q %v", line, err)
	}
	if err := fsys.Unmount(); err != nil {
		t.Fatal(err)
	}
}
