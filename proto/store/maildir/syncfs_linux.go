package maildir

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// syncFS makes everything on dir's file system durable (syncfs(2)): the
// way to make an entry durable in a directory this process may not open.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

// fileSystemSync returns a syncfs(2) of dir's file system for the group
// commit, or nil where the store must fsync each file instead. It trusts
// syncfs only where it is a full sync that reports errors: Linux 5.8 or
// later (before, syncfs returned 0 whatever write-back failed) on a
// local file system whose sync_fs commits its journal (ext2/3/4, XFS,
// btrfs) or that keeps nothing anyway (tmpfs). On FUSE, NFS and the rest
// it may be partial or a no-op: the kernel sends no syncfs to an ordinary
// FUSE server.
//
// The descriptor stays open for the store's life: syncfs reports a
// write-back error to each descriptor opened before it happened, so one
// opened before the store's first write sees all of them.
func fileSystemSync(dir string) func() error {
	if !kernelAtLeast(5, 8) {
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || !syncfsTrusted(int64(st.Type)) {
		unix.Close(fd)
		return nil
	}
	d := os.NewFile(uintptr(fd), dir) // closed with the store, by its finalizer
	return func() error {
		err := unix.Syncfs(int(d.Fd()))
		if err != nil {
			return &os.PathError{Op: "syncfs", Path: d.Name(), Err: err}
		}
		return nil
	}
}

// syncfsTrusted reports whether statfs's f_type names a file system
// whose syncfs the group commit may rely on (see fileSystemSync).
func syncfsTrusted(fsType int64) bool {
	switch fsType {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC:
		return true
	}
	return false
}

// kernelAtLeast reports whether the running kernel's release is at
// least major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return releaseAtLeast(unix.ByteSliceToString(u.Release[:]), major, minor)
}

// releaseAtLeast reports whether a kernel release ("6.1.0-13-amd64")
// is at least major.minor; false when it cannot tell.
func releaseAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	leading := func(s string) (int, error) {
		end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(s)
		}
		return strconv.Atoi(s[:end])
	}
	ma, err1 := leading(parts[0])
	mi, err2 := leading(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
